"""Tables of the HTTP API: API keys, the alert search index and analysts' overlay jobs.

``api_keys`` holds only a SHA-256 of each key's secret (the secret is random, 256 bits, so a
plain hash is as strong as a slow one) with its agency or admin role, expiry and revocation.
``alert_index`` is one row per stored alert with what listing filters on (hazard kind,
level, time, the lon/lat bounding box of the message's area), written with the alert.
``overlay_jobs`` is one row per analyst's overlay job: its inputs, progress and results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.models import AlertMatchRow, Base, UtcDateTime, _in

API_ROLES = ("agency", "admin")
JOB_STATUSES = ("queued", "running", "done", "failed")


class ApiKeyRow(Base):
    """One API key: who it speaks for, its hashed secret, and whether it still works."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(_in("role", API_ROLES), name="ck_api_keys_role"),
        CheckConstraint("role = 'admin' OR agency_id IS NOT NULL", name="ck_api_keys_agency"),
    )

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(10))
    agency_id: Mapped[str | None] = mapped_column(String(100), index=True)
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AlertIndexRow(Base):
    """What alert listings filter on, one row per stored alert."""

    __tablename__ = "alert_index"
    __table_args__ = (
        Index("ix_alert_index_sent", "sent", "identifier"),
        Index("ix_alert_index_bbox", "minx", "maxx", "miny", "maxy"),
    )

    identifier: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), index=True)
    hazard_kind: Mapped[str] = mapped_column(String(50), index=True)
    level: Mapped[str] = mapped_column(String(10))
    msg_type: Mapped[str] = mapped_column(String(10))
    sent: Mapped[datetime] = mapped_column(UtcDateTime)
    expires: Mapped[datetime] = mapped_column(UtcDateTime)
    minx: Mapped[float | None] = mapped_column(Float)
    miny: Mapped[float | None] = mapped_column(Float)
    maxx: Mapped[float | None] = mapped_column(Float)
    maxy: Mapped[float | None] = mapped_column(Float)


# An agency's alert listing probes "did this alert match the agency?" per alert: with this
# index the probe is one lookup, not a walk over every match of the agency (SQLite's plan;
# bench/README.md has the figures).
Index("ix_alert_matches_agency_alert", AlertMatchRow.agency_id, AlertMatchRow.alert_identifier)


class OverlayJobRow(Base):
    """An analyst's overlay job: inputs, who asked, progress, and where its results are."""

    __tablename__ = "overlay_jobs"
    __table_args__ = (CheckConstraint(_in("status", JOB_STATUSES), name="ck_overlay_jobs_status"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_key_id: Mapped[str] = mapped_column(String(32), index=True)
    agency_id: Mapped[str | None] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(10))
    progress: Mapped[float] = mapped_column(Float, server_default="0")
    step: Mapped[str | None] = mapped_column(Text)
    hazard_path: Mapped[str] = mapped_column(Text)
    hazard_name: Mapped[str] = mapped_column(Text)
    region: Mapped[str] = mapped_column(String(100))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    results: Mapped[list[str] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
