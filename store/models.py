"""Tables of the store, one schema for SQLite and PostgreSQL + PostGIS.

Geometry columns are PostGIS ``Geometry(MULTIPOLYGON, 4326)`` with a GiST index on
PostgreSQL; on SQLite the same column holds the geometry as WKB (exact doubles, unlike WKT
text) and the row also carries its bounding box (``minx, miny, maxx, maxy``, indexed) so a
spatial query filters on the box first and tests the few candidates exactly with shapely.

These classes are persistence details: the rest of Tocsin sees the values of
:mod:`alerts.model` (and the few store records below, for what the core has no type for),
never rows; :mod:`store.mapping` converts explicitly, field by field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import shapely
from geoalchemy2 import Geometry
from geoalchemy2.elements import WKBElement
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from alerts.model import (
    AlertStatus,
    ChannelAddress,
    ExposureSummary,
    Level,
    MsgType,
    Priority,
)
from alerts.text import MessageText

AREA_SRID = 4326
"""Every stored geometry is lon/lat on WGS 84 (EPSG:4326), as GeoJSON and CAP use."""

LEVEL_VALUES = ("green", "yellow", "orange", "red")
DELIVERY_STATUS_VALUES = ("pending", "sending", "ack", "error", "held", "digested",
                          "superseded")
DELIVERY_KIND_VALUES = ("alert", "digest", "escalation")


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL text of a CHECK that ``column`` is one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AreaGeometry(TypeDecorator[BaseGeometry]):
    """A (multi)polygon in EPSG:4326: PostGIS geometry on PostgreSQL, WKB bytes elsewhere.

    Python side it is a shapely geometry; a Polygon is stored as a one-part MultiPolygon so the
    PostGIS column type (MULTIPOLYGON) holds every value.
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """PostGIS geometry on PostgreSQL, plain bytes (WKB) on every other back end."""
        if dialect.name == "postgresql":
            # The GiST index is created by the migration, not by GeoAlchemy2's DDL hooks.
            return dialect.type_descriptor(
                Geometry("MULTIPOLYGON", srid=AREA_SRID, spatial_index=False)
            )
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: BaseGeometry | None, dialect: Dialect) -> Any:
        """Shapely (multi)polygon to WKB (wrapped with its SRID for PostGIS)."""
        if value is None:
            return None
        multi = as_multipolygon(value)
        wkb = shapely.to_wkb(multi, hex=False)
        if dialect.name == "postgresql":
            return WKBElement(wkb, srid=AREA_SRID)
        return wkb

    def process_result_value(self, value: Any, dialect: Dialect) -> BaseGeometry | None:
        """WKB (or GeoAlchemy2's WKB element) back to a shapely MultiPolygon."""
        if value is None:
            return None
        if isinstance(value, WKBElement):
            value = value.data
        if isinstance(value, str):  # hex EWKB, as some drivers return it
            return shapely.from_wkb(bytes.fromhex(value))
        return shapely.from_wkb(bytes(value))


