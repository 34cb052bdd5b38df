"""Live pipeline: feeds (source state, schedule, health) and feed items; event issue times.

Revision ID: 0004_feeds
Revises: 0003_dispatch
Create Date: 2026-12-01

Self-contained on purpose (it does not import store.models), like 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_feeds"
down_revision: str | None = "0003_dispatch"
branch_labels: str | None = None
depends_on: str | None = None

_ITEM_STATUSES = "('fetched', 'assessing', 'assessed', 'skipped', 'quarantined')"


def _aware() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``feeds`` and ``feed_items``; add ``events.last_issued_at``."""
    op.create_table(
        "feeds",
        sa.Column("feed_id", sa.String(100), primary_key=True),
        sa.Column("config_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("next_poll_at", _aware(), nullable=True),
        sa.Column("lease_until", _aware(), nullable=True),
        sa.Column("last_poll_at", _aware(), nullable=True),
        sa.Column("last_success_at", _aware(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", _aware(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_issued_at", _aware(), nullable=True),
        sa.Column("last_lag_s", sa.Float(), nullable=True),
    )
    op.create_table(
        "feed_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("feed_id", sa.String(100), nullable=False),
        sa.Column("checksum", sa.String(80), nullable=False),
        sa.Column("archive_path", sa.Text(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("original_name", sa.Text(), nullable=False),
        sa.Column("fetched_at", _aware(), nullable=False),
        sa.Column("issued_at", _aware(), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("alert_identifier", sa.String(200), nullable=True),
        sa.Column("decision", sa.String(10), nullable=True),
        sa.Column("assessed_at", _aware(), nullable=True),
        sa.Column("assess_s", sa.Float(), nullable=True),
        sa.UniqueConstraint("feed_id", "checksum", name="uq_feed_items_feed_checksum"),
        sa.CheckConstraint(f"status IN {_ITEM_STATUSES}", name="ck_feed_items_status"),
    )
    op.create_index("ix_feed_items_feed_status", "feed_items", ["feed_id", "status"])
    op.add_column("events", sa.Column("last_issued_at", _aware(), nullable=True))


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_column("events", "last_issued_at")
    op.drop_table("feed_items")
    op.drop_table("feeds")
