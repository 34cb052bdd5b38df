"""The outbox as the source of truth of dispatch: claims, outcomes, due work, digests, acks.

Brokers lose messages (a serverless transport loses those a killed worker had taken, and any
broker may be restarted), so nothing here trusts them: a delivery is claimed in the database
with a lease (a conditional UPDATE that only one worker can win), and whatever is still
pending or whose lease ran out is found again by :func:`due_deliveries` and re-driven.

Like :mod:`store.repo`, every function takes an open session and never commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from alerts.model import ChannelAddress, ChannelKind, Level
from store import mapping
from store.models import (
    AcknowledgementRow,
    AlertRow,
    DeliveryRecord,
    DeliveryRow,
    DeliveryStatus,
)
from store.repo import RecordNotFoundError

_LEVEL_RANK = case(
    {"red": 3, "orange": 2, "yellow": 1, "green": 0}, value=DeliveryRow.level, else_=0
)


def _row(session: Session, key: str) -> DeliveryRow:
    row = session.scalar(select(DeliveryRow).where(DeliveryRow.idempotency_key == key))
    if row is None:
        raise RecordNotFoundError(f"no delivery with idempotency key {key!r}")
    return row


def get_delivery(session: Session, key: str) -> DeliveryRecord:
    """The delivery with idempotency key ``key``.

    Raises:
        RecordNotFoundError: no such delivery.
    """
    return mapping.delivery_from_row(_row(session, key))


def _append(row: DeliveryRow, status: DeliveryStatus, at: datetime, note: str | None) -> None:
    row.status = status.value
    row.status_history = [*row.status_history, mapping.history_entry(status, at, note)]


def claim_delivery(
    session: Session, key: str, *, now: datetime, lease_s: float
) -> DeliveryRecord | None:
    """Take a delivery for sending, or None when it is not due or another worker holds it.

    One conditional UPDATE decides: a pending delivery whose ``not_before`` has passed, or a
    sending one whose lease ran out (its worker died), becomes ``sending`` with a new lease
    and one more attempt. Two workers racing for the same row: exactly one wins.

    Args:
        session: open session (the claim is final when the caller commits).
        key: the delivery's idempotency key.
        now: the current time.
        lease_s: how long the claim holds; longer than any one send may take.
    """
    due = or_(
        and_(DeliveryRow.status == DeliveryStatus.PENDING.value,
             or_(DeliveryRow.not_before.is_(None), DeliveryRow.not_before <= now)),
        and_(DeliveryRow.status == DeliveryStatus.SENDING.value,
             or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now)),
    )
    result = session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.idempotency_key == key, due)
        .values(status=DeliveryStatus.SENDING.value, attempts=DeliveryRow.attempts + 1,
                lease_until=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = _row(session, key)
    session.refresh(row)
    row.status_history = [*row.status_history, mapping.history_entry(
        DeliveryStatus.SENDING, now, f"attempt {row.attempts}")]
    session.flush()
    return mapping.delivery_from_row(row)


def finish_delivery(
    session: Session,
    key: str,
    status: DeliveryStatus,
    *,
    at: datetime,
    receipt: str | None = None,
    error: str | None = None,
    not_before: datetime | None = None,
) -> DeliveryRecord:
    """Record the outcome of an attempt: ``ack`` (delivered), ``error`` (final), or ``pending``.

    Args:
        session: open session.
        key: the delivery's idempotency key.
        status: the outcome.
        at: when it happened.
        receipt: the receiver's answer (delivered).
        error: why it failed (kept as ``last_error`` and in the history).
        not_before: for ``pending``: when to try again.

    Raises:
        RecordNotFoundError: no such delivery.
        ValueError: the delivery is already final, or ``status`` is not an outcome.
    """
    if status not in (DeliveryStatus.ACK, DeliveryStatus.ERROR, DeliveryStatus.PENDING):
        raise ValueError(f"{status.value} is not the outcome of an attempt")
    row = _row(session, key)
    if DeliveryStatus(row.status).is_final:
        raise ValueError(f"delivery {key!r} is already {row.status}; its status is final")
    _append(row, status, at, error or receipt)
    row.lease_until = None
    row.not_before = not_before if status is DeliveryStatus.PENDING else row.not_before
    row.receipt = receipt if receipt is not None else row.receipt
    row.last_error = error if error is not None else row.last_error
    session.flush()
    return mapping.delivery_from_row(row)


def defer_delivery(
    session: Session, key: str, *, until: datetime, at: datetime, reason: str
) -> None:
    """Push a pending delivery's next attempt back without counting an attempt."""
    row = _row(session, key)
    if row.status != DeliveryStatus.PENDING.value:
        return
    row.not_before = until
    row.last_error = reason
    session.flush()