def as_multipolygon(geometry: BaseGeometry) -> MultiPolygon:
    """Return ``geometry`` as a MultiPolygon.

    Raises:
        TypeError: the geometry is neither a Polygon nor a MultiPolygon.
    """
    if isinstance(geometry, MultiPolygon):
        return geometry
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry])
    raise TypeError(f"expected a Polygon or MultiPolygon, got a {geometry.geom_type}")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant stored in UTC on every back end (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive times (they would be read back in an unknown zone); store UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware datetime in UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class AgencyRow(Base):
    """One emergency agency."""

    __tablename__ = "agencies"

    agency_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    contact: Mapped[str | None] = mapped_column(String(300))


class SubscriptionRow(Base):
    """One subscription; ``areas_wkt`` is what the agency gave, ``area`` its union for search."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("agency_id", "content_sha256", name="uq_subscriptions_content"),
        Index("ix_subscriptions_bbox", "minx", "miny", "maxx", "maxy"),
        Index("ix_subscriptions_area_gist", "area", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
        CheckConstraint(_in("min_level", LEVEL_VALUES), name="ck_subscriptions_min_level"),
    )

    subscription_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.agency_id"), index=True)
    areas_wkt: Mapped[list[str]] = mapped_column(JSON)
    area: Mapped[BaseGeometry | None] = mapped_column(AreaGeometry)
    minx: Mapped[float | None] = mapped_column(Float)
    miny: Mapped[float | None] = mapped_column(Float)
    maxx: Mapped[float | None] = mapped_column(Float)
    maxy: Mapped[float | None] = mapped_column(Float)
    zone_codes: Mapped[list[str]] = mapped_column(JSON)
    hazard_kinds: Mapped[list[str]] = mapped_column(JSON)
    min_level: Mapped[str] = mapped_column(String(10))
    channels: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    languages: Mapped[list[str]] = mapped_column(JSON)
    quiet_hours: Mapped[dict[str, str] | None] = mapped_column(JSON)
    digest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))
    escalation: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    escalate_after_min: Mapped[float | None] = mapped_column(Float)


class EventRow(Base):
    """One hazard event, followed across successive feed runs."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_kind_last_seen", "kind", "last_seen"),
        Index("ix_events_bbox", "minx", "miny", "maxx", "maxy"),
        Index("ix_events_footprint_gist", "footprint", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    source_event_id: Mapped[str | None] = mapped_column(String(200), index=True)
    footprint: Mapped[BaseGeometry | None] = mapped_column(AreaGeometry)
    minx: Mapped[float | None] = mapped_column(Float)
    miny: Mapped[float | None] = mapped_column(Float)
    maxx: Mapped[float | None] = mapped_column(Float)
    maxy: Mapped[float | None] = mapped_column(Float)
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str | None] = mapped_column(String(20))
    last_level: Mapped[str | None] = mapped_column(String(10))
    last_exposure: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_checksum: Mapped[str | None] = mapped_column(String(80))
    # Issue time of the latest feed run assessed: an older run arriving later is skipped.
    last_issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AlertRow(Base):
    """One CAP message as sent: immutable once written (the repo and a trigger refuse updates)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in("level", LEVEL_VALUES), name="ck_alerts_level"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    identifier: Mapped[str] = mapped_column(String(200), unique=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.event_id"), index=True)
    sender: Mapped[str] = mapped_column(String(200))
    msg_type: Mapped[str] = mapped_column(String(10))
    level: Mapped[str] = mapped_column(String(10))
    priority: Mapped[dict[str, Any]] = mapped_column(JSON)
    sent: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)
    cap_bytes: Mapped[bytes] = mapped_column(LargeBinary)
    cap_sha256: Mapped[str] = mapped_column(String(64))
    # The text variants per language (SMS, short, full) the channels send, fixed with the
    # CAP bytes when the alert is stored, so a retry months later sends the same words.
    texts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class IngestRow(Base):
    """One feed file ingested; the checksum makes re-ingesting the same bytes detectable."""

    __tablename__ = "ingests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checksum: Mapped[str] = mapped_column(String(80), unique=True)
    source: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeliveryRow(Base):
    """The outbox: one alert x subscription x channel, with a deterministic idempotency key.

    ``subscription_id`` is deliberately not a foreign key: the delivery history must outlive
    a subscription the agency later removes. A worker claims a row by moving it to
    ``sending`` with ``lease_until``; a claim whose lease ran out (the worker died) may be
    taken again. ``not_before`` holds a row back (retry backoff, quiet hours).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUS_VALUES), name="ck_deliveries_status"),
        CheckConstraint(_in("kind", DELIVERY_KIND_VALUES), name="ck_deliveries_kind"),
        Index("ix_deliveries_due", "status", "not_before"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    alert_identifier: Mapped[str] = mapped_column(
        ForeignKey("alerts.identifier"), index=True
    )
    subscription_id: Mapped[str] = mapped_column(String(100), index=True)
    channel_kind: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    status_history: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(12), server_default="alert")
    agency_id: Mapped[str | None] = mapped_column(String(100), index=True)
    level: Mapped[str | None] = mapped_column(String(10))
    language: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    receipt: Mapped[str | None] = mapped_column(Text)
    items: Mapped[list[str] | None] = mapped_column(JSON)
    digest_key: Mapped[str | None] = mapped_column(String(64), index=True)
    escalation_step: Mapped[int] = mapped_column(Integer, server_default="0")


class AcknowledgementRow(Base):
    """An agency saying it has seen an alert: stops the escalation of its event."""

    __tablename__ = "acknowledgements"

    alert_identifier: Mapped[str] = mapped_column(
        ForeignKey("alerts.identifier"), primary_key=True
    )
    agency_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), index=True)
    acknowledged_at: Mapped[datetime] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str] = mapped_column(String(300))



class AlertMatchRow(Base):
    """One subscription an alert matched, with the figures inside that subscriber's area.

    ``subscription_id`` is deliberately not a foreign key, as in ``deliveries``: what an
    agency was told must outlive a subscription it later removes.
    """

    __tablename__ = "alert_matches"
    __table_args__ = (
        CheckConstraint(_in("level", LEVEL_VALUES), name="ck_alert_matches_level"),
        CheckConstraint("max_class >= 0", name="ck_alert_matches_max_class"),
    )

    alert_identifier: Mapped[str] = mapped_column(
        ForeignKey("alerts.identifier"), primary_key=True
    )
    subscription_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(100), index=True)
    level: Mapped[str] = mapped_column(String(10))
    max_class: Mapped[int] = mapped_column(Integer)
    exposure: Mapped[dict[str, Any]] = mapped_column(JSON)

