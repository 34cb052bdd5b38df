"""Initial schema: agencies, subscriptions, events, alerts, ingests, deliveries.

Revision ID: 0001_initial
Revises:
Create Date: 2026-01-01

Self-contained on purpose (it does not import store.models): later model changes must not
change what this revision did. Geometry columns are PostGIS MULTIPOLYGON/4326 with a GiST
index on PostgreSQL and WKB bytes plus indexed bounding-box columns elsewhere.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_LEVELS = "('green', 'yellow', 'orange', 'red')"
_DELIVERY_STATUSES = "('pending', 'sending', 'ack', 'error')"

_PG_IMMUTABLE_FUNCTION = """
CREATE FUNCTION tocsin_alerts_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alert % is immutable: its identifier and CAP bytes cannot change',
        OLD.identifier;
END
$$
"""
_PG_IMMUTABLE_TRIGGER = """
CREATE TRIGGER alerts_immutable BEFORE UPDATE OF identifier, cap_bytes, cap_sha256
ON alerts FOR EACH ROW EXECUTE FUNCTION tocsin_alerts_immutable()
"""
_SQLITE_IMMUTABLE_TRIGGER = """
CREATE TRIGGER alerts_immutable BEFORE UPDATE OF identifier, cap_bytes, cap_sha256 ON alerts
BEGIN
    SELECT RAISE(ABORT, 'alerts are immutable: identifier and CAP bytes cannot change');
END
"""


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _geometry_type() -> sa.types.TypeEngine:
    """PostGIS MULTIPOLYGON in EPSG:4326, or WKB bytes where there is no PostGIS."""
    if _is_postgresql():
        return Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)
    return sa.LargeBinary()


def _bbox_columns() -> list[sa.Column]:
    return [sa.Column(name, sa.Float(), nullable=True) for name in ("minx", "miny", "maxx", "maxy")]


def _spatial_index(table: str, column: str) -> None:
    """GiST index on PostGIS; elsewhere the bbox-column index does the filtering."""
    if _is_postgresql():
        op.create_index(f"ix_{table}_{column}_gist", table, [column], postgresql_using="gist")


def _create_agencies_and_subscriptions() -> None:
    op.create_table(
        "agencies",
        sa.Column("agency_id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("contact", sa.String(300), nullable=True),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(100), primary_key=True),
        sa.Column("agency_id", sa.String(100), sa.ForeignKey("agencies.agency_id"),
                  nullable=False),
        sa.Column("areas_wkt", sa.JSON(), nullable=False),
        sa.Column("area", _geometry_type(), nullable=True),
        *_bbox_columns(),
        sa.Column("zone_codes", sa.JSON(), nullable=False),
        sa.Column("hazard_kinds", sa.JSON(), nullable=False),
        sa.Column("min_level", sa.String(10), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("quiet_hours", sa.JSON(), nullable=True),
        sa.Column("digest", sa.JSON(), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("agency_id", "content_sha256", name="uq_subscriptions_content"),
        sa.CheckConstraint(f"min_level IN {_LEVELS}", name="ck_subscriptions_min_level"),
    )
    op.create_index("ix_subscriptions_agency_id", "subscriptions", ["agency_id"])
    op.create_index("ix_subscriptions_bbox", "subscriptions", ["minx", "miny", "maxx", "maxy"])
    _spatial_index("subscriptions", "area")


def _create_events_and_alerts() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("source_event_id", sa.String(200), nullable=True),
        sa.Column("footprint", _geometry_type(), nullable=True),
        *_bbox_columns(),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=True),
        sa.Column("last_level", sa.String(10), nullable=True),
        sa.Column("last_exposure", sa.JSON(), nullable=True),
        sa.Column("last_checksum", sa.String(80), nullable=True),
    )
    op.create_index("ix_events_source_event_id", "events", ["source_event_id"])
    op.create_index("ix_events_kind_last_seen", "events", ["kind", "last_seen"])
    op.create_index("ix_events_bbox", "events", ["minx", "miny", "maxx", "maxy"])
    _spatial_index("events", "footprint")
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("identifier", sa.String(200), nullable=False, unique=True),
        sa.Column("event_id", sa.String(100), sa.ForeignKey("events.event_id"),
                  nullable=False),
        sa.Column("sender", sa.String(200), nullable=False),
        sa.Column("msg_type", sa.String(10), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("priority", sa.JSON(), nullable=False),
        sa.Column("sent", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cap_bytes", sa.LargeBinary(), nullable=False),
        sa.Column("cap_sha256", sa.String(64), nullable=False),
        sa.CheckConstraint(f"level IN {_LEVELS}", name="ck_alerts_level"),
    )
    op.create_index("ix_alerts_event_id", "alerts", ["event_id"])
    op.create_index("ix_alerts_sent", "alerts", ["sent"])
    if _is_postgresql():
        op.execute(_PG_IMMUTABLE_FUNCTION)
        op.execute(_PG_IMMUTABLE_TRIGGER)
    else:
        op.execute(_SQLITE_IMMUTABLE_TRIGGER)


def _create_ingests_and_deliveries() -> None:
    op.create_table(
        "ingests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("checksum", sa.String(80), nullable=False, unique=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("alert_identifier", sa.String(200), sa.ForeignKey("alerts.identifier"),
                  nullable=False),
        sa.Column("subscription_id", sa.String(100), nullable=False),
        sa.Column("channel_kind", sa.String(20), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_history", sa.JSON(), nullable=False),
        sa.CheckConstraint(f"status IN {_DELIVERY_STATUSES}", name="ck_deliveries_status"),
    )
    op.create_index("ix_deliveries_alert_identifier", "deliveries", ["alert_identifier"])
    op.create_index("ix_deliveries_subscription_id", "deliveries", ["subscription_id"])
    op.create_index("ix_deliveries_status", "deliveries", ["status"])


def upgrade() -> None:
    """Create every table from an empty database."""
    if _is_postgresql():
        # Needs the PostGIS package on the server; a no-op where the extension exists.
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    _create_agencies_and_subscriptions()
    _create_events_and_alerts()
    _create_ingests_and_deliveries()


def downgrade() -> None:
    """Drop every table (and the PostgreSQL trigger function)."""
    for table in ("deliveries", "ingests", "alerts", "events", "subscriptions", "agencies"):
        op.drop_table(table)
    if _is_postgresql():
        op.execute("DROP FUNCTION IF EXISTS tocsin_alerts_immutable()")
