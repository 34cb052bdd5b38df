"""When a delivery goes out: quiet hours, digests, retry backoff and escalation, as pure rules.

Every rule takes the time (``now``) and, where chance is involved, a random generator: nothing
here reads the clock, so the rules are tested at their boundaries and replay is
deterministic. The dispatcher (``workers/dispatch.py``) applies them to the outbox.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from alerts.model import ChannelAddress, Level, MsgType, QuietHours, Subscription

# Backoff with "equal jitter": half the exponential step fixed, half random, so retries of
# many deliveries that failed together spread out but none comes back at once.
DEFAULT_RETRY_BASE_S = 2.0
DEFAULT_RETRY_MAX_S = 600.0  # ten minutes: a receiver back within that is retried promptly
DEFAULT_MAX_ATTEMPTS = 12  # with the defaults, about an hour of trying before giving up


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """How a new delivery starts.

    Attributes:
        held_for_digest: the delivery waits for the subscriber's next digest.
        not_before: it is not sent before this time (quiet hours); None: at once.
        reason: why it is held or deferred (None when it goes at once).
    """

    held_for_digest: bool
    not_before: datetime | None
    reason: str | None


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: times must be timezone-aware")


def _clock_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_hours_end(quiet: QuietHours, level: Level, now: datetime) -> datetime | None:
    """When the quiet hours that hold this alert end, or None when it may go now.

    Alerts at ``quiet.override_level`` or above are never held. The span may cross
    midnight (22:00-07:00); start equal to end means no quiet hours.

    Args:
        quiet: the subscriber's quiet hours (local times in ``quiet.timezone``).
        level: the alert's level.
        now: the current time (timezone-aware).

    Returns:
        The end of the current quiet span in UTC, or None.
    """
    _require_aware(now)
    if level.at_least(quiet.override_level):
        return None
    start, end = _clock_time(quiet.start), _clock_time(quiet.end)
    if start == end:
        return None
    zone = ZoneInfo(quiet.timezone)
    local = now.astimezone(zone)
    here = local.time().replace(tzinfo=None)
    crosses_midnight = start > end
    inside = (here >= start or here < end) if crosses_midnight else (start <= here < end)
    if not inside:
        return None
    end_day = local.date()
    if crosses_midnight and here >= start:
        end_day += timedelta(days=1)
    return _wall_time_instant(datetime.combine(end_day, end, tzinfo=zone), now)


def _wall_time_instant(local_end: datetime, now: datetime) -> datetime:
    """The first instant, after ``now``, at which local clocks read ``local_end``.

    Built as local wall time, so quiet hours end at 07:00 local across a DST change. A wall
    time that occurs twice (clocks going back) is the first occurrence still ahead; one that
    does not exist (clocks going forward) becomes the first instant after the gap.
    """
    first = local_end.replace(fold=0).astimezone(UTC)
    second = local_end.replace(fold=1).astimezone(UTC)
    if first == second:
        return first
    wall = local_end.replace(tzinfo=None)
    zone = local_end.tzinfo
    if first.astimezone(zone).replace(tzinfo=None) == wall:  # repeated hour: both exist
        return first if first > now else second
    # The gap: the wall time never shows; the clocks jump at the instant between both readings.
    low, high = min(first, second), max(first, second)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


def plan_delivery(
    subscription: Subscription, level: Level, msg_type: MsgType, now: datetime
) -> DeliveryPlan:
    """Decide how a new delivery to ``subscription`` starts: at once, deferred, or digested.

    A digest gathers Alerts and Updates at or below the policy's level; a Cancel is never
    digested (it must follow the message it closes on the same channel). Quiet hours defer
    everything below their override level to the end of the span.

    Args:
        subscription: the subscriber, with its quiet hours and digest policy.
        level: the level of the message.
        msg_type: Alert, Update or Cancel.
        now: when the alert is stored (timezone-aware).

    Returns:
        The plan.
    """
    _require_aware(now)
    digest = subscription.digest
    if digest is not None and msg_type is not MsgType.CANCEL \
            and level.rank <= digest.up_to_level.rank:
        return DeliveryPlan(True, None, f"held for the digest: {level.value} alerts are "
                                        f"gathered every {digest.interval_min} min")
    if subscription.quiet_hours is not None:
        end = quiet_hours_end(subscription.quiet_hours, level, now)
        if end is not None:
            quiet = subscription.quiet_hours
            return DeliveryPlan(False, end, f"quiet hours {quiet.start}-{quiet.end} "
                                            f"{quiet.timezone}: sent at their end")
    return DeliveryPlan(False, None, None)


def digest_due_at(oldest_held: datetime, interval_min: int) -> datetime:
    """When a digest goes out: ``interval_min`` after the oldest delivery it carries."""
    _require_aware(oldest_held)
    if interval_min <= 0:
        raise ValueError(f"digest interval_min must be positive, got {interval_min}")
    return oldest_held + timedelta(minutes=interval_min)


def retry_delay_s(
    attempt: int,
    *,
    rng: random.Random,
    base_s: float = DEFAULT_RETRY_BASE_S,
    max_s: float = DEFAULT_RETRY_MAX_S,
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait before the next attempt after ``attempt`` attempts failed.

    Exponential (``base_s * 2**(attempt-1)``, capped at ``max_s``) with equal jitter: between
    half and all of the step. A receiver's ``Retry-After`` is honoured up to ``max_s``.

    Args:
        attempt: attempts made so far (1 after the first failure).
        rng: the random generator (seeded in tests and replays).
        base_s: the first step.
        max_s: the longest wait.
        retry_after_s: what the receiver asked for, if it did.

    Raises:
        ValueError: ``attempt`` below 1 or a non-positive step.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if base_s <= 0 or max_s < base_s:
        raise ValueError(f"backoff needs 0 < base_s <= max_s, got {base_s} and {max_s}")
    step = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after_s is not None and retry_after_s > delay:
        delay = min(max_s, retry_after_s)
    return delay


def next_escalation(
    subscription: Subscription,
    *,
    level: Level,
    msg_type: MsgType,
    sent: datetime,
    steps_done: int,
    acknowledged: bool,
    now: datetime,
) -> tuple[int, ChannelAddress] | None:
    """The escalation step due now for an alert, as ``(step, channel)``, or None.

    Only red Alerts and Updates escalate, only while nobody of the agency acknowledged the
    event. Step ``n`` (1-based) is due ``n * escalate_after_min`` after the message was sent
    and uses the ``n``-th escalation channel.

    Args:
        subscription: the subscriber, with its escalation channels.
        level: the message's level.
        msg_type: Alert, Update or Cancel.
        sent: when the message was sent.
        steps_done: escalation deliveries already made for this message and subscription.
        acknowledged: whether the agency acknowledged the event.
        now: the current time.
    """
    _require_aware(now)
    if acknowledged or level is not Level.RED or msg_type is MsgType.CANCEL:
        return None
    if steps_done >= len(subscription.escalation):
        return None
    step = steps_done + 1
    due = sent + timedelta(minutes=subscription.escalate_after_min * step)
    if now < due:
        return None
    return step, subscription.escalation[steps_done]
