"""Load and save functions: rows of :mod:`store.models` to and from core values, explicitly.

Every function takes an open :class:`~sqlalchemy.orm.Session` and never commits: the caller
owns the unit of work (:func:`store.db.session_scope`). Each function that writes does so in a
SAVEPOINT, so a refused request (duplicate, unknown id, immutable alert) leaves nothing of
itself behind and the caller's transaction stays usable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import event, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alerts.errors import SubscriptionError
from alerts.model import Agency, AlertStatus, Subscription, transition
from store import mapping
from store.api_store import alert_index_row
from store.mapping import bbox_columns, delivery_idempotency_key
from store.models import (
    AREA_SRID,
    AgencyRow,
    AlertMatch,
    AlertMatchRow,
    AlertRecord,
    AlertRow,
    DeliveryRecord,
    DeliveryRow,
    DeliveryStatus,
    EventRow,
    IngestRow,
    PlannedDelivery,
    StoredEvent,
    SubscriptionRow,
)

BBox = tuple[float, float, float, float]
"""``(minx, miny, maxx, maxy)`` in EPSG:4326 (lon, lat)."""


class StoreError(Exception):
    """Root of every error raised by the store."""


class RecordNotFoundError(StoreError, LookupError):
    """No stored record has the id asked for."""


class DuplicateRecordError(StoreError, ValueError):
    """A record with the same identity (id, checksum, idempotency key) is already stored."""


class DuplicateSubscriptionError(DuplicateRecordError, SubscriptionError):
    """The agency already has this subscription (same id, or same areas, kinds and channels)."""


class ImmutableAlertError(StoreError, ValueError):
    """A stored alert (a CAP message already produced) may not be changed or saved again."""


@event.listens_for(AlertRow, "before_update")
def _refuse_alert_update(_mapper: Any, _connection: Any, target: AlertRow) -> None:
    """Stored alerts are the record of what was sent: any change is refused at flush."""
    raise ImmutableAlertError(f"alert {target.identifier!r} is stored and immutable")


# --- spatial helpers --------------------------------------------------------------------


def _query_geometry(area: BaseGeometry | tuple[float, float, float, float]) -> BaseGeometry:
    """A spatial query as a valid geometry (a bbox becomes its rectangle).

    Raises:
        ValueError: a bbox that is not ``(minx, miny, maxx, maxy)`` ordered and finite, or an
            empty geometry.
    """
    if isinstance(area, BaseGeometry):
        geometry = area if area.is_valid else shapely.make_valid(area)
    else:
        minx, miny, maxx, maxy = (float(v) for v in area)
        finite = all(math.isfinite(v) for v in (minx, miny, maxx, maxy))
        if not finite or minx > maxx or miny > maxy:
            raise ValueError(f"bbox {tuple(area)}: expected finite (minx, miny, maxx, maxy)")
        geometry = shapely.box(minx, miny, maxx, maxy)
    if geometry.is_empty:
        raise ValueError("spatial query with an empty geometry")
    return geometry


# --- agencies ---------------------------------------------------------------------------


def add_agency(session: Session, agency: Agency) -> None:
    """Store a new agency.

    Raises:
        DuplicateRecordError: an agency with this id exists (nothing is changed).
    """
    if session.get(AgencyRow, agency.agency_id) is not None:
        raise DuplicateRecordError(f"agency {agency.agency_id!r} already exists")
    _insert(session, AgencyRow(agency_id=agency.agency_id, name=agency.name,
                               contact=agency.contact), f"agency {agency.agency_id!r}")


def get_agency(session: Session, agency_id: str) -> Agency:
    """The stored agency ``agency_id``.

    Raises:
        RecordNotFoundError: no such agency.
    """
    row = session.get(AgencyRow, agency_id)
    if row is None:
        raise RecordNotFoundError(f"no agency {agency_id!r}")
    return Agency(agency_id=row.agency_id, name=row.name, contact=row.contact)


def list_agencies(session: Session) -> list[Agency]:
    """Every agency, by id."""
    rows = session.scalars(select(AgencyRow).order_by(AgencyRow.agency_id))
    return [Agency(agency_id=r.agency_id, name=r.name, contact=r.contact) for r in rows]


# --- subscriptions ----------------------------------------------------------------------


def add_subscription(session: Session, subscription: Subscription) -> None:
    """Store a new subscription, its areas unioned and indexed for spatial search.

    A duplicate is a subscription with the same id, or one of the same agency with the same
    areas, zone codes, hazard kinds and channels (it would deliver the same alerts twice).

    Raises:
        SubscriptionError: an area is not a valid lon/lat (multi)polygon in WKT.
        RecordNotFoundError: the agency is not stored.
        DuplicateSubscriptionError: a duplicate exists; nothing is changed.
    """
    sub_id = subscription.subscription_id
    area = mapping.union_of_areas(subscription.areas_wkt, sub_id)
    fingerprint = mapping.subscription_fingerprint(subscription, area)
    if session.get(AgencyRow, subscription.agency_id) is None:
        raise RecordNotFoundError(
            f"subscription {sub_id!r}: no agency {subscription.agency_id!r}; add it first"
        )
    if session.get(SubscriptionRow, sub_id) is not None:
        raise DuplicateSubscriptionError(f"subscription {sub_id!r} already exists")
    twin = subscription_twin(session, subscription.agency_id, fingerprint)
    if twin is not None:
        raise DuplicateSubscriptionError(
            f"subscription {sub_id!r} duplicates {twin!r} of agency {subscription.agency_id!r}"
            " (same areas, zone codes, hazard kinds and channels)"
        )
    row = SubscriptionRow(**mapping.subscription_to_columns(subscription), area=area,
                          **bbox_columns(area), content_sha256=fingerprint)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:  # a concurrent writer got there first
        raise DuplicateSubscriptionError(f"subscription {sub_id!r} already exists") from exc


def subscription_twin(session: Session, agency_id: str, fingerprint: str,
                      other_than: str | None = None) -> str | None:
    """The id of the agency's subscription with this fingerprint (besides ``other_than``)."""
    stmt = select(SubscriptionRow.subscription_id).where(
        SubscriptionRow.agency_id == agency_id, SubscriptionRow.content_sha256 == fingerprint)
    if other_than is not None:
        stmt = stmt.where(SubscriptionRow.subscription_id != other_than)
    return session.scalar(stmt)