def due_deliveries(session: Session, *, now: datetime, limit: int = 1000) -> list[DeliveryRecord]:
    """Deliveries to (re)drive now: pending and due, or sending with a lapsed lease.

    Highest level first, then oldest first, so a backlog drains in priority order.
    """
    stmt = (
        select(DeliveryRow)
        .where(or_(
            and_(DeliveryRow.status == DeliveryStatus.PENDING.value,
                 or_(DeliveryRow.not_before.is_(None), DeliveryRow.not_before <= now)),
            and_(DeliveryRow.status == DeliveryStatus.SENDING.value,
                 DeliveryRow.lease_until < now),
        ))
        .order_by(_LEVEL_RANK.desc(), DeliveryRow.created_at, DeliveryRow.id)
        .limit(limit)
    )
    return [mapping.delivery_from_row(row) for row in session.scalars(stmt)]


def earlier_unfinished(session: Session, record: DeliveryRecord) -> DeliveryRecord | None:
    """An earlier message of the same event to the same subscriber and channel, not final.

    An Update or Cancel must not overtake the message it follows on a channel.
    """
    alert = session.scalar(select(AlertRow).where(AlertRow.identifier ==
                                                  record.alert_identifier))
    if alert is None:
        return None
    stmt = (
        select(DeliveryRow)
        .join(AlertRow, AlertRow.identifier == DeliveryRow.alert_identifier)
        .where(AlertRow.event_id == alert.event_id, AlertRow.sent < alert.sent,
               DeliveryRow.subscription_id == record.subscription_id,
               DeliveryRow.channel_kind == record.channel.kind.value,
               DeliveryRow.address == record.channel.address,
               DeliveryRow.kind == "alert",
               DeliveryRow.status.in_([DeliveryStatus.PENDING.value,
                                       DeliveryStatus.SENDING.value,
                                       DeliveryStatus.HELD.value]))
        .order_by(AlertRow.sent)
        .limit(1)
    )
    row = session.scalar(stmt)
    return None if row is None else mapping.delivery_from_row(row)


def list_outbox(
    session: Session,
    *,
    statuses: Sequence[DeliveryStatus] = (),
    agency_id: str | None = None,
    alert_identifier: str | None = None,
    limit: int = 200,
) -> list[DeliveryRecord]:
    """Deliveries filtered by status, agency and alert; newest first."""
    stmt = select(DeliveryRow).order_by(DeliveryRow.id.desc()).limit(limit)
    if statuses:
        stmt = stmt.where(DeliveryRow.status.in_([s.value for s in statuses]))
    if agency_id is not None:
        stmt = stmt.where(DeliveryRow.agency_id == agency_id)
    if alert_identifier is not None:
        stmt = stmt.where(DeliveryRow.alert_identifier == alert_identifier)
    return [mapping.delivery_from_row(row) for row in session.scalars(stmt)]


def count_by_status(session: Session) -> dict[DeliveryStatus, int]:
    """How many deliveries are in each status."""
    rows = session.execute(select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status))
    return {DeliveryStatus(status): int(n) for status, n in rows}


