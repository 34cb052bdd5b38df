"""The outbox sweep: due digests and escalations made, due deliveries found, drained in-process.

The sweep runs on a beat (``workers/tasks.py``) or inside ``tocsin dispatch``. Each digest
group and each escalation is made on its own: one that fails (a subscription with a time zone
this machine lacks, a lost race with another sweeper) is logged and skipped, and the sweep
still returns every delivery that is due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerts.delivery_rules import digest_due_at, next_escalation, quiet_hours_end
from alerts.model import MsgType
from store import outbox, outbox_rules, repo
from store.db import session_scope
from store.models import DeliveryRecord, DeliveryStatus
from workers.dispatch import DeliveryOutcome, DispatchContext, deliver_batch

log = logging.getLogger("tocsin.dispatch")

DIGEST_INTERVAL_REMOVED_MIN = 60
"""Digest interval for held deliveries whose subscription has no digest policy any more."""


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep found and made."""

    due: tuple[DeliveryRecord, ...]
    digests: int
    escalations: int


def sweep(ctx: DispatchContext, *, now: datetime, limit: int = 1000,
          enqueue_every_s: float | None = None) -> SweepReport:
    """Make due digests and escalations, and list every delivery due now (top level first).

    Args:
        ctx: store and policy.
        now: the current time.
        limit: most deliveries returned at once.
        enqueue_every_s: the caller hands the rows to a broker: rows handed over less than
            this long ago are left out, and those returned are marked (no message storms).
    """
    digests = _make_digests(ctx, now)
    escalations = _make_escalations(ctx, now)
    with session_scope(ctx.sessions) as session:
        due = outbox.due_deliveries(session, now=now, limit=limit,
                                    enqueue_every_s=enqueue_every_s)
    return SweepReport(tuple(due), digests, escalations)


def _make_digests(ctx: DispatchContext, now: datetime) -> int:
    with session_scope(ctx.sessions) as session:
        groups = outbox_rules.held_groups(session)
    made = 0
    for group in groups:
        try:
            with session_scope(ctx.sessions) as session:
                try:
                    sub = repo.get_subscription(session, group.subscription_id)
                except repo.RecordNotFoundError:
                    sub = None
                interval = sub.digest.interval_min if sub and sub.digest \
                    else DIGEST_INTERVAL_REMOVED_MIN
                if digest_due_at(group.oldest, interval) > now:
                    continue
                quiet = sub.quiet_hours if sub else None
                hold = quiet_hours_end(quiet, group.top_level, now) if quiet else None
                if outbox_rules.create_digest(session, group, at=now, not_before=hold):
                    made += 1
        except Exception:  # noqa: BLE001 - one bad group must not stop every delivery
            log.exception("digest not made", extra={"subscription": group.subscription_id})
    return made


def _make_escalations(ctx: DispatchContext, now: datetime) -> int:
    with session_scope(ctx.sessions) as session:
        candidates = outbox_rules.escalation_candidates(session, now=now)
    made = 0
    for candidate in candidates:
        try:
            with session_scope(ctx.sessions) as session:
                try:
                    sub = repo.get_subscription(session, candidate.subscription_id)
                except repo.RecordNotFoundError:
                    continue  # removed since: nobody left to escalate to
                if not sub.escalation:
                    continue
                alert = ctx.alert(session, candidate.latest_identifier)
                acknowledged = outbox_rules.event_acknowledged(session, candidate.event_id,
                                                               sub.agency_id)
                step_channel = next_escalation(
                    sub, level=alert.level, msg_type=alert.msg_type, sent=candidate.red_since,
                    steps_done=candidate.steps_done, acknowledged=acknowledged, now=now)
                if step_channel is None or alert.msg_type is MsgType.CANCEL:
                    continue
                step, channel = step_channel
                if outbox_rules.add_escalation(session, candidate, agency_id=sub.agency_id,
                                               language=sub.languages[0], step=step,
                                               channel=channel, at=now):
                    made += 1
        except Exception:  # noqa: BLE001 - one bad subscription must not stop the sweep
            log.exception("escalation not made", extra={"event": candidate.event_id})
    return made


def drain(
    ctx: DispatchContext,
    *,
    now: Callable[[], datetime],
    on_outcome: Callable[[DeliveryOutcome], None] | None = None,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    max_rounds: int = 10_000,
) -> list[DeliveryOutcome]:
    """Deliver everything due in this process, without a broker (CLI, demo, tests).

    Repeats while something is due. What comes due within ``max_wait_s`` of the start (a
    delivery waiting behind an earlier message still being sent, a quick retry) is waited
    for (``sleep``); later retries stay pending for the workers or the next run.
    """
    outcomes: list[DeliveryOutcome] = []
    deadline = now() + timedelta(seconds=max_wait_s)
    for _ in range(max_rounds):
        report = sweep(ctx, now=now())
        if report.due:
            keys = [d.idempotency_key for d in report.due]
            size = ctx.policy.batch_size
            for start in range(0, len(keys), size):
                for outcome in deliver_batch(keys[start:start + size], ctx, now=now):
                    outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
            continue
        before = now()
        wait = _next_due_within(ctx, before, (deadline - before).total_seconds())
        if wait is None:
            break
        sleep(wait)
        if now() <= before:  # a clock that does not move (tests, replays): stop waiting
            break
    return outcomes


def _next_due_within(ctx: DispatchContext, at: datetime, max_wait_s: float) -> float | None:
    """Seconds until the next pending delivery is due, if that is within ``max_wait_s``."""
    with session_scope(ctx.sessions) as session:
        pending = outbox.list_outbox(session, statuses=[DeliveryStatus.PENDING,
                                                        DeliveryStatus.SENDING], limit=10_000)
    times = [d.not_before if d.status is DeliveryStatus.PENDING else d.lease_until
             for d in pending]
    soonest = min((t for t in times if t is not None), default=None)
    if soonest is None or max_wait_s <= 0 or soonest - at > timedelta(seconds=max_wait_s):
        return None
    return max(0.05, (soonest - at).total_seconds())


def still_pending(ctx: DispatchContext) -> list[DeliveryRecord]:
    """Deliveries not sent yet (pending, being sent, held for a digest)."""
    with session_scope(ctx.sessions) as session:
        return outbox.list_outbox(session, statuses=[DeliveryStatus.PENDING,
                                                     DeliveryStatus.SENDING,
                                                     DeliveryStatus.HELD], limit=100_000)