def list_subscriptions(session: Session, agency_id: str | None = None) -> list[Subscription]:
    """Every subscription (of one agency when ``agency_id`` is given), by id."""
    stmt = select(SubscriptionRow).order_by(SubscriptionRow.subscription_id)
    if agency_id is not None:
        stmt = stmt.where(SubscriptionRow.agency_id == agency_id)
    return [mapping.subscription_from_row(row) for row in session.scalars(stmt)]


def get_subscription(session: Session, subscription_id: str) -> Subscription:
    """The stored subscription ``subscription_id``.

    Raises:
        RecordNotFoundError: no such subscription.
    """
    row = session.get(SubscriptionRow, subscription_id)
    if row is None:
        raise RecordNotFoundError(f"no subscription {subscription_id!r}")
    return mapping.subscription_from_row(row)


def remove_subscription(
    session: Session, subscription_id: str, *, at: datetime | None = None
) -> Subscription:
    """Delete a subscription and return what it was.

    Its past deliveries stay; those not sent yet (pending, or held for a digest) are failed
    with the reason "subscription removed": an agency that unsubscribed hears no more.

    Raises:
        RecordNotFoundError: no such subscription.
    """
    removed = get_subscription(session, subscription_id)
    with session.begin_nested():
        session.delete(session.get(SubscriptionRow, subscription_id))
        unsent = session.scalars(select(DeliveryRow).where(
            DeliveryRow.subscription_id == subscription_id,
            DeliveryRow.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.HELD.value])))
        for row in unsent:
            when = at or row.created_at or row.not_before
            row.status = DeliveryStatus.ERROR.value
            row.last_error = "subscription removed before it was sent"
            if when is not None:
                row.status_history = [*row.status_history, mapping.history_entry(
                    DeliveryStatus.ERROR, when, row.last_error)]
    return removed


