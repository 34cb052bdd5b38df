"""HTTP API: API keys (hashed), the alert search index, analysts' overlay jobs.

Revision ID: 0005_api
Revises: 0004_feeds
Create Date: 2026-12-01

Self-contained on purpose (it does not import store.models), like 0001. Alerts stored
before this revision are indexed from their event (hazard kind, footprint bounding box).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_api"
down_revision: str | None = "0004_feeds"
branch_labels: str | None = None
depends_on: str | None = None


def _aware() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``api_keys``, ``alert_index`` (filled from stored alerts) and ``overlay_jobs``."""
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("agency_id", sa.String(100), nullable=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", _aware(), nullable=False),
        sa.Column("expires_at", _aware(), nullable=True),
        sa.Column("revoked_at", _aware(), nullable=True),
        sa.CheckConstraint("role IN ('agency', 'admin')", name="ck_api_keys_role"),
        sa.CheckConstraint("role = 'admin' OR agency_id IS NOT NULL", name="ck_api_keys_agency"),
    )
    op.create_index("ix_api_keys_agency_id", "api_keys", ["agency_id"])
    op.create_table(
        "alert_index",
        sa.Column("identifier", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("hazard_kind", sa.String(50), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("msg_type", sa.String(10), nullable=False),
        sa.Column("sent", _aware(), nullable=False),
        sa.Column("expires", _aware(), nullable=False),
        sa.Column("minx", sa.Float(), nullable=True),
        sa.Column("miny", sa.Float(), nullable=True),
        sa.Column("maxx", sa.Float(), nullable=True),
        sa.Column("maxy", sa.Float(), nullable=True),
    )
    op.create_index("ix_alert_index_sent", "alert_index", ["sent", "identifier"])
    op.create_index("ix_alert_index_bbox", "alert_index", ["minx", "maxx", "miny", "maxy"])
    op.create_index("ix_alert_index_event_id", "alert_index", ["event_id"])
    op.create_index("ix_alert_index_hazard_kind", "alert_index", ["hazard_kind"])
    op.create_index("ix_alert_matches_agency_alert", "alert_matches",
                    ["agency_id", "alert_identifier"])
    op.execute(
        "INSERT INTO alert_index (identifier, event_id, hazard_kind, level, msg_type, sent, "
        "expires, minx, miny, maxx, maxy) "
        "SELECT a.identifier, a.event_id, e.kind, a.level, a.msg_type, a.sent, a.expires, "
        "e.minx, e.miny, e.maxx, e.maxy FROM alerts a JOIN events e ON e.event_id = a.event_id"
    )
    op.create_table(
        "overlay_jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False),
        sa.Column("agency_id", sa.String(100), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False, server_default="0"),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("hazard_path", sa.Text(), nullable=False),
        sa.Column("hazard_name", sa.Text(), nullable=False),
        sa.Column("region", sa.String(100), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", _aware(), nullable=False),
        sa.Column("started_at", _aware(), nullable=True),
        sa.Column("finished_at", _aware(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')",
                           name="ck_overlay_jobs_status"),
    )
    op.create_index("ix_overlay_jobs_owner_key_id", "overlay_jobs", ["owner_key_id"])
    op.create_index("ix_overlay_jobs_agency_id", "overlay_jobs", ["agency_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_table("overlay_jobs")
    op.drop_table("alert_index")
    op.drop_index("ix_alert_matches_agency_alert", table_name="alert_matches")
    op.drop_table("api_keys")
