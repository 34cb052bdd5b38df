"""The outbox as the source of truth of dispatch: claims, outcomes, due work, re-drives.

Brokers lose messages (a serverless transport loses those a killed worker had taken, and any
broker may be restarted), so nothing here trusts them: deliveries are claimed in the
database with a lease (one conditional UPDATE for a whole batch: a row goes to exactly one
worker), an outcome is recorded only by the claim that is still current, and whatever is
still pending or whose lease ran out is found again by :func:`due_deliveries` and re-driven.
Digests, escalations and acknowledgements are in :mod:`store.outbox_rules`.

Like :mod:`store.repo`, every function takes an open session and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from store import mapping
from store.models import AlertRow, DeliveryRecord, DeliveryRow, DeliveryStatus
from store.repo import RecordNotFoundError, StoreError

_LEVEL_RANK = case(
    {"red": 3, "orange": 2, "yellow": 1, "green": 0}, value=DeliveryRow.level, else_=0
)
_PENDING, _SENDING = DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value


class StaleClaimError(StoreError):
    """An outcome came from a claim that is no longer current; it is not recorded.

    Its lease lapsed and another worker claimed the delivery, or the delivery is final.
    """


def _due(now: object) -> object:
    """Pending and due, or sending with a lapsed (or missing) lease."""
    return or_(
        and_(DeliveryRow.status == _PENDING,
             or_(DeliveryRow.not_before.is_(None), DeliveryRow.not_before <= now)),
        and_(DeliveryRow.status == _SENDING,
             or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now)),
    )


# The statements of the hot path, built once with bound parameters: building a SQLAlchemy
# statement costs more CPU than running it.
_BY_KEY = select(DeliveryRow).where(DeliveryRow.idempotency_key == bindparam("key"))
_FINISH = (
    update(DeliveryRow)
    .where(DeliveryRow.idempotency_key == bindparam("key"),
           DeliveryRow.status == _SENDING,
           DeliveryRow.attempts == bindparam("claimed_attempts"))
    .values(status=bindparam("new_status"),
            status_history=bindparam("new_history", type_=DeliveryRow.status_history.type),
            lease_until=None,
            not_before=bindparam("new_not_before", type_=DeliveryRow.not_before.type),
            receipt=bindparam("new_receipt"), last_error=bindparam("new_error"),
            delivered_at=bindparam("new_delivered_at", type_=DeliveryRow.delivered_at.type))
    .execution_options(synchronize_session=False)
)
_THIS_ALERT = aliased(AlertRow)  # the delivery's own alert, joined in: one round trip
_EARLIER = (
    select(DeliveryRow)
    .join(AlertRow, AlertRow.identifier == DeliveryRow.alert_identifier)
    .join(_THIS_ALERT, _THIS_ALERT.identifier == bindparam("alert_identifier"))
    .where(AlertRow.event_id == _THIS_ALERT.event_id, AlertRow.sent < _THIS_ALERT.sent,
           DeliveryRow.subscription_id == bindparam("subscription_id"),
           DeliveryRow.channel_kind == bindparam("channel_kind"),
           DeliveryRow.address == bindparam("address"),
           DeliveryRow.kind == "alert",
           DeliveryRow.status.in_([_PENDING, _SENDING, DeliveryStatus.HELD.value,
                                   DeliveryStatus.DIGESTED.value]))
    .order_by(AlertRow.sent)
)


def _row(session: Session, key: str) -> DeliveryRow:
    row = session.scalar(_BY_KEY, {"key": key})
    if row is None:
        raise RecordNotFoundError(f"no delivery with idempotency key {key!r}")
    return row


def get_delivery(session: Session, key: str) -> DeliveryRecord:
    """The delivery with idempotency key ``key``.

    Raises:
        RecordNotFoundError: no such delivery.
    """
    return mapping.delivery_from_row(_row(session, key))


def get_deliveries(session: Session, keys: Sequence[str]) -> dict[str, DeliveryRecord]:
    """The deliveries with these keys (missing keys are left out), by key."""
    if not keys:
        return {}
    rows = session.scalars(select(DeliveryRow).where(DeliveryRow.idempotency_key.in_(keys)))
    return {row.idempotency_key: mapping.delivery_from_row(row) for row in rows}


def append_status(row: DeliveryRow, status: DeliveryStatus, at: datetime,
                  note: str | None) -> None:
    """Move a row to ``status`` and append that to its history (the caller flushes)."""
    row.status = status.value
    row.status_history = [*row.status_history, mapping.history_entry(status, at, note)]


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery taken for sending.

    Attributes:
        record: the row as claimed (status sending, attempts counting this one).
        claimed_at: when it was claimed (written to the history with the outcome).
        lapsed: the previous attempt's worker stopped without recording an outcome.
        history: the stored history entries (with their notes) at the claim.
    """

    record: DeliveryRecord
    claimed_at: datetime
    lapsed: bool
    history: tuple[dict[str, str], ...] = ()