# --- Store records: values the core has no type for --------------------------------------


class DeliveryStatus(StrEnum):
    """Where one delivery of the outbox is."""

    PENDING = "pending"
    SENDING = "sending"
    ACK = "ack"
    ERROR = "error"
    HELD = "held"
    DIGESTED = "digested"
    SUPERSEDED = "superseded"

    @property
    def is_final(self) -> bool:
        """Delivered, failed for good, carried by a digest, or replaced by a later message."""
        return self in (DeliveryStatus.ACK, DeliveryStatus.ERROR, DeliveryStatus.DIGESTED,
                        DeliveryStatus.SUPERSEDED)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A hazard event followed across feed runs.

    Attributes:
        event_id: Tocsin's stable event id.
        kind: hazard kind value.
        source_event_id: the producer's event id, when the feed has one.
        footprint: the latest footprint (Polygon or MultiPolygon, EPSG:4326), if any.
        first_seen: first feed run that showed it.
        last_seen: latest feed run that showed it.
        status: lifecycle of its alert; None while no alert was issued.
        last_level: level of the latest assessment.
        last_exposure: figures of the latest assessment (material-change checks).
        last_checksum: checksum of the latest feed file.
        last_issued_at: issue time of the latest feed run assessed for it.
    """

    event_id: str
    kind: str
    first_seen: datetime
    last_seen: datetime
    source_event_id: str | None = None
    footprint: BaseGeometry | None = None
    status: AlertStatus | None = None
    last_level: Level | None = None
    last_exposure: ExposureSummary | None = None
    last_checksum: str | None = None
    last_issued_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One CAP message as produced: the exact bytes and what they were decided from."""

    identifier: str
    event_id: str
    sender: str
    msg_type: MsgType
    priority: Priority
    sent: datetime
    expires: datetime
    cap_bytes: bytes
    texts: tuple[MessageText, ...] = ()

    @property
    def level(self) -> Level:
        """The level of the message (its priority's)."""
        return self.priority.level

    @property
    def cap_sha256(self) -> str:
        """Hex SHA-256 of the CAP bytes."""
        return hashlib.sha256(self.cap_bytes).hexdigest()


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """A delivery to create with its alert: which subscription, on which channel, and when.

    Attributes:
        subscription_id: the subscription matched.
        channel: where to deliver.
        agency_id: the agency owning the subscription.
        language: the language of the text sent.
        status: ``pending`` (send when due) or ``held`` (waits for the subscriber's digest).
        not_before: not sent before this time (quiet hours); None: at once.
        reason: why it is held or deferred, for the history.
    """

    subscription_id: str
    channel: ChannelAddress
    agency_id: str | None = None
    language: str | None = None
    status: DeliveryStatus = DeliveryStatus.PENDING
    not_before: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One row of the outbox, with its append-only status history ``((status, at), ...)``.

    Attributes:
        kind: ``alert``; ``digest`` (carries the held deliveries ``items``); ``escalation``.
        level: the alert's level (a digest: the highest it carries); orders the queues.
        not_before: earliest time of the next attempt.
        lease_until: while ``sending``: when the claim runs out and another worker may
            take the delivery again.
        last_error: the reason of the latest failure.
        receipt: what the receiver answered when it was delivered.
        items: for a digest, the idempotency keys of the deliveries it carries.
        digest_key: for a delivery carried by a digest, that digest's key.
        escalation_step: 0, or the step of the escalation chain this delivery is.
    """

    idempotency_key: str
    alert_identifier: str
    subscription_id: str
    channel: ChannelAddress
    status: DeliveryStatus
    attempts: int
    history: tuple[tuple[DeliveryStatus, datetime], ...]
    kind: str = "alert"
    agency_id: str | None = None
    level: Level | None = None
    language: str | None = None
    created_at: datetime | None = None
    not_before: datetime | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    receipt: str | None = None
    items: tuple[str, ...] = ()
    digest_key: str | None = None
    escalation_step: int = 0


@dataclass(frozen=True, slots=True)
class AlertMatch:
    """What one alert meant for one subscriber: the event seen through its own area.

    Attributes:
        alert_identifier: the CAP identifier of the stored alert.
        subscription_id: the subscription matched (kept after the subscription is removed).
        agency_id: the agency owning that subscription.
        level: the event's level when it was matched.
        max_class: highest severity class inside the subscriber's area (0 when none).
        exposure: the exposure figures inside the subscriber's area (not the event total).
    """

    alert_identifier: str
    subscription_id: str
    agency_id: str
    level: Level
    max_class: int
    exposure: ExposureSummary


# The live pipeline's tables share this Base; imported here so that every table is known
# whenever the models are (migrations, schema comparisons).
from store import api_models as _api_models  # noqa: E402, F401
from store import feed_models as _feed_models  # noqa: E402, F401
