"""Alert matches: each subscriber an alert matched, with the figures inside its own area.

Revision ID: 0002_alert_matches
Revises: 0001_initial
Create Date: 2026-01-02

Self-contained on purpose (it does not import store.models), like 0001. ``subscription_id``
is not a foreign key, as in ``deliveries``: the record of what an agency was told outlives a
subscription it removes. The same DDL on SQLite and PostgreSQL (no geometry here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_alert_matches"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None

_LEVELS = "('green', 'yellow', 'orange', 'red')"


def upgrade() -> None:
    """Create ``alert_matches`` (primary key: alert identifier x subscription id)."""
    op.create_table(
        "alert_matches",
        sa.Column("alert_identifier", sa.String(200), sa.ForeignKey("alerts.identifier"),
                  nullable=False),
        sa.Column("subscription_id", sa.String(100), nullable=False),
        sa.Column("agency_id", sa.String(100), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("max_class", sa.Integer(), nullable=False),
        sa.Column("exposure", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("alert_identifier", "subscription_id"),
        sa.CheckConstraint(f"level IN {_LEVELS}", name="ck_alert_matches_level"),
        sa.CheckConstraint("max_class >= 0", name="ck_alert_matches_max_class"),
    )
    op.create_index("ix_alert_matches_agency_id", "alert_matches", ["agency_id"])


def downgrade() -> None:
    """Drop ``alert_matches`` (its index goes with it)."""
    op.drop_table("alert_matches")
