"""Dispatch without Celery: the outbox drives delivery, retries, failures, digests, escalation.

Deliveries go to a real HTTP receiver on 127.0.0.1 through the real webhook channel; the
clock is a test clock, so backoff, quiet hours, digests and escalation are checked exactly.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing import receiver as rx
from tocsin_testing import records as fx
from tocsin_testing.clock import Clock

from alerts.channels.base import ChannelRegistry
from alerts.channels.webhook import WebhookChannel, WebhookConfig
from alerts.model import (
    ChannelAddress,
    ChannelKind,
    DigestPolicy,
    Level,
    MsgType,
    Subscription,
)
from store import outbox, outbox_rules
from store.db import session_scope
from store.models import DeliveryStatus, PlannedDelivery
from workers.dispatch import DispatchContext, DispatchPolicy, deliver_one
from workers.sweep import drain, sweep

T0 = fx.T0




@pytest.fixture
def receiver():
    with rx.running() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(seconds=1))


@pytest.fixture
def ctx(sessions: sessionmaker[Session]):
    channel = WebhookChannel(WebhookConfig(master_secret=b"test-secret",
                                           allow_hosts=("127.0.0.1",), timeout_s=2.0))
    context = DispatchContext(sessions=sessions, registry=ChannelRegistry().register(channel),
                              policy=DispatchPolicy(lease_s=30, max_attempts=4,
                                                    retry_base_s=2, retry_max_s=60),
                              rng=random.Random(7))
    yield context
    channel.close()


def _hook(url: str, sub: str = "sub-1", agency: str = "ag-1", **kw) -> PlannedDelivery:
    return PlannedDelivery(sub, ChannelAddress(ChannelKind.WEBHOOK, url), agency_id=agency,
                           language="en", **kw)


def _status(sessions, key: str) -> outbox.DeliveryRecord:
    with session_scope(sessions) as session:
        return outbox.get_delivery(session, key)


def test_a_pending_delivery_reaches_the_receiver_once_and_is_marked_delivered(
        ctx, sessions, store_alert, receiver, clock) -> None:
    (key,) = store_alert([_hook(receiver.url)])
    outcomes = drain(ctx, now=clock)
    assert [o.outcome for o in outcomes] == ["delivered"]
    assert receiver.arrivals[key] == 1
    body = receiver.processed[key]
    assert body["idempotency_key"] == key and body["alerts"][0]["level"] == "red"
    record = _status(sessions, key)
    assert record.status is DeliveryStatus.ACK and record.attempts == 1
    assert record.receipt and "200" in record.receipt
    assert [s for s, _ in record.history] == [DeliveryStatus.PENDING, DeliveryStatus.SENDING,
                                              DeliveryStatus.ACK]


def test_a_receiver_answering_500_is_retried_with_backoff_then_delivered(
        ctx, sessions, store_alert, receiver, clock) -> None:
    receiver.script = [500, 503]
    (key,) = store_alert([_hook(receiver.url)])
    first = deliver_one(key, ctx, now=clock)
    assert first.outcome == "retry" and 1.0 <= first.retry_in_s <= 2.0
    assert drain(ctx, now=clock, max_wait_s=0) == []  # not due yet: nothing is sent early
    clock.advance(seconds=2.5)
    assert deliver_one(key, ctx, now=clock).outcome == "retry"
    clock.advance(seconds=4.5)
    assert deliver_one(key, ctx, now=clock).outcome == "delivered"
    record = _status(sessions, key)
    assert record.status is DeliveryStatus.ACK and record.attempts == 3
    assert receiver.arrivals[key] == 3 and key in receiver.processed


def test_a_receiver_that_answers_too_slowly_is_retried(
        ctx, sessions, store_alert, receiver, clock) -> None:
    receiver.delay_s = 3.0  # the channel waits 2 s
    (key,) = store_alert([_hook(receiver.url)])
    outcome = deliver_one(key, ctx, now=clock)
    assert outcome.outcome == "retry" and "timed out" in outcome.detail.lower()
    receiver.delay_s = 0.0
    clock.advance(seconds=5)
    assert deliver_one(key, ctx, now=clock).outcome == "delivered"


@pytest.mark.parametrize("status", [410, 400, 404])
def test_a_receiver_answering_4xx_fails_permanently_with_the_reason_in_the_outbox(
        ctx, sessions, store_alert, receiver, clock, status: int) -> None:
    receiver.script = [status]
    (key,) = store_alert([_hook(receiver.url)])
    assert [o.outcome for o in drain(ctx, now=clock)] == ["failed"]
    with session_scope(sessions) as session:
        (failed,) = outbox.list_outbox(session, statuses=[DeliveryStatus.ERROR])
    assert failed.idempotency_key == key and str(status) in (failed.last_error or "")
    assert receiver.arrivals[key] == 1


def test_retryable_failures_become_final_after_the_last_attempt(
        ctx, sessions, store_alert, receiver, clock) -> None:
    receiver.script = [500] * 10
    (key,) = store_alert([_hook(receiver.url)])
    for _ in range(4):
        deliver_one(key, ctx, now=clock)
        clock.advance(seconds=120)
    record = _status(sessions, key)
    assert record.status is DeliveryStatus.ERROR and record.attempts == 4
    assert "gave up after 4 attempts" in (record.last_error or "")


def test_an_operator_redrive_sends_a_failed_delivery_again(
        ctx, sessions, store_alert, receiver, clock) -> None:
    receiver.script = [410]
    (key,) = store_alert([_hook(receiver.url)])
    drain(ctx, now=clock, max_wait_s=0)
    with session_scope(sessions) as session:
        assert outbox.redrive_failed(session, [key], at=clock(), by="test") == [key]
    assert [o.outcome for o in drain(ctx, now=clock)] == ["delivered"]


def test_only_one_of_two_racing_claims_wins_and_a_lapsed_lease_can_be_taken_again(
        sessions, store_alert, clock) -> None:
    (key,) = store_alert([_hook("https://203.0.113.9/hook")])
    with session_scope(sessions) as session:
        assert outbox.claim_delivery(session, key, now=clock(), lease_s=30) is not None
    with session_scope(sessions) as session:
        assert outbox.claim_delivery(session, key, now=clock(), lease_s=30) is None
        assert outbox.due_deliveries(session, now=clock()) == []
    clock.advance(seconds=31)
    with session_scope(sessions) as session:
        assert [d.idempotency_key for d in outbox.due_deliveries(session, now=clock())] == [key]
        again = outbox.claim_delivery(session, key, now=clock(), lease_s=30)
    assert again is not None and again.attempts == 2


def test_an_update_waits_until_the_alert_before_it_is_delivered_on_the_same_channel(
        ctx, sessions, store_alert, receiver, clock) -> None:
    (first,) = store_alert([_hook(receiver.url)])
    (update,) = store_alert([_hook(receiver.url)], sequence=2, msg_type=MsgType.UPDATE,
                            sent=T0 + timedelta(minutes=5))
    waited = deliver_one(update, ctx, now=clock)
    assert waited.outcome == "waiting" and receiver.arrivals[update] == 0
    assert deliver_one(first, ctx, now=clock).outcome == "delivered"
    clock.advance(seconds=6)
    assert deliver_one(update, ctx, now=clock).outcome == "delivered"
    assert list(receiver.processed) == [first, update]


def test_higher_levels_are_due_first(sessions, store_alert, clock) -> None:
    low = store_alert([_hook("https://203.0.113.9/a")], event_id="ev-low", level=Level.YELLOW)
    high = store_alert([_hook("https://203.0.113.9/b")], event_id="ev-high", level=Level.RED,
                       sent=T0 + timedelta(seconds=1))
    clock.advance(seconds=1)
    with session_scope(sessions) as session:
        due = [d.idempotency_key for d in outbox.due_deliveries(session, now=clock())]
    assert due == high + low


def test_a_delivery_held_by_quiet_hours_is_not_sent_before_they_end(
        ctx, store_alert, receiver, clock) -> None:
    (key,) = store_alert([_hook(receiver.url, not_before=T0 + timedelta(hours=1))],
                         level=Level.YELLOW)
    assert drain(ctx, now=clock, max_wait_s=0) == []
    clock.advance(hours=1)
    assert [o.outcome for o in drain(ctx, now=clock)] == ["delivered"]


def test_a_channel_this_worker_has_not_configured_is_retried_later_saying_so(
        ctx, sessions, store_alert, clock) -> None:
    planned = PlannedDelivery("sub-1", ChannelAddress(ChannelKind.SMS, "+41791234567"),
                              agency_id="ag-1", language="en")
    (key,) = store_alert([planned])
    (outcome,) = drain(ctx, now=clock, max_wait_s=0)
    assert outcome.outcome == "retry" and outcome.retry_in_s >= 30  # capped at retry_max_s
    record = _status(sessions, key)
    assert record.status is DeliveryStatus.PENDING
    assert "no sms channel is configured" in (record.last_error or "")


def test_low_level_alerts_are_gathered_into_one_digest_after_its_interval(
        ctx, sessions, store_alert, add_subscription, receiver, clock) -> None:
    hook = ChannelAddress(ChannelKind.WEBHOOK, receiver.url)
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,), channels=(hook,),
                                  digest=DigestPolicy(Level.YELLOW, interval_min=60)))
    held = DeliveryStatus.HELD
    (a,) = store_alert([_hook(receiver.url, status=held)], event_id="ev-a", level=Level.YELLOW)
    (b,) = store_alert([_hook(receiver.url, status=held)], event_id="ev-b", level=Level.GREEN,
                       sent=T0 + timedelta(minutes=10))
    assert drain(ctx, now=clock, max_wait_s=0) == []
    clock.advance(minutes=60)
    outcomes = drain(ctx, now=clock)
    assert [o.outcome for o in outcomes] == ["delivered"]
    (digest_key,) = receiver.processed
    body = receiver.processed[digest_key]
    assert body["kind"] == "digest" and len(body["alerts"]) == 2
    assert {_status(sessions, k).status for k in (a, b)} == {DeliveryStatus.DIGESTED}
    assert _status(sessions, a).digest_key == digest_key


def test_an_unacknowledged_red_alert_escalates_channel_after_channel(
        ctx, sessions, store_alert, add_subscription, receiver, clock) -> None:
    primary = ChannelAddress(ChannelKind.WEBHOOK, receiver.url)
    backups = tuple(ChannelAddress(ChannelKind.WEBHOOK, f"{receiver.url}?step={i}")
                    for i in (1, 2))
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,),
                                  channels=(primary,), escalation=backups,
                                  escalate_after_min=15))
    (key,) = store_alert([_hook(receiver.url)])
    drain(ctx, now=clock)
    clock.advance(minutes=14)
    assert sweep(ctx, now=clock()).escalations == 0
    clock.advance(minutes=2)
    assert [o.outcome for o in drain(ctx, now=clock)] == ["delivered"]
    clock.advance(minutes=15)  # 31 min after the alert: the second step
    assert [o.outcome for o in drain(ctx, now=clock)] == ["delivered"]
    clock.advance(minutes=60)
    assert sweep(ctx, now=clock()).escalations == 0  # both channels used: the chain ends
    escalations = [b for k, b in receiver.processed.items() if k != key]
    assert [b["kind"] for b in escalations] == ["escalation", "escalation"]
    addresses = [r.channel.address for r in _outbox(sessions) if r.kind == "escalation"]
    assert sorted(addresses) == sorted(b.address for b in backups)


def _outbox(sessions):
    with session_scope(sessions) as session:
        return outbox.list_outbox(session, limit=1000)


def test_an_acknowledged_red_alert_does_not_escalate(
        ctx, sessions, store_alert, add_subscription, receiver, clock) -> None:
    primary = ChannelAddress(ChannelKind.WEBHOOK, receiver.url)
    backup = ChannelAddress(ChannelKind.WEBHOOK, receiver.url + "?escalated=1")
    add_subscription(Subscription("sub-1", "ag-1", areas_wkt=(fx.SUB_AREA,),
                                  channels=(primary,), escalation=(backup,),
                                  escalate_after_min=15))
    store_alert([_hook(receiver.url)])
    drain(ctx, now=clock)
    with session_scope(sessions) as session:
        assert outbox_rules.acknowledge(session, "tocsin-ev-1-001", "ag-1", at=clock(),
                                        by="duty")
        assert not outbox_rules.acknowledge(session, "tocsin-ev-1-001", "ag-1", at=clock(),
                                            by="x")
    clock.advance(minutes=30)
    assert sweep(ctx, now=clock()).escalations == 0