def redrive_failed(
    session: Session, keys: Sequence[str], *, at: datetime, by: str
) -> list[str]:
    """Put failed deliveries back to pending (an operator fixed the cause); their keys.

    Deliveries that are not in ``error`` are left alone and not returned.
    """
    done = []
    for key in keys:
        row = _row(session, key)
        if row.status != DeliveryStatus.ERROR.value:
            continue
        _append(row, DeliveryStatus.PENDING, at, f"re-driven by {by}")
        row.not_before = None
        row.lease_until = None
        done.append(key)
    session.flush()
    return done


# --- digests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldGroup:
    """Held deliveries of one subscriber on one channel: the content of its next digest."""

    subscription_id: str
    channel: ChannelAddress
    agency_id: str | None
    language: str | None
    keys: tuple[str, ...]
    oldest: datetime


def held_groups(session: Session) -> list[HeldGroup]:
    """Every subscriber x channel with deliveries held for a digest, oldest first inside."""
    stmt = (
        select(DeliveryRow)
        .where(DeliveryRow.status == DeliveryStatus.HELD.value)
        .order_by(DeliveryRow.created_at, DeliveryRow.id)
    )
    groups: dict[tuple[str, str, str], list[DeliveryRow]] = {}
    for row in session.scalars(stmt):
        groups.setdefault((row.subscription_id, row.channel_kind, row.address), []).append(row)
    return [
        HeldGroup(sub, ChannelAddress(ChannelKind(kind), address), rows[0].agency_id,
                  rows[0].language, tuple(r.idempotency_key for r in rows),
                  min(_created(r) for r in rows))
        for (sub, kind, address), rows in groups.items()
    ]


def _created(row: DeliveryRow) -> datetime:
    """When a delivery was created (rows from before 0003 carry it in their first entry)."""
    if row.created_at is not None:
        return row.created_at
    return datetime.fromisoformat(row.status_history[0]["at"])


def digest_key(group: HeldGroup) -> str:
    """Deterministic key of the digest carrying ``group``'s deliveries."""
    parts = ("digest", group.subscription_id, group.channel.kind.value, group.channel.address,
             *sorted(group.keys))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def create_digest(
    session: Session, group: HeldGroup, *, at: datetime, not_before: datetime | None = None
) -> DeliveryRecord:
    """Turn held deliveries into one digest delivery (pending); members become ``digested``.

    The digest row names the newest alert it carries as its ``alert_identifier`` and lists
    every member's key in ``items``. All or nothing with the caller's transaction.
    """
    rows = [_row(session, key) for key in group.keys]
    key = digest_key(group)
    newest = max(rows, key=lambda r: (r.created_at, r.id))
    top = max((Level(r.level or "green") for r in rows), key=lambda level: level.rank)
    digest = DeliveryRow(
        idempotency_key=key, alert_identifier=newest.alert_identifier,
        subscription_id=group.subscription_id, channel_kind=group.channel.kind.value,
        address=group.channel.address, status=DeliveryStatus.PENDING.value, attempts=0,
        status_history=[mapping.history_entry(DeliveryStatus.PENDING, at,
                                              f"digest of {len(rows)} alerts")],
        kind="digest", agency_id=group.agency_id, level=top.value, language=group.language,
        created_at=at, not_before=not_before, items=list(group.keys), escalation_step=0,
    )
    session.add(digest)
    for row in rows:
        _append(row, DeliveryStatus.DIGESTED, at, f"carried by digest {key[:12]}")
        row.digest_key = key
    session.flush()
    return mapping.delivery_from_row(digest)


def settle_digest_members(session: Session, digest: DeliveryRecord, *, at: datetime) -> None:
    """Members of a digest that failed for good are failed too, with the digest's reason."""
    for key in digest.items:
        row = _row(session, key)
        if row.status == DeliveryStatus.DIGESTED.value and digest.status is DeliveryStatus.ERROR:
            _append(row, DeliveryStatus.ERROR, at, f"its digest failed: {digest.last_error}")
            row.last_error = digest.last_error
    session.flush()