def subscriptions_intersecting(
    session: Session, area: BaseGeometry | BBox
) -> list[Subscription]:
    """Subscriptions whose area polygons intersect ``area`` (touching counts), by id.

    PostGIS answers with ``ST_Intersects`` on the GiST-indexed column; elsewhere the indexed
    bounding-box columns select candidates and shapely tests them exactly. Both use GEOS
    predicates on the same WKB, so they give the same answer. Subscriptions by zone code only
    have no area and are never returned here.

    Args:
        session: open session.
        area: a shapely geometry in EPSG:4326 (lon, lat), or a bbox ``(minx, miny, maxx,
            maxy)``. An invalid geometry is repaired (``make_valid``) first.

    Raises:
        ValueError: the bbox is not ordered, or the geometry is empty.
    """
    query = _query_geometry(area)
    if session.get_bind().dialect.name == "postgresql":
        wkb = shapely.to_wkb(query, hex=False)
        stmt = select(SubscriptionRow).where(
            func.ST_Intersects(SubscriptionRow.area, func.ST_GeomFromWKB(wkb, AREA_SRID))
        )
        rows = list(session.scalars(stmt))
    else:
        rows = _bbox_candidates(session, query)
        if rows:
            shapely.prepare(query)
            hits = shapely.intersects(query, [row.area for row in rows])
            rows = [row for row, hit in zip(rows, hits, strict=True) if hit]
    rows.sort(key=lambda row: row.subscription_id)
    return [mapping.subscription_from_row(row) for row in rows]


def _bbox_candidates(session: Session, query: BaseGeometry) -> list[SubscriptionRow]:
    """Rows whose bounding box meets the query's (closed intervals, as intersects is)."""
    minx, miny, maxx, maxy = query.bounds
    stmt = select(SubscriptionRow).where(
        SubscriptionRow.minx <= maxx, SubscriptionRow.maxx >= minx,
        SubscriptionRow.miny <= maxy, SubscriptionRow.maxy >= miny,
    )
    return list(session.scalars(stmt))


# --- ingests and events -----------------------------------------------------------------


