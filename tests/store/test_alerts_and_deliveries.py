"""Alerts keep their exact CAP bytes and are immutable; deliveries are written with them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from alerts.model import (
    Certainty,
    ChannelAddress,
    ChannelKind,
    Level,
    MsgType,
    Priority,
    Severity,
    Urgency,
)
from store.db import session_scope
from store.models import AlertRow, DeliveryRow
from store.outbox import StaleClaimError, claim_delivery, finish_delivery, get_delivery
from store.repo import (
    AlertRecord,
    DeliveryStatus,
    DuplicateRecordError,
    ImmutableAlertError,
    PlannedDelivery,
    RecordNotFoundError,
    StoredEvent,
    delivery_idempotency_key,
    get_alert,
    list_alerts,
    list_deliveries,
    save_alert_with_deliveries,
    save_event,
)

T0 = datetime(2026, 3, 1, 6, 30, 15, 250_000, tzinfo=UTC)
CET = timezone(timedelta(hours=1))
# Bytes a text round trip would damage: a BOM, CRLF, non-ASCII UTF-8, a lone 0xff, NUL,
# and trailing whitespace.
CAP = (b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>\r\n<alert>Zurich \xc3\xbc "
       b"\xe2\x80\x94 \xff\x00 </alert>\n  ")
PRIORITY = Priority(level=Level.ORANGE, score=0.1 + 0.2, severity=Severity.SEVERE,
                    urgency=Urgency.EXPECTED, certainty=Certainty.LIKELY,
                    reasons=("3,120 people with disabilities in the extreme class",
                             "St Mary hospital cut off"), rules_version="2026.1")
EMAIL = ChannelAddress(ChannelKind.EMAIL, "duty@example.org")
HOOK = ChannelAddress(ChannelKind.WEBHOOK, "https://cp.example.org/hook")


def _alert(identifier: str = "tocsin-0001", **changes) -> AlertRecord:
    fields = {"event_id": "ev-1", "sender": "tocsin@example.org", "msg_type": MsgType.ALERT,
              "priority": PRIORITY, "sent": T0.astimezone(CET),
              "expires": T0 + timedelta(hours=6), "cap_bytes": CAP, **changes}
    return AlertRecord(identifier=identifier, **fields)


@pytest.fixture
def with_event(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_scope(sessions) as session:
        save_event(session, StoredEvent("ev-1", "flood_depth", first_seen=T0, last_seen=T0))
        save_event(session, StoredEvent("ev-2", "flood_depth", first_seen=T0, last_seen=T0))
    return sessions


def test_cap_bytes_come_back_byte_identical_with_every_field(
        with_event: sessionmaker[Session]) -> None:
    alert = _alert()
    with session_scope(with_event) as session:
        save_alert_with_deliveries(session, alert, [])
    with session_scope(with_event) as session:
        stored = get_alert(session, "tocsin-0001")
        sha = session.scalar(select(AlertRow.cap_sha256))
        level = session.scalar(select(AlertRow.level))
    assert stored.cap_bytes == CAP
    assert stored == alert  # every field, the score 0.30000000000000004 included
    assert stored.sent.utcoffset() == timedelta(0) and stored.sent == T0
    assert sha == hashlib.sha256(CAP).hexdigest() == stored.cap_sha256
    assert level == "orange" == stored.level


def test_saving_an_alert_again_is_refused_and_changes_nothing(
        with_event: sessionmaker[Session]) -> None:
    with session_scope(with_event) as session:
        save_alert_with_deliveries(session, _alert(), [PlannedDelivery("s1", EMAIL)])
    changed = _alert(cap_bytes=b"<alert>changed</alert>")
    with pytest.raises(ImmutableAlertError, match="'tocsin-0001' is already stored"):
        with session_scope(with_event) as session:
            save_alert_with_deliveries(session, changed, [PlannedDelivery("s2", EMAIL)])
    with session_scope(with_event) as session:
        assert get_alert(session, "tocsin-0001").cap_bytes == CAP
        assert [d.subscription_id for d in list_deliveries(session)] == ["s1"]


def test_changing_a_stored_alert_through_the_orm_is_refused(
        with_event: sessionmaker[Session]) -> None:
    with session_scope(with_event) as session:
        save_alert_with_deliveries(session, _alert(), [])
    with pytest.raises(ImmutableAlertError, match="'tocsin-0001' is stored and immutable"):
        with session_scope(with_event) as session:
            row = session.scalar(select(AlertRow))
            row.level = "red"
    with session_scope(with_event) as session:
        assert get_alert(session, "tocsin-0001") == _alert()


def test_the_database_itself_refuses_an_update_of_the_cap_bytes(
        with_event: sessionmaker[Session]) -> None:
    with session_scope(with_event) as session:
        save_alert_with_deliveries(session, _alert(), [])
    with pytest.raises(DBAPIError, match="immutable"):
        with session_scope(with_event) as session:
            session.execute(text("UPDATE alerts SET cap_bytes = :b"), {"b": b"forged"})
    with session_scope(with_event) as session:
        assert get_alert(session, "tocsin-0001").cap_bytes == CAP


def test_an_alert_of_an_unknown_event_is_refused(with_event: sessionmaker[Session]) -> None:
    with session_scope(with_event) as session:
        with pytest.raises(RecordNotFoundError, match="no event 'ev-9'"):
            save_alert_with_deliveries(session, _alert(event_id="ev-9"), [])
        assert list_alerts(session) == []


def test_deliveries_are_written_with_their_alert_as_pending_with_deterministic_keys(
        with_event: sessionmaker[Session]) -> None:
    planned = [PlannedDelivery("s1", EMAIL), PlannedDelivery("s1", HOOK),
               PlannedDelivery("s2", EMAIL)]
    with session_scope(with_event) as session:
        returned = save_alert_with_deliveries(session, _alert(), planned)
    with session_scope(with_event) as session:
        stored = list_deliveries(session, "tocsin-0001")
    assert stored == returned
    assert [(d.subscription_id, d.channel) for d in stored] == [
        (p.subscription_id, p.channel) for p in planned]
    assert all(d.status is DeliveryStatus.PENDING and d.attempts == 0 for d in stored)
    assert all(d.history == ((DeliveryStatus.PENDING, T0),) for d in stored)
    # sha256 of the four parts joined by the unit separator U+001F.
    expected = hashlib.sha256(
        b"tocsin-0001\x1fs1\x1femail\x1fduty@example.org").hexdigest()
    assert stored[0].idempotency_key == expected
    assert len({d.idempotency_key for d in stored}) == 3


def test_the_idempotency_key_separates_its_parts_and_changes_with_each(
        with_event: sessionmaker[Session]) -> None:
    key = delivery_idempotency_key("a1", "s1", EMAIL)
    assert key == delivery_idempotency_key("a1", "s1", EMAIL)
    assert key != delivery_idempotency_key("a", "1s1", EMAIL)
    assert key != delivery_idempotency_key("a1", "s1", ChannelAddress(ChannelKind.SMS,
                                                                      EMAIL.address))
    assert key != delivery_idempotency_key("a1", "s1", ChannelAddress(EMAIL.kind, "x@y.org"))


def test_a_planned_delivery_twice_is_refused_and_nothing_of_the_alert_is_written(
        with_event: sessionmaker[Session]) -> None:
    planned = [PlannedDelivery("s1", EMAIL), PlannedDelivery("s1", EMAIL)]
    with pytest.raises(DuplicateRecordError, match="planned twice"):
        with session_scope(with_event) as session:
            save_alert_with_deliveries(session, _alert(), planned)
    with session_scope(with_event) as session:
        assert list_alerts(session) == []
        assert list_deliveries(session) == []


def test_the_database_refuses_a_second_delivery_row_with_the_same_key(
        with_event: sessionmaker[Session]) -> None:
    with session_scope(with_event) as session:
        (first,) = save_alert_with_deliveries(session, _alert(), [PlannedDelivery("s1", EMAIL)])
    with pytest.raises(IntegrityError):
        with session_scope(with_event) as session:
            session.add(DeliveryRow(
                idempotency_key=first.idempotency_key, alert_identifier="tocsin-0001",
                subscription_id="s9", channel_kind="sms", address="+4100", status="pending",
                attempts=0, status_history=[]))
    with session_scope(with_event) as session:
        assert len(list_deliveries(session)) == 1


def test_delivery_status_history_is_appended_and_each_claim_counts_an_attempt(
        with_event: sessionmaker[Session]) -> None:
    with session_scope(with_event) as session:
        (delivery,) = save_alert_with_deliveries(session, _alert(), [PlannedDelivery("s1", HOOK)])
    key = delivery.idempotency_key
    at = [T0 + timedelta(minutes=m) for m in range(5)]
    with session_scope(with_event) as session:
        first = claim_delivery(session, key, now=at[1], lease_s=60)
        finish_delivery(session, key, DeliveryStatus.PENDING, at=at[2], error="HTTP 503",
                        attempt=first.attempts)
        second = claim_delivery(session, key, now=at[3], lease_s=60)
        finish_delivery(session, key, DeliveryStatus.ACK, at=at[4], receipt="HTTP 200",
                        attempt=second.attempts)
    with session_scope(with_event) as session:
        (stored,) = list_deliveries(session)
        with pytest.raises(StaleClaimError, match="is ack, not being sent"):
            finish_delivery(session, key, DeliveryStatus.ERROR, at=at[4])
        with pytest.raises(RecordNotFoundError, match="no delivery"):
            claim_delivery(session, "0" * 64, now=at[4], lease_s=60) or get_delivery(
                session, "0" * 64)
    assert stored.status is DeliveryStatus.ACK and stored.attempts == 2
    assert [s for s, _ in stored.history] == [
        DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.PENDING,
        DeliveryStatus.SENDING, DeliveryStatus.ACK]


def test_alerts_are_listed_oldest_first_and_by_event(with_event: sessionmaker[Session]) -> None:
    later = _alert("tocsin-0002", msg_type=MsgType.UPDATE, sent=T0 + timedelta(hours=1))
    other = _alert("tocsin-0003", event_id="ev-2", sent=T0 + timedelta(minutes=30))
    with session_scope(with_event) as session:
        for alert in (later, _alert(), other):
            save_alert_with_deliveries(session, alert, [])
    with session_scope(with_event) as session:
        assert [a.identifier for a in list_alerts(session)] == [
            "tocsin-0001", "tocsin-0003", "tocsin-0002"]
        assert list_alerts(session, event_id="ev-1") == [_alert(), later]
        assert list_alerts(session, since=T0 + timedelta(minutes=31)) == [later]
        with pytest.raises(RecordNotFoundError, match="no alert 'nope'"):
            get_alert(session, "nope")


def test_a_naive_time_is_refused(with_event: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="timezone-aware"):
        with session_scope(with_event) as session:
            save_alert_with_deliveries(session, _alert(sent=datetime(2026, 3, 1, 6, 30)), [])
