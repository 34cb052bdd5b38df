"""Outbox rows made by rules rather than by an alert: digests and escalations; acknowledgements.

Several sweepers may run at once (two beat processes, a manual ``tocsin dispatch`` beside the
workers), so every row made here is made race-safe: the members of a digest are taken with
one conditional UPDATE (held to digested) and an insert that loses a race is rolled back in
its SAVEPOINT, never crashing the sweep.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alerts.model import ChannelAddress, ChannelKind, Level, MsgType
from store import mapping
from store.models import (
    AcknowledgementRow,
    AlertRow,
    DeliveryRecord,
    DeliveryRow,
    DeliveryStatus,
)
from store.outbox import append_status
from store.repo import RecordNotFoundError

_HELD, _DIGESTED = DeliveryStatus.HELD.value, DeliveryStatus.DIGESTED.value


class _LostRace(Exception):
    """Another sweeper took these rows first (rolls the SAVEPOINT back)."""


@dataclass(frozen=True, slots=True)
class HeldGroup:
    """Held deliveries of one subscriber on one channel: the content of its next digest."""

    subscription_id: str
    channel: ChannelAddress
    agency_id: str | None
    language: str | None
    keys: tuple[str, ...]
    oldest: datetime
    top_level: Level


def held_groups(session: Session) -> list[HeldGroup]:
    """Every subscriber x channel with deliveries held for a digest, oldest first inside."""
    stmt = (
        select(DeliveryRow)
        .where(DeliveryRow.status == _HELD)
        .order_by(DeliveryRow.created_at, DeliveryRow.id)
    )
    groups: dict[tuple[str, str, str], list[DeliveryRow]] = {}
    for row in session.scalars(stmt):
        groups.setdefault((row.subscription_id, row.channel_kind, row.address), []).append(row)
    return [
        HeldGroup(sub, ChannelAddress(ChannelKind(kind), address), rows[0].agency_id,
                  rows[0].language, tuple(r.idempotency_key for r in rows),
                  min(_created(r) for r in rows),
                  max((Level(r.level or "green") for r in rows), key=lambda lv: lv.rank))
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
) -> DeliveryRecord | None:
    """Turn held deliveries into one digest delivery (pending); members become ``digested``.

    The digest row names the newest alert it carries as its ``alert_identifier`` and lists
    every member's key in ``items``.

    Returns:
        The digest, or None when another sweeper took some of the members first (nothing
        is changed then; the next sweep sees the rest).
    """
    key = digest_key(group)
    try:
        with session.begin_nested():
            taken = session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.idempotency_key.in_(group.keys), DeliveryRow.status == _HELD)
                .values(status=_DIGESTED, digest_key=key)
                .execution_options(synchronize_session=False))
            if taken.rowcount != len(group.keys):  # type: ignore[attr-defined]
                raise _LostRace
            rows = list(session.scalars(
                select(DeliveryRow).where(DeliveryRow.idempotency_key.in_(group.keys))
                .execution_options(populate_existing=True)))
            newest = max(rows, key=lambda r: (_created(r), r.id))
            for row in rows:
                row.status_history = [*row.status_history, mapping.history_entry(
                    DeliveryStatus.DIGESTED, at, f"carried by digest {key[:12]}")]
            digest = DeliveryRow(
                idempotency_key=key, alert_identifier=newest.alert_identifier,
                subscription_id=group.subscription_id, channel_kind=group.channel.kind.value,
                address=group.channel.address, status=DeliveryStatus.PENDING.value,
                attempts=0, status_history=[mapping.history_entry(
                    DeliveryStatus.PENDING, at, f"digest of {len(rows)} alerts")],
                kind="digest", agency_id=group.agency_id, level=group.top_level.value,
                language=group.language, created_at=at, not_before=not_before,
                items=list(group.keys), escalation_step=0,
            )
            session.add(digest)
            session.flush()
    except (_LostRace, IntegrityError):
        return None
    return mapping.delivery_from_row(digest)


def settle_digest_members(session: Session, digest: DeliveryRecord, *, at: datetime) -> None:
    """Members of a digest that failed for good are failed too, with the digest's reason."""
    if digest.status is not DeliveryStatus.ERROR:
        return
    rows = session.scalars(select(DeliveryRow).where(
        DeliveryRow.idempotency_key.in_(digest.items), DeliveryRow.status == _DIGESTED))
    for row in rows:
        append_status(row, DeliveryStatus.ERROR, at, f"its digest failed: {digest.last_error}")
        row.last_error = digest.last_error
    session.flush()