def record_ingest(
    session: Session,
    checksum: str,
    source: str,
    fetched_at: datetime,
    issued_at: datetime | None = None,
) -> bool:
    """Record that a feed file was ingested; False when these bytes were ingested before.

    Args:
        session: open session.
        checksum: ``sha256:<hex>`` of the file's bytes.
        source: the file path or URL.
        fetched_at: when it was fetched (timezone-aware).
        issued_at: when its producer issued it, if known.

    Raises:
        ValueError: the checksum is empty.
    """
    if not checksum:
        raise ValueError(f"ingest of {source!r}: empty checksum")
    if session.scalar(select(IngestRow.id).where(IngestRow.checksum == checksum)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(IngestRow(checksum=checksum, source=source, fetched_at=fetched_at,
                                  issued_at=issued_at))
    except IntegrityError:  # the same file ingested concurrently
        return False
    return True


def save_event(session: Session, stored: StoredEvent) -> None:
    """Insert or update an event; a status change must follow the alert lifecycle.

    Raises:
        alerts.errors.InvalidTransition: the status change is not allowed (e.g. out of
            cancelled), or a status is cleared.
    """
    row = session.get(EventRow, stored.event_id)
    if row is not None and row.status is not None and row.status != stored.status:
        if stored.status is None:
            transition(AlertStatus(row.status), AlertStatus.ISSUED)  # raises: not allowed
        else:
            transition(AlertStatus(row.status), stored.status)
    columns = mapping.event_to_columns(stored)
    with session.begin_nested():
        if row is None:
            session.add(EventRow(**columns))
        else:
            for name, value in columns.items():
                setattr(row, name, value)


def get_event(session: Session, event_id: str) -> StoredEvent:
    """The stored event ``event_id``.

    Raises:
        RecordNotFoundError: no such event.
    """
    row = session.get(EventRow, event_id)
    if row is None:
        raise RecordNotFoundError(f"no event {event_id!r}")
    return mapping.event_from_row(row)


def open_events(session: Session, kind: str, since: datetime) -> list[StoredEvent]:
    """Events of ``kind`` seen at or after ``since`` and not cancelled or expired.

    These are the candidates a new feed run of the same hazard may continue.
    """
    final = [AlertStatus.CANCELLED.value, AlertStatus.EXPIRED.value]
    stmt = (
        select(EventRow)
        .where(EventRow.kind == kind, EventRow.last_seen >= since,
               or_(EventRow.status.is_(None), EventRow.status.not_in(final)))
        .order_by(EventRow.first_seen, EventRow.event_id)
    )
    return [mapping.event_from_row(row) for row in session.scalars(stmt)]


# --- alerts and deliveries --------------------------------------------------------------


def save_alert_with_deliveries(
    session: Session, alert: AlertRecord, deliveries: Sequence[PlannedDelivery]
) -> list[DeliveryRecord]:
    """Store a CAP message and its outbox rows together (one SAVEPOINT: all or nothing).

    Each delivery starts ``pending`` with one history entry at the alert's ``sent`` time.

    Raises:
        ImmutableAlertError: an alert with this identifier is already stored.
        RecordNotFoundError: the alert's event is not stored.
        DuplicateRecordError: two planned deliveries have the same idempotency key.
    """
    ident = alert.identifier
    if session.scalar(select(AlertRow.id).where(AlertRow.identifier == ident)) is not None:
        raise ImmutableAlertError(f"alert {ident!r} is already stored; stored alerts are "
                                  "immutable (issue an Update with a new identifier)")
    event_row = session.get(EventRow, alert.event_id)
    if event_row is None:
        raise RecordNotFoundError(f"alert {ident!r}: no event {alert.event_id!r}; save it first")
    records = [_new_delivery(alert, planned) for planned in deliveries]
    keys = [record.idempotency_key for record in records]
    if len(set(keys)) != len(keys):
        raise DuplicateRecordError(f"alert {ident!r}: the same subscription and channel "
                                   "address are planned twice")
    rows: list[Any] = [AlertRow(**mapping.alert_to_columns(alert)),
                       alert_index_row(alert, event_row.kind, event_row.footprint)]
    rows += [DeliveryRow(**mapping.delivery_to_columns(record)) for record in records]
    try:
        with session.begin_nested():
            session.add_all(rows)
    except IntegrityError as exc:
        raise DuplicateRecordError(f"alert {ident!r} or one of its deliveries is already "
                                   f"stored: {exc.orig}") from exc
    return records


def _new_delivery(alert: AlertRecord, planned: PlannedDelivery) -> DeliveryRecord:
    """A pending delivery of ``alert`` as planned."""
    key = delivery_idempotency_key(alert.identifier, planned.subscription_id, planned.channel)
    return DeliveryRecord(
        idempotency_key=key, alert_identifier=alert.identifier,
        subscription_id=planned.subscription_id, channel=planned.channel,
        status=planned.status, attempts=0, history=((planned.status, alert.sent),),
        agency_id=planned.agency_id, level=alert.level, language=planned.language,
        created_at=alert.sent, not_before=planned.not_before, last_error=planned.reason,
    )


def get_alert(session: Session, identifier: str) -> AlertRecord:
    """The stored alert, its CAP bytes exactly as produced.

    Raises:
        RecordNotFoundError: no such alert.
    """
    row = session.scalar(select(AlertRow).where(AlertRow.identifier == identifier))
    if row is None:
        raise RecordNotFoundError(f"no alert {identifier!r}")
    return mapping.alert_from_row(row)


def list_alerts(
    session: Session, event_id: str | None = None, since: datetime | None = None
) -> list[AlertRecord]:
    """Stored alerts (of one event, sent at or after ``since``), oldest first."""
    stmt = select(AlertRow).order_by(AlertRow.sent, AlertRow.identifier)
    if event_id is not None:
        stmt = stmt.where(AlertRow.event_id == event_id)
    if since is not None:
        stmt = stmt.where(AlertRow.sent >= since)
    return [mapping.alert_from_row(row) for row in session.scalars(stmt)]


def list_deliveries(
    session: Session, alert_identifier: str | None = None
) -> list[DeliveryRecord]:
    """Outbox rows (of one alert), in the order they were written."""
    stmt = select(DeliveryRow).order_by(DeliveryRow.id)
    if alert_identifier is not None:
        stmt = stmt.where(DeliveryRow.alert_identifier == alert_identifier)
    return [mapping.delivery_from_row(row) for row in session.scalars(stmt)]


# --- alert matches ----------------------------------------------------------------------


def save_matches(session: Session, matches: Sequence[AlertMatch]) -> None:
    """Store which subscribers each alert matched, with the figures inside their own areas.

    All or nothing, in one SAVEPOINT. The subscription is not checked against the stored
    ones: a match records what was decided, even for a subscription removed since.

    Raises:
        ValueError: a match's ``max_class`` is not a non-negative integer.
        RecordNotFoundError: a match names an alert that is not stored (nothing is written).
        DuplicateRecordError: an alert x subscription pair is given twice, or is already
            stored (nothing is written).
    """
    if not matches:
        return
    pairs = [(m.alert_identifier, m.subscription_id) for m in matches]
    for match in matches:
        if isinstance(match.max_class, bool) or not isinstance(match.max_class, int) \
                or match.max_class < 0:
            raise ValueError(f"match of alert {match.alert_identifier!r} and subscription "
                             f"{match.subscription_id!r}: max_class {match.max_class!r}, "
                             "expected an integer >= 0")
    idents = sorted({ident for ident, _ in pairs})
    found = set(session.scalars(select(AlertRow.identifier)
                                .where(AlertRow.identifier.in_(idents))))
    missing = [ident for ident in idents if ident not in found]
    if missing:
        raise RecordNotFoundError(f"matches name alerts that are not stored: {missing}; "
                                  "save the alert first")
    twice = sorted({pair for pair in pairs if pairs.count(pair) > 1})
    stored = sorted(tuple(row) for row in session.execute(
        select(AlertMatchRow.alert_identifier, AlertMatchRow.subscription_id)
        .where(tuple_(AlertMatchRow.alert_identifier, AlertMatchRow.subscription_id)
               .in_(pairs))))
    if twice or stored:
        given = f"given twice: {twice}" if twice else f"already stored: {stored}"
        raise DuplicateRecordError(f"alert x subscription matches {given}")
    try:
        with session.begin_nested():
            session.add_all([AlertMatchRow(**mapping.match_to_columns(m)) for m in matches])
    except IntegrityError as exc:  # a concurrent writer stored one first
        raise DuplicateRecordError(f"an alert x subscription match is already stored: "
                                   f"{exc.orig}") from exc


def list_matches(
    session: Session, *, alert_identifier: str | None = None, agency_id: str | None = None
) -> list[AlertMatch]:
    """Stored matches (of one alert, of one agency): oldest alert first, then by subscription."""
    stmt = (
        select(AlertMatchRow)
        .join(AlertRow, AlertRow.identifier == AlertMatchRow.alert_identifier)
        .order_by(AlertRow.sent, AlertRow.identifier, AlertMatchRow.subscription_id)
    )
    if alert_identifier is not None:
        stmt = stmt.where(AlertMatchRow.alert_identifier == alert_identifier)
    if agency_id is not None:
        stmt = stmt.where(AlertMatchRow.agency_id == agency_id)
    return [mapping.match_from_row(row) for row in session.scalars(stmt)]


def _insert(session: Session, row: Any, what: str) -> None:
    """Add one row in a SAVEPOINT; a unique-constraint race becomes DuplicateRecordError."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        raise DuplicateRecordError(f"{what} already exists") from exc
