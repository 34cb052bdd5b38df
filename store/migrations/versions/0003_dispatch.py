"""Dispatch: outbox columns for claims, backoff, digests and escalation; acknowledgements.

Revision ID: 0003_dispatch
Revises: 0002_alert_matches
Create Date: 2026-12-01

Self-contained on purpose (it does not import store.models), like 0001. SQLite cannot alter a
CHECK constraint in place, so ``deliveries`` is changed in batch mode (Alembic copies the
table); PostgreSQL alters it directly. Existing deliveries keep their rows: their level and
agency are filled in from their alert and subscription where those are known.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_dispatch"
down_revision: str | None = "0002_alert_matches"
branch_labels: str | None = None
depends_on: str | None = None

_OLD_STATUSES = "('pending', 'sending', 'ack', 'error')"
_STATUSES = "('pending', 'sending', 'ack', 'error', 'held', 'digested', 'superseded')"
_KINDS = "('alert', 'digest', 'escalation')"


def _aware() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the dispatch columns, the acknowledgements table and the alert texts."""
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("ck_deliveries_status", type_="check")
        batch.add_column(sa.Column("kind", sa.String(12), nullable=False,
                                   server_default="alert"))
        batch.add_column(sa.Column("agency_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("level", sa.String(10), nullable=True))
        batch.add_column(sa.Column("language", sa.String(20), nullable=True))
        batch.add_column(sa.Column("created_at", _aware(), nullable=True))
        batch.add_column(sa.Column("not_before", _aware(), nullable=True))
        batch.add_column(sa.Column("lease_until", _aware(), nullable=True))
        batch.add_column(sa.Column("enqueued_at", _aware(), nullable=True))
        batch.add_column(sa.Column("delivered_at", _aware(), nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("receipt", sa.Text(), nullable=True))
        batch.add_column(sa.Column("items", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("digest_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("escalation_step", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.create_check_constraint("ck_deliveries_status", f"status IN {_STATUSES}")
        batch.create_check_constraint("ck_deliveries_kind", f"kind IN {_KINDS}")
        batch.create_index("ix_deliveries_due", ["status", "not_before"])
        batch.create_index("ix_deliveries_agency_id", ["agency_id"])
        batch.create_index("ix_deliveries_digest_key", ["digest_key"])
    op.execute("UPDATE deliveries SET level = (SELECT alerts.level FROM alerts WHERE "
               "alerts.identifier = deliveries.alert_identifier), created_at = (SELECT "
               "alerts.sent FROM alerts WHERE alerts.identifier = deliveries.alert_identifier)")
    op.execute("UPDATE deliveries SET agency_id = (SELECT subscriptions.agency_id FROM "
               "subscriptions WHERE subscriptions.subscription_id = deliveries.subscription_id)")
    # A row left "sending" before claims had leases would never be taken again.
    op.execute("UPDATE deliveries SET status = 'pending' WHERE status = 'sending'")
    # Plain ADD COLUMN (SQLite has it): a batch copy of ``alerts`` would break the foreign
    # keys that point at it and drop its immutability trigger.
    op.add_column("subscriptions", sa.Column("escalation", sa.JSON(), nullable=True))
    op.add_column("subscriptions", sa.Column("escalate_after_min", sa.Float(), nullable=True))
    op.add_column("alerts", sa.Column("texts", sa.JSON(), nullable=True))
    op.create_table(
        "acknowledgements",
        sa.Column("alert_identifier", sa.String(200), sa.ForeignKey("alerts.identifier"),
                  nullable=False),
        sa.Column("agency_id", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("acknowledged_at", _aware(), nullable=False),
        sa.Column("acknowledged_by", sa.String(300), nullable=False),
        sa.PrimaryKeyConstraint("alert_identifier", "agency_id"),
    )
    op.create_index("ix_acknowledgements_event_id", "acknowledgements", ["event_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added; deliveries in the new states become errors."""
    op.drop_table("acknowledgements")
    # Plain DROP COLUMN (SQLite 3.35 and later), for the same reason as in upgrade.
    op.drop_column("alerts", "texts")
    op.drop_column("subscriptions", "escalate_after_min")
    op.drop_column("subscriptions", "escalation")
    op.execute("UPDATE deliveries SET status = 'error' WHERE status IN ('held', 'digested', "
               "'superseded')")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_digest_key")
        batch.drop_index("ix_deliveries_agency_id")
        batch.drop_index("ix_deliveries_due")
        batch.drop_constraint("ck_deliveries_kind", type_="check")
        batch.drop_constraint("ck_deliveries_status", type_="check")
        for name in ("escalation_step", "digest_key", "items", "receipt", "last_error",
                     "delivered_at", "enqueued_at", "lease_until", "not_before",
                     "created_at", "language", "level", "agency_id", "kind"):
            batch.drop_column(name)
        batch.create_check_constraint("ck_deliveries_status", f"status IN {_OLD_STATUSES}")
