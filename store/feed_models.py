"""Tables of the live pipeline: each feed's polling state and health, and each item it gave.

``feeds`` holds what a worker needs to poll a feed (the source's state: seen files, ETag...)
and what ``tocsin feeds status`` shows (last success, lag, errors). ``feed_items`` is one
row per payload a feed gave, archived by checksum, with what became of it: assessed (and
the alert it produced), skipped (the same bytes again, an older run than one already
assessed) or quarantined with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, UtcDateTime, _in

FEED_ITEM_STATUS_VALUES = ("fetched", "assessing", "assessed", "skipped", "quarantined")


class FeedRow(Base):
    """One configured feed: its source state, schedule and health."""

    __tablename__ = "feeds"

    feed_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    config_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    next_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    last_issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_lag_s: Mapped[float | None] = mapped_column(Float)


class FeedItemRow(Base):
    """One payload a feed gave, and what became of it."""

    __tablename__ = "feed_items"
    __table_args__ = (
        UniqueConstraint("feed_id", "checksum", name="uq_feed_items_feed_checksum"),
        CheckConstraint(_in("status", FEED_ITEM_STATUS_VALUES), name="ck_feed_items_status"),
        Index("ix_feed_items_feed_status", "feed_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    feed_id: Mapped[str] = mapped_column(String(100))
    checksum: Mapped[str] = mapped_column(String(80))
    archive_path: Mapped[str] = mapped_column(Text)
    source_uri: Mapped[str] = mapped_column(Text)
    original_name: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)
    issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(Text)
    alert_identifier: Mapped[str | None] = mapped_column(String(200))
    decision: Mapped[str | None] = mapped_column(String(10))
    assessed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    assess_s: Mapped[float | None] = mapped_column(Float)