def claim_batch(
    session: Session,
    keys: Sequence[str],
    *,
    now: datetime,
    lease_s: float,
    previous: Mapping[str, DeliveryStatus] | None = None,
) -> list[Claim]:
    """Take every due delivery among ``keys`` for sending, in one statement.

    A pending delivery whose ``not_before`` has passed, or a sending one whose lease ran out
    (its worker died), becomes ``sending`` with a new lease and one more attempt. Keys that
    are not due, final, or held by another worker are left out. Two workers racing for the
    same rows: each row goes to exactly one of them.

    Args:
        session: open session (the claim is final when the caller commits).
        keys: idempotency keys to claim.
        now: the current time.
        lease_s: how long the claim holds; longer than any one send may take.
        previous: the statuses the caller read just before (saves reading them here); a
            delivery that was ``sending`` is a lapsed claim.
    """
    if not keys:
        return []
    if previous is None:
        previous = {key: record.status for key, record in get_deliveries(session, keys).items()}
    stmt = (
        update(DeliveryRow)
        .where(DeliveryRow.idempotency_key.in_(list(keys)), _due(now))
        .values(status=_SENDING, attempts=DeliveryRow.attempts + 1,
                lease_until=now + timedelta(seconds=lease_s))
        .returning(DeliveryRow)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    rows = list(session.scalars(stmt))
    # The "sending" entry is written with the outcome (one statement per row fewer); a claim
    # taken from a row that was sending is an attempt whose worker never recorded it.
    return [Claim(mapping.delivery_from_row(row), now,
                  previous.get(row.idempotency_key) is DeliveryStatus.SENDING,
                  tuple(row.status_history)) for row in rows]


def claim_delivery(
    session: Session, key: str, *, now: datetime, lease_s: float
) -> DeliveryRecord | None:
    """Claim one delivery (see :func:`claim_batch`); None when it is not due or taken."""
    claims = claim_batch(session, [key], now=now, lease_s=lease_s)
    return claims[0].record if claims else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed delivery.

    Attributes:
        claim: the claim it answers.
        status: ``ack``, ``error`` or ``superseded`` (final), or ``pending`` (retry at
            ``not_before``).
        at: when.
        receipt: the receiver's answer (delivered).
        error: why it failed.
        not_before: for ``pending``: when to try again.
    """

    claim: Claim
    status: DeliveryStatus
    at: datetime
    receipt: str | None = None
    error: str | None = None
    not_before: datetime | None = None


def finish_batch(session: Session, outcomes: Sequence[Outcome]) -> list[str]:
    """Record outcomes of claims; the keys whose claim was no longer current (not recorded).

    Each outcome is written only if the delivery is still ``sending`` under the same attempt
    it was claimed with: a worker whose lease lapsed cannot overwrite what the worker that
    claimed the delivery after it recorded.
    """
    stale = []
    for outcome in outcomes:
        if outcome.status not in (DeliveryStatus.ACK, DeliveryStatus.ERROR,
                                  DeliveryStatus.PENDING, DeliveryStatus.SUPERSEDED):
            raise ValueError(f"{outcome.status.value} is not the outcome of an attempt")
        record = outcome.claim.record
        attempt_note = f"attempt {record.attempts}"
        if outcome.claim.lapsed:
            attempt_note += " (the worker of the previous attempt stopped)"
        history = [*outcome.claim.history,
                   mapping.history_entry(DeliveryStatus.SENDING, outcome.claim.claimed_at,
                                         attempt_note),
                   mapping.history_entry(outcome.status, outcome.at,
                                         outcome.error or outcome.receipt)]
        result = session.execute(_FINISH, {
            "key": record.idempotency_key, "claimed_attempts": record.attempts,
            "new_status": outcome.status.value, "new_history": history,
            "new_not_before": outcome.not_before if outcome.status is DeliveryStatus.PENDING
            else record.not_before,
            "new_receipt": outcome.receipt if outcome.receipt is not None else record.receipt,
            "new_error": outcome.error if outcome.error is not None else record.last_error,
            "new_delivered_at": outcome.at if outcome.status is DeliveryStatus.ACK else None,
        })
        if result.rowcount != 1:  # type: ignore[attr-defined]
            stale.append(record.idempotency_key)
    return stale


def finish_delivery(
    session: Session,
    key: str,
    status: DeliveryStatus,
    *,
    at: datetime,
    receipt: str | None = None,
    error: str | None = None,
    not_before: datetime | None = None,
    attempt: int | None = None,
) -> DeliveryRecord:
    """Record the outcome of one attempt (see :func:`finish_batch`).

    Args:
        session: open session.
        key: the delivery's idempotency key.
        status: ``ack``, ``error`` or ``pending``.
        at: when it happened.
        receipt: the receiver's answer.
        error: why it failed.
        not_before: for ``pending``: when to try again.
        attempt: the attempt number of the claim (default: the current one).

    Raises:
        RecordNotFoundError: no such delivery.
        StaleClaimError: the delivery is final, not being sent, or claimed again since.
    """
    row = _row(session, key)
    record = mapping.delivery_from_row(row)
    if record.status is not DeliveryStatus.SENDING:
        raise StaleClaimError(f"delivery {key!r} is {record.status.value}, not being sent; "
                              "its outcome is not recorded")
    # The claim's own "sending" entry is written with the outcome; drop nothing stored.
    claim = Claim(record, at, False, tuple(row.status_history))
    if attempt is not None and attempt != record.attempts:
        raise StaleClaimError(f"delivery {key!r} was claimed again (attempt "
                              f"{record.attempts}); attempt {attempt} is not recorded")
    if finish_batch(session, [Outcome(claim, status, at, receipt, error, not_before)]):
        raise StaleClaimError(f"delivery {key!r} changed while its outcome was recorded")
    session.expire_all()
    return get_delivery(session, key)


def defer_delivery(session: Session, key: str, *, until: datetime, reason: str) -> None:
    """Push a pending delivery's next attempt back without counting an attempt."""
    row = _row(session, key)
    if row.status != _PENDING:
        return
    row.not_before = until
    row.last_error = reason
    session.flush()


def mark_superseded(session: Session, key: str, *, by: str, at: datetime) -> bool:
    """Close a delivery not sent yet because a later message of its event replaces it.

    Returns:
        True when it was pending or held (now ``superseded``); False otherwise.
    """
    row = _row(session, key)
    if row.status not in (_PENDING, DeliveryStatus.HELD.value, DeliveryStatus.DIGESTED.value):
        return False
    append_status(row, DeliveryStatus.SUPERSEDED, at, f"replaced by {by} before it was sent")
    row.not_before = None
    session.flush()
    return True


def due_deliveries(
    session: Session, *, now: datetime, limit: int = 1000, enqueue_every_s: float | None = None
) -> list[DeliveryRecord]:
    """Deliveries to (re)drive now: pending and due, or sending with a lapsed lease.

    Highest level first, then oldest first, so a backlog drains in priority order.

    Args:
        session: open session.
        now: the current time.
        limit: most deliveries returned.
        enqueue_every_s: when given, the rows are being handed to a broker: rows handed over
            less than this long ago are left out (their message is still queued) and the
            rows returned are marked as handed over now.
    """
    stmt = (
        select(DeliveryRow).where(_due(now))
        .order_by(_LEVEL_RANK.desc(), DeliveryRow.created_at, DeliveryRow.id)
        .limit(limit)
    )
    if enqueue_every_s is not None:
        recent = now - timedelta(seconds=enqueue_every_s)
        stmt = stmt.where(or_(DeliveryRow.enqueued_at.is_(None),
                              DeliveryRow.enqueued_at < recent))
    rows = list(session.scalars(stmt))
    if enqueue_every_s is not None and rows:
        mark_enqueued(session, [row.idempotency_key for row in rows], at=now)
    return [mapping.delivery_from_row(row) for row in rows]


def mark_enqueued(session: Session, keys: Sequence[str], *, at: datetime) -> None:
    """Record that these deliveries were handed to the broker at ``at``."""
    if keys:
        session.execute(update(DeliveryRow).where(DeliveryRow.idempotency_key.in_(list(keys)))
                        .values(enqueued_at=at).execution_options(synchronize_session=False))


def earlier_unfinished(session: Session, record: DeliveryRecord) -> list[DeliveryRecord]:
    """Earlier messages of the same event to the same subscriber and channel, not final.

    An Update or a Cancel must not overtake the message it follows on a channel; one carried
    by a digest counts until its digest is sent. Oldest first.
    """
    rows = session.scalars(_EARLIER, {
        "alert_identifier": record.alert_identifier, "subscription_id": record.subscription_id,
        "channel_kind": record.channel.kind.value, "address": record.channel.address})
    return [mapping.delivery_from_row(row) for row in rows]


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

    A delivery that failed because its digest failed is re-driven through that digest, not
    on its own (it would otherwise arrive twice); a re-driven digest takes its members back.
    Deliveries that are not in ``error`` are left alone and not returned.
    """
    done = []
    for key in dict.fromkeys(keys):
        row = _row(session, key)
        if row.status != DeliveryStatus.ERROR.value:
            continue
        if row.digest_key is not None:
            digest = _row(session, row.digest_key)
            if digest.status == DeliveryStatus.ERROR.value and digest.idempotency_key not in done:
                done += redrive_failed(session, [digest.idempotency_key], at=at, by=by)
            continue
        append_status(row, DeliveryStatus.PENDING, at,
                      f"re-driven by {by} after {row.attempts} attempts")
        row.not_before = row.lease_until = row.enqueued_at = None
        row.attempts = 0  # a fresh set of attempts; the history keeps the earlier ones
        done.append(key)
        for member_key in row.items or ():
            member = _row(session, member_key)
            if member.status == DeliveryStatus.ERROR.value:
                append_status(member, DeliveryStatus.DIGESTED, at,
                              f"its digest {key[:12]} re-driven by {by}")
    session.flush()
    return done
