"""Delivery rules at their boundaries: quiet hours, digests, backoff and escalation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.delivery_rules import (
    digest_due_at,
    next_escalation,
    plan_delivery,
    quiet_hours_end,
    retry_delay_s,
)
from alerts.model import (
    ChannelAddress,
    ChannelKind,
    DigestPolicy,
    Level,
    MsgType,
    QuietHours,
    Subscription,
)

NIGHT = QuietHours("22:00", "07:00", "Europe/Zurich")
SMS = ChannelAddress(ChannelKind.SMS, "+41791234567")
MAIL = ChannelAddress(ChannelKind.EMAIL, "duty@example.org")


def _zurich(day: int, hour: int, minute: int = 0, month: int = 5) -> datetime:
    # May: Zurich is UTC+2 (CEST).
    return datetime(2026, month, day, hour - 2, minute, tzinfo=UTC)


@pytest.mark.parametrize(("local", "end"), [
    ((12, 22, 0), (13, 7, 0)),   # the first minute of quiet
    ((12, 23, 59), (13, 7, 0)),
    ((13, 3, 0), (13, 7, 0)),    # after midnight: ends the same morning
    ((13, 6, 59), (13, 7, 0)),   # the last minute
])
def test_quiet_hours_crossing_midnight_hold_until_their_local_end(local, end) -> None:
    assert quiet_hours_end(NIGHT, Level.ORANGE, _zurich(*local)) == _zurich(*end)


@pytest.mark.parametrize("local", [(12, 7, 0), (12, 12, 0), (12, 21, 59)])
def test_outside_quiet_hours_nothing_is_held(local) -> None:
    assert quiet_hours_end(NIGHT, Level.YELLOW, _zurich(*local)) is None


def test_a_red_alert_ignores_quiet_hours() -> None:
    assert quiet_hours_end(NIGHT, Level.RED, _zurich(12, 23)) is None


def test_quiet_hours_within_one_day_and_empty_spans() -> None:
    lunch = QuietHours("12:00", "13:30", "UTC")
    assert quiet_hours_end(lunch, Level.GREEN, datetime(2026, 5, 12, 12, 0, tzinfo=UTC)) == \
        datetime(2026, 5, 12, 13, 30, tzinfo=UTC)
    assert quiet_hours_end(lunch, Level.GREEN, datetime(2026, 5, 12, 13, 30, tzinfo=UTC)) is None
    assert quiet_hours_end(QuietHours("08:00", "08:00", "UTC"), Level.GREEN,
                           datetime(2026, 5, 12, 8, 0, tzinfo=UTC)) is None


def test_quiet_hours_ending_after_a_clock_change_end_at_local_wall_time() -> None:
    # 29 March 2026: Zurich moves from UTC+1 to UTC+2 at 02:00 local.
    at = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 local, still CET
    assert quiet_hours_end(NIGHT, Level.YELLOW, at) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


def test_in_the_repeated_hour_quiet_hours_end_at_the_next_occurrence_of_their_end() -> None:
    # 25 October 2026: Zurich clocks go back from 03:00 CEST to 02:00 CET; 02:00-03:00 twice.
    quiet = QuietHours("22:00", "02:30", "Europe/Zurich")
    second_0215 = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, the second time
    assert quiet_hours_end(quiet, Level.YELLOW, second_0215) == \
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET, not the 02:30 CEST passed
    first_0215 = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15 CEST, the first time
    assert quiet_hours_end(quiet, Level.YELLOW, first_0215) == \
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_quiet_hours_ending_in_the_spring_gap_end_when_the_clocks_jump() -> None:
    # 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 never shows.
    quiet = QuietHours("22:00", "02:30", "Europe/Zurich")
    assert quiet_hours_end(quiet, Level.YELLOW, datetime(2026, 3, 28, 23, 0, tzinfo=UTC)) == \
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        quiet_hours_end(NIGHT, Level.YELLOW, datetime(2026, 5, 12, 23))


def _sub(**changes) -> Subscription:
    return Subscription("s1", "ag", channels=(MAIL,), **changes)


@pytest.mark.parametrize(("level", "msg_type", "held"), [
    (Level.GREEN, MsgType.ALERT, True),
    (Level.YELLOW, MsgType.UPDATE, True),
    (Level.ORANGE, MsgType.ALERT, False),  # above the digest level: at once
    (Level.YELLOW, MsgType.CANCEL, False),  # a Cancel is never digested
])
def test_digests_gather_alerts_and_updates_up_to_their_level(level, msg_type, held) -> None:
    plan = plan_delivery(_sub(digest=DigestPolicy(Level.YELLOW, 60)), level, msg_type,
                         datetime(2026, 5, 12, 12, tzinfo=UTC))
    assert plan.held_for_digest is held
    assert (plan.reason is not None) is held


def test_a_plan_in_quiet_hours_is_deferred_to_their_end_with_the_reason() -> None:
    plan = plan_delivery(_sub(quiet_hours=NIGHT), Level.ORANGE, MsgType.ALERT, _zurich(12, 23))
    assert plan.not_before == _zurich(13, 7) and not plan.held_for_digest
    assert "quiet hours 22:00-07:00 Europe/Zurich" in (plan.reason or "")


def test_a_plan_without_rules_goes_at_once() -> None:
    plan = plan_delivery(_sub(), Level.GREEN, MsgType.ALERT, _zurich(12, 23))
    assert plan == type(plan)(False, None, None)


def test_a_digest_is_due_its_interval_after_the_oldest_held_delivery() -> None:
    t = datetime(2026, 5, 12, 12, tzinfo=UTC)
    assert digest_due_at(t, 90) == t + timedelta(minutes=90)
    with pytest.raises(ValueError, match="positive"):
        digest_due_at(t, 0)


@given(attempt=st.integers(1, 200), base=st.floats(0.1, 10), seed=st.integers(0, 2**32))
def test_backoff_stays_between_half_and_all_of_its_capped_exponential_step(
        attempt: int, base: float, seed: int) -> None:
    max_s = 300.0
    delay = retry_delay_s(attempt, rng=random.Random(seed), base_s=base, max_s=max_s)
    step = min(max_s, base * 2.0 ** (attempt - 1))
    assert step / 2 <= delay <= step


def test_backoff_honours_retry_after_up_to_the_maximum() -> None:
    rng = random.Random(1)
    assert retry_delay_s(1, rng=rng, base_s=2, max_s=600, retry_after_s=120) == 120
    assert retry_delay_s(1, rng=rng, base_s=2, max_s=600, retry_after_s=10_000) == 600
    with pytest.raises(ValueError, match="attempt counts from 1"):
        retry_delay_s(0, rng=rng)


def _escalation(**kw):
    sub = _sub(escalation=(SMS, MAIL), escalate_after_min=15)
    sent = datetime(2026, 5, 12, 12, tzinfo=UTC)
    args = {"level": Level.RED, "msg_type": MsgType.ALERT, "sent": sent, "steps_done": 0,
            "acknowledged": False, "now": sent + timedelta(minutes=15), **kw}
    return next_escalation(sub, **args)


def test_escalation_steps_are_due_at_multiples_of_the_delay_on_the_next_channel() -> None:
    sent = datetime(2026, 5, 12, 12, tzinfo=UTC)
    assert _escalation(now=sent + timedelta(minutes=14, seconds=59)) is None
    assert _escalation() == (1, SMS)
    assert _escalation(steps_done=1, now=sent + timedelta(minutes=29)) is None
    assert _escalation(steps_done=1, now=sent + timedelta(minutes=30)) == (2, MAIL)
    assert _escalation(steps_done=2, now=sent + timedelta(hours=5)) is None


@pytest.mark.parametrize("changes", [{"acknowledged": True}, {"level": Level.ORANGE},
                                     {"msg_type": MsgType.CANCEL}])
def test_acknowledged_lower_or_cancelled_alerts_never_escalate(changes) -> None:
    assert _escalation(**changes) is None