# --- escalation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EscalationCandidate:
    """An event whose latest message is red and live, seen by one subscriber.

    Attributes:
        event_id: the event.
        subscription_id: a subscriber that received one of its messages.
        latest_identifier: the event's latest message (what an escalation sends).
        red_since: when the event's first red message was sent (steps count from it).
        steps_done: the highest escalation step already made (0: none).
    """

    event_id: str
    subscription_id: str
    latest_identifier: str
    red_since: datetime
    steps_done: int


def escalation_candidates(session: Session, *, now: datetime) -> list[EscalationCandidate]:
    """Events whose latest message is a live red Alert or Update, per subscriber reached.

    An event whose latest message is a Cancel (or below red, or expired) never escalates;
    an Update does not start a chain of its own: steps count per event and subscriber.
    """
    latest_sent = (select(AlertRow.event_id, func.max(AlertRow.sent).label("sent"))
                   .group_by(AlertRow.event_id).subquery())
    latest = session.execute(
        select(AlertRow.event_id, AlertRow.identifier)
        .join(latest_sent, (latest_sent.c.event_id == AlertRow.event_id)
              & (latest_sent.c.sent == AlertRow.sent))
        .where(AlertRow.level == Level.RED.value, AlertRow.msg_type != MsgType.CANCEL.value,
               AlertRow.expires > now)).all()
    found = []
    for event_id, identifier in latest:
        red_since = session.scalar(select(func.min(AlertRow.sent)).where(
            AlertRow.event_id == event_id, AlertRow.level == Level.RED.value))
        reached = session.execute(
            select(DeliveryRow.subscription_id, func.max(DeliveryRow.escalation_step))
            .join(AlertRow, AlertRow.identifier == DeliveryRow.alert_identifier)
            .where(AlertRow.event_id == event_id, DeliveryRow.agency_id.is_not(None),
                   DeliveryRow.kind.in_(("alert", "escalation")))
            .group_by(DeliveryRow.subscription_id)).all()
        found += [EscalationCandidate(event_id, sub, identifier, red_since, int(step or 0))
                  for sub, step in reached]
    return found


def escalation_key(event_id: str, subscription_id: str, step: int) -> str:
    """Deterministic key of escalation ``step`` of an event to one subscriber."""
    parts = ("escalation", event_id, subscription_id, str(step))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def add_escalation(
    session: Session,
    candidate: EscalationCandidate,
    *,
    agency_id: str,
    language: str | None,
    step: int,
    channel: ChannelAddress,
    at: datetime,
) -> DeliveryRecord | None:
    """Create escalation ``step`` of an event to a subscriber; None if it already exists."""
    row = DeliveryRow(
        idempotency_key=escalation_key(candidate.event_id, candidate.subscription_id, step),
        alert_identifier=candidate.latest_identifier,
        subscription_id=candidate.subscription_id, channel_kind=channel.kind.value,
        address=channel.address, status=DeliveryStatus.PENDING.value, attempts=0,
        status_history=[mapping.history_entry(
            DeliveryStatus.PENDING, at, f"escalation step {step}: not acknowledged")],
        kind="escalation", agency_id=agency_id, level=Level.RED.value, language=language,
        created_at=at, escalation_step=step,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # another sweeper made this step first
        return None
    return mapping.delivery_from_row(row)


# --- acknowledgement ---------------------------------------------------------------------


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
    try:
        with session.begin_nested():
            session.add(AcknowledgementRow(alert_identifier=alert_identifier,
                                           agency_id=agency_id, event_id=alert.event_id,
                                           acknowledged_at=at, acknowledged_by=by))
    except IntegrityError:  # acknowledged at the same moment elsewhere
        return False
    return True


def event_acknowledged(session: Session, event_id: str, agency_id: str) -> bool:
    """Whether the agency acknowledged any message of the event (that stops escalation)."""
    return session.scalar(select(AcknowledgementRow.alert_identifier).where(
        AcknowledgementRow.event_id == event_id,
        AcknowledgementRow.agency_id == agency_id).limit(1)) is not None
