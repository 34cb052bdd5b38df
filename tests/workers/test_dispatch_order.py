"""Dispatch keeps order and counts right in the hard cases.

Waiting messages, digests, lapsed leases, racing sweepers, re-driven digests, adapter bugs,
expiry and cancelled events.

A recording channel stands in for the receiver here (the real receivers are exercised in
test_dispatch.py and test_dispatch_end_to_end.py): these tests are about the outbox.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing import records as fx
from tocsin_testing.clock import Clock

from alerts.channels.base import ChannelRegistry, OutgoingMessage, Receipt
from alerts.errors import RetryableDispatchError
from alerts.model import (
    ChannelAddress,
    ChannelKind,
    DigestPolicy,
    Level,
    MsgType,
    QuietHours,
    Subscription,
)
from store import outbox, outbox_rules
from store.db import session_scope
from store.models import DeliveryStatus, PlannedDelivery
from workers.dispatch import DispatchContext, DispatchPolicy, deliver_batch, deliver_one
from workers.sweep import drain, sweep

T0 = fx.T0
HOOK = ChannelAddress(ChannelKind.WEBHOOK, "https://203.0.113.9/hook")


class Recorder:
    """A webhook channel that records what it is given; ``fail`` scripts exceptions."""

    kind = ChannelKind.WEBHOOK

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.fail: list[BaseException] = []

    def send(self, message: OutgoingMessage) -> Receipt:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append(message)
        return Receipt(ChannelKind.WEBHOOK, message.channel.address, "HTTP 200")

    def carried(self) -> list[tuple[str, list[str]]]:
        return [(m.kind, [a.identifier for a in m.alerts]) for m in self.sent]




@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(seconds=1))


@pytest.fixture
def channel() -> Recorder:
    return Recorder()


@pytest.fixture
def ctx(sessions: sessionmaker[Session], channel: Recorder):
    context = DispatchContext(sessions=sessions, registry=ChannelRegistry().register(channel),
                              policy=DispatchPolicy(lease_s=30, max_attempts=3,
                                                    retry_base_s=1, retry_max_s=10),
                              rng=random.Random(3))
    yield context
    context.close()


def _planned(**kw) -> PlannedDelivery:
    return PlannedDelivery("sub-1", HOOK, agency_id="ag-1", language="en", **kw)


def _status(sessions, key: str) -> DeliveryStatus:
    with session_scope(sessions) as session:
        return outbox.get_delivery(session, key).status


def test_a_red_update_replaces_an_earlier_alert_held_by_quiet_hours_instead_of_waiting(
        ctx, sessions, store_alert, channel, clock) -> None:
    (alert,) = store_alert([_planned(not_before=T0 + timedelta(hours=8))], level=Level.YELLOW)
    (update,) = store_alert([_planned()], sequence=2, msg_type=MsgType.UPDATE,
                            level=Level.RED, sent=T0 + timedelta(minutes=30))
    clock.advance(minutes=31)
    assert [o.outcome for o in drain(ctx, now=clock, max_wait_s=0)] == ["delivered"]
    assert channel.carried() == [("alert", ["tocsin-ev-1-002"])]
    assert _status(sessions, alert) is DeliveryStatus.SUPERSEDED
    assert _status(sessions, update) is DeliveryStatus.ACK


def test_an_update_waits_for_the_due_digest_carrying_its_alert_then_follows_it(
        ctx, sessions, store_alert, add_subscription, channel, clock) -> None:
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,), channels=(HOOK,),
                                  digest=DigestPolicy(Level.YELLOW, interval_min=60)))
    store_alert([_planned(status=DeliveryStatus.HELD)], level=Level.YELLOW)
    clock.advance(minutes=61)
    with session_scope(sessions) as session:
        (group,) = outbox_rules.held_groups(session)
        digest = outbox_rules.create_digest(session, group, at=clock())
    (update,) = store_alert([_planned()], sequence=2, msg_type=MsgType.UPDATE,
                            level=Level.ORANGE, sent=T0 + timedelta(minutes=61))
    assert deliver_one(update, ctx, now=clock).outcome == "waiting"
    assert deliver_one(digest.idempotency_key, ctx, now=clock).outcome == "delivered"
    clock.advance(seconds=3)
    assert deliver_one(update, ctx, now=clock).outcome == "delivered"
    assert channel.carried() == [("digest", ["tocsin-ev-1-001"]),
                                 ("alert", ["tocsin-ev-1-002"])]


def test_a_digest_whose_only_alert_was_replaced_is_not_sent(
        ctx, sessions, store_alert, add_subscription, channel, clock) -> None:
    quiet = QuietHours("00:00", "23:59", "UTC")
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,), channels=(HOOK,),
                                  digest=DigestPolicy(Level.YELLOW, 60), quiet_hours=quiet))
    store_alert([_planned(status=DeliveryStatus.HELD)], level=Level.YELLOW)
    clock.advance(minutes=61)
    sweep(ctx, now=clock())  # the digest is made, deferred by the quiet hours
    (update,) = store_alert([_planned()], sequence=2, msg_type=MsgType.UPDATE, level=Level.RED,
                            sent=T0 + timedelta(minutes=61))
    assert deliver_one(update, ctx, now=clock).outcome == "delivered"
    clock.advance(days=1)
    outcomes = drain(ctx, now=clock, max_wait_s=0)
    assert [o.outcome for o in outcomes] == ["superseded"]
    assert channel.carried() == [("alert", ["tocsin-ev-1-002"])]


def test_an_outcome_from_a_lapsed_claim_does_not_overwrite_the_current_one(
        sessions, store_alert, clock) -> None:
    (key,) = store_alert([_planned()])
    with session_scope(sessions) as session:
        (first,) = outbox.claim_batch(session, [key], now=clock(), lease_s=5)
    clock.advance(seconds=6)
    with session_scope(sessions) as session:
        (second,) = outbox.claim_batch(session, [key], now=clock(), lease_s=5)
    assert second.lapsed and second.record.attempts == 2
    with session_scope(sessions) as session:
        late = outbox.Outcome(first, DeliveryStatus.ERROR, clock(), error="HTTP 400")
        assert outbox.finish_batch(session, [late]) == [key]
        good = outbox.Outcome(second, DeliveryStatus.ACK, clock(), receipt="HTTP 200")
        assert outbox.finish_batch(session, [good]) == []
    with session_scope(sessions) as session:
        record = outbox.get_delivery(session, key)
    assert record.status is DeliveryStatus.ACK and record.last_error is None


def test_two_sweepers_making_the_same_digest_make_it_once(
        sessions, store_alert, clock) -> None:
    store_alert([_planned(status=DeliveryStatus.HELD)], level=Level.YELLOW)
    store_alert([_planned(status=DeliveryStatus.HELD)], event_id="ev-2", level=Level.GREEN)
    with session_scope(sessions) as session:
        (group,) = outbox_rules.held_groups(session)
    with session_scope(sessions) as session:
        assert outbox_rules.create_digest(session, group, at=clock()) is not None
    with session_scope(sessions) as session:  # the second sweeper read the same group
        assert outbox_rules.create_digest(session, group, at=clock()) is None
    digests = [r for r in _outbox(sessions) if r.kind == "digest"]
    assert len(digests) == 1 and len(digests[0].items) == 2


def test_redriving_every_failure_sends_a_failed_digest_again_but_not_its_members_alone(
        ctx, sessions, store_alert, channel, clock) -> None:
    members = store_alert([_planned(status=DeliveryStatus.HELD)], level=Level.YELLOW)
    members += store_alert([_planned(status=DeliveryStatus.HELD)], event_id="ev-2",
                           level=Level.GREEN)
    with session_scope(sessions) as session:
        (group,) = outbox_rules.held_groups(session)
        digest = outbox_rules.create_digest(session, group, at=clock())
    channel.fail = [RetryableDispatchError("HTTP 503")] * 3
    for _ in range(3):
        deliver_one(digest.idempotency_key, ctx, now=clock)
        clock.advance(seconds=30)
    assert {_status(sessions, k) for k in members} == {DeliveryStatus.ERROR}
    failed = [r.idempotency_key for r in _outbox(sessions) if r.status is DeliveryStatus.ERROR]
    with session_scope(sessions) as session:
        again = outbox.redrive_failed(session, failed, at=clock(), by="test")
    assert again == [digest.idempotency_key]
    assert {_status(sessions, k) for k in members} == {DeliveryStatus.DIGESTED}
    assert [o.outcome for o in drain(ctx, now=clock, max_wait_s=0)] == ["delivered"]
    assert [kind for kind, _ in channel.carried()] == ["digest"]


def test_an_unexpected_adapter_error_is_retried_and_ends_after_the_last_attempt(
        ctx, sessions, store_alert, channel, clock) -> None:
    (key,) = store_alert([_planned()])
    channel.fail = [TypeError("bug in an adapter")] * 5
    outcomes = []
    for _ in range(3):
        outcomes.append(deliver_one(key, ctx, now=clock).outcome)
        clock.advance(seconds=30)
    assert outcomes == ["retry", "retry", "failed"]
    with session_scope(sessions) as session:
        record = outbox.get_delivery(session, key)
    assert "unexpected TypeError" in (record.last_error or "")


def test_a_claim_lost_with_its_worker_once_too_often_fails_instead_of_retrying_forever(
        ctx, sessions, store_alert, clock) -> None:
    (key,) = store_alert([_planned()])
    for _ in range(3):  # three workers die mid-send
        with session_scope(sessions) as session:
            outbox.claim_batch(session, [key], now=clock(), lease_s=30)
        clock.advance(seconds=31)
    outcome = deliver_one(key, ctx, now=clock)
    assert outcome.outcome == "failed" and "gave up after 3 attempts" in outcome.detail


def test_an_alert_that_expired_before_it_could_be_sent_is_not_sent(
        ctx, store_alert, channel, clock) -> None:
    (key,) = store_alert([_planned()])
    clock.advance(hours=13)  # alerts expire 12 h after they are sent
    outcome = deliver_one(key, ctx, now=clock)
    assert outcome.outcome == "failed" and "expired" in outcome.detail
    assert channel.sent == []


def test_a_cancelled_event_stops_escalating(
        ctx, sessions, store_alert, add_subscription, channel, clock) -> None:
    backup = ChannelAddress(ChannelKind.WEBHOOK, "https://203.0.113.9/backup")
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,), channels=(HOOK,),
                                  escalation=(backup,), escalate_after_min=15))
    store_alert([_planned()])
    store_alert([_planned()], sequence=2, msg_type=MsgType.CANCEL, level=Level.GREEN,
                sent=T0 + timedelta(minutes=5))
    clock.advance(minutes=6)
    drain(ctx, now=clock, max_wait_s=5, sleep=lambda s: clock.advance(seconds=s))
    clock.advance(minutes=30)
    assert sweep(ctx, now=clock()).escalations == 0
    assert [kind for kind, _ in channel.carried()] == ["alert", "alert"]


def test_an_update_does_not_start_a_second_escalation_chain(
        ctx, sessions, store_alert, add_subscription, channel, clock) -> None:
    backup = ChannelAddress(ChannelKind.WEBHOOK, "https://203.0.113.9/backup")
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,), channels=(HOOK,),
                                  escalation=(backup,), escalate_after_min=15))
    store_alert([_planned()])
    store_alert([_planned()], sequence=2, msg_type=MsgType.UPDATE,
                sent=T0 + timedelta(minutes=5))
    clock.advance(minutes=20)
    drain(ctx, now=clock, max_wait_s=5, sleep=lambda s: clock.advance(seconds=s))
    clock.advance(hours=2)
    drain(ctx, now=clock, max_wait_s=0)
    escalated = [ids for kind, ids in channel.carried() if kind == "escalation"]
    assert escalated == [["tocsin-ev-1-002"]]  # once per event, with its latest message


def test_rows_handed_to_the_broker_are_not_handed_over_again_while_their_message_waits(
        sessions, store_alert, clock) -> None:
    (key,) = store_alert([_planned()])
    with session_scope(sessions) as session:
        first = outbox.due_deliveries(session, now=clock(), enqueue_every_s=30)
        second = outbox.due_deliveries(session, now=clock(), enqueue_every_s=30)
    clock.advance(seconds=31)
    with session_scope(sessions) as session:
        third = outbox.due_deliveries(session, now=clock(), enqueue_every_s=30)
    assert [d.idempotency_key for d in first] == [key] and second == []
    assert [d.idempotency_key for d in third] == [key]  # its message was lost: again


def test_a_batch_sends_every_due_delivery_once_and_skips_the_rest(
        ctx, sessions, store_alert, channel, clock) -> None:
    keys = []
    for i in range(12):
        keys += store_alert([PlannedDelivery(f"sub-{i}", HOOK, agency_id="ag-1",
                                             language="en")], event_id=f"ev-{i}")
    later = store_alert([_planned(not_before=T0 + timedelta(hours=1))], event_id="ev-late")
    outcomes = deliver_batch(keys + later + ["0" * 64], ctx, now=clock)
    assert [o.outcome for o in outcomes] == ["delivered"] * 12 + ["skipped", "skipped"]
    assert sorted(m.idempotency_key for m in channel.sent) == sorted(keys)


def _outbox(sessions):
    with session_scope(sessions) as session:
        return outbox.list_outbox(session, limit=1000)