# --- escalation and acknowledgement ---------------------------------------------------


def add_escalation(
    session: Session,
    *,
    alert_identifier: str,
    subscription_id: str,
    agency_id: str,
    language: str | None,
    level: Level,
    step: int,
    channel: ChannelAddress,
    at: datetime,
) -> DeliveryRecord | None:
    """Create escalation delivery ``step`` of an alert to a subscriber; None if it exists.

    The key is the ordinary delivery key of that alert, subscriber and channel: a channel
    that already carried the alert is not used twice.
    """
    key = mapping.delivery_idempotency_key(alert_identifier, subscription_id, channel)
    if session.scalar(select(DeliveryRow.id).where(DeliveryRow.idempotency_key == key)):
        return None
    row = DeliveryRow(
        idempotency_key=key, alert_identifier=alert_identifier,
        subscription_id=subscription_id, channel_kind=channel.kind.value,
        address=channel.address, status=DeliveryStatus.PENDING.value, attempts=0,
        status_history=[mapping.history_entry(
            DeliveryStatus.PENDING, at, f"escalation step {step}: not acknowledged")],
        kind="escalation", agency_id=agency_id, level=level.value, language=language,
        created_at=at, escalation_step=step,
    )
    session.add(row)
    session.flush()
    return mapping.delivery_from_row(row)


def escalation_steps_done(session: Session, alert_identifier: str, subscription_id: str) -> int:
    """The highest escalation step an alert already reached for one subscriber (0: none)."""
    return int(session.scalar(select(func.max(DeliveryRow.escalation_step)).where(
        DeliveryRow.alert_identifier == alert_identifier,
        DeliveryRow.subscription_id == subscription_id,
        DeliveryRow.kind == "escalation")) or 0)


def escalation_candidates(session: Session, *, now: datetime) -> list[tuple[str, str, str]]:
    """Live red Alerts and Updates delivered to subscribers: those that may need escalating.

    Returns:
        ``(alert identifier, subscription id, event id)`` triples.
    """
    stmt = (
        select(AlertRow.identifier, DeliveryRow.subscription_id, AlertRow.event_id)
        .join(DeliveryRow, DeliveryRow.alert_identifier == AlertRow.identifier)
        .where(AlertRow.level == Level.RED.value, AlertRow.msg_type != "Cancel",
               AlertRow.expires > now, DeliveryRow.kind == "alert",
               DeliveryRow.agency_id.is_not(None))
        .distinct()
    )
    return [(a, s, e) for a, s, e in session.execute(stmt)]


def acknowledge(
    session: Session, alert_identifier: str, agency_id: str, *, at: datetime, by: str
) -> bool:
    """Record that an agency acknowledged an alert; False when it already had.

    Raises:
        RecordNotFoundError: no such alert.
    """
    alert = session.scalar(select(AlertRow).where(AlertRow.identifier == alert_identifier))
    if alert is None:
        raise RecordNotFoundError(f"no alert {alert_identifier!r}")
    if session.get(AcknowledgementRow, (alert_identifier, agency_id)) is not None:
        return False
    with session.begin_nested():
        session.add(AcknowledgementRow(alert_identifier=alert_identifier, agency_id=agency_id,
                                       event_id=alert.event_id, acknowledged_at=at,
                                       acknowledged_by=by))
    return True


def event_acknowledged(session: Session, event_id: str, agency_id: str) -> bool:
    """Whether the agency acknowledged any message of the event (that stops escalation)."""
    return session.scalar(select(AcknowledgementRow.alert_identifier).where(
        AcknowledgementRow.event_id == event_id,
        AcknowledgementRow.agency_id == agency_id).limit(1)) is not None
