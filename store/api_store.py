"""What the HTTP API needs from the store beyond :mod:`store.repo`: keys, listings, updates.

API keys are ``tsn_<key id>_<secret>``; only a SHA-256 of the secret is stored, and it is
compared in constant time. Listings are keyset-paginated (newest first, an opaque cursor),
so a page never skips or repeats an alert while new ones arrive. Like :mod:`store.repo`,
every function takes an open session and never commits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from shapely.geometry.base import BaseGeometry
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alerts.model import Subscription
from store import mapping
from store.api_models import AlertIndexRow, ApiKeyRow
from store.models import (
    AgencyRow,
    AlertMatchRow,
    AlertRecord,
    DeliveryRecord,
    DeliveryRow,
    DeliveryStatus,
    SubscriptionRow,
)

_TOKEN_PREFIX = "tsn"
_KEY_ID = re.compile(r"[0-9a-f]{1,32}")  # what create_api_key makes (never sent to SQL otherwise)
_MAX_ROW_ID = 2**63 - 1
BBox = tuple[float, float, float, float]


class ApiStoreError(Exception):
    """Root of the API store's errors."""


class InvalidApiKeyError(ApiStoreError, PermissionError):
    """The key is malformed, unknown, revoked or expired (the message says which)."""


class BadCursorError(ApiStoreError, ValueError):
    """A pagination cursor that this store did not hand out."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored, without its secret.

    Attributes:
        role: ``agency`` (reads and writes only its agency's records) or ``admin``.
    """

    key_id: str
    role: str
    agency_id: str | None
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def _key_from_row(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.key_id, row.role, row.agency_id, row.label, row.created_at,
                  row.expires_at, row.revoked_at)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(session: Session, *, role: str, agency_id: str | None, label: str,
                   now: datetime, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Store a new key and return it with its token (shown once, never stored).

    Raises:
        ValueError: role unknown, an agency key without an agency, or the agency not stored.
    """
    if role not in ("agency", "admin"):
        raise ValueError(f"role must be 'agency' or 'admin', got {role!r}")
    if role == "agency" and (agency_id is None or session.get(AgencyRow, agency_id) is None):
        raise ValueError(f"agency key: no agency {agency_id!r}; add the agency first")
    if expires_at is not None and expires_at <= now:
        raise ValueError(f"expires_at {expires_at.isoformat()} is not after now")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ApiKeyRow(key_id=key_id, secret_sha256=_digest(secret), role=role,
                    agency_id=agency_id if role == "agency" else None, label=label,
                    created_at=now, expires_at=expires_at)
    with session.begin_nested():
        session.add(row)
    return _key_from_row(row), f"{_TOKEN_PREFIX}_{key_id}_{secret}"


def authenticate(session: Session, token: str, *, now: datetime) -> ApiKey:
    """The key a token belongs to, if it is valid now.

    Raises:
        InvalidApiKeyError: malformed, unknown, wrong secret, revoked or expired.
    """
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != _TOKEN_PREFIX or not _KEY_ID.fullmatch(key_id) or not secret:
        raise InvalidApiKeyError("malformed API key: expected tsn_<key id>_<secret>")
    row = session.get(ApiKeyRow, key_id)
    # Compare even for an unknown id, so timing does not tell which ids exist.
    expected = row.secret_sha256 if row is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or row is None:
        raise InvalidApiKeyError("unknown API key")
    if row.revoked_at is not None:
        raise InvalidApiKeyError(f"API key {key_id} was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise InvalidApiKeyError(f"API key {key_id} expired at {row.expires_at.isoformat()}")
    return _key_from_row(row)


def list_api_keys(session: Session, agency_id: str | None = None) -> list[ApiKey]:
    """Every key (of one agency), oldest first."""
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
    if agency_id is not None:
        stmt = stmt.where(ApiKeyRow.agency_id == agency_id)
    return [_key_from_row(row) for row in session.scalars(stmt)]


def revoke_api_key(session: Session, key_id: str, *, now: datetime) -> ApiKey:
    """Revoke a key (at once, for every process); revoking twice keeps the first time.

    Raises:
        LookupError: no such key.
    """
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise LookupError(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = now
    return _key_from_row(row)


# --- the alert index ----------------------------------------------------------------------


def alert_index_row(alert: AlertRecord, hazard_kind: str,
                    area: BaseGeometry | None) -> AlertIndexRow:
    """The index row of a stored alert (written in the alert's own transaction)."""
    return AlertIndexRow(
        identifier=alert.identifier, event_id=alert.event_id, hazard_kind=hazard_kind,
        level=alert.level.value, msg_type=alert.msg_type.value, sent=alert.sent,
        expires=alert.expires, **mapping.bbox_columns(area))


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts a listing wants; every field None or empty means no restriction.

    Attributes:
        bbox: ``(min lon, min lat, max lon, max lat)``; alerts whose area's bounding box
            intersects it.
    """

    since: datetime | None = None
    until: datetime | None = None
    bbox: BBox | None = None
    hazard_kinds: Collection[str] = ()
    levels: Collection[str] = ()
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """One row of an alert listing."""

    identifier: str
    event_id: str
    hazard_kind: str
    level: str
    msg_type: str
    sent: datetime
    expires: datetime
    bbox: BBox | None


def encode_cursor(*parts: object) -> str:
    """An opaque cursor for keyset pagination."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[object]:
    """The parts of a cursor from :func:`encode_cursor`.

    Raises:
        BadCursorError: not one of ours.
    """
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursorError("cursor: not a cursor this API handed out") from None
    if not isinstance(parts, list) or len(parts) != size:
        raise BadCursorError("cursor: not a cursor this API handed out")
    return parts


def _visible_to(agency_id: str) -> object:
    return exists().where(AlertMatchRow.alert_identifier == AlertIndexRow.identifier,
                          AlertMatchRow.agency_id == agency_id)


def list_alerts(session: Session, wanted: AlertFilter, *, agency_id: str | None,
                cursor: str | None = None, limit: int = 50
                ) -> tuple[list[AlertSummary], str | None]:
    """One page of alerts, newest first, and the cursor of the next page (None: last page).

    Args:
        session: an open session.
        wanted: the filters.
        agency_id: only alerts that matched one of this agency's subscriptions; None: all.
        cursor: the ``next`` cursor of the previous page; None for the first page.
        limit: the most alerts on the page.
    """
    stmt = select(AlertIndexRow)
    if agency_id is not None:
        stmt = stmt.where(_visible_to(agency_id))
    if wanted.since is not None:
        stmt = stmt.where(AlertIndexRow.sent >= wanted.since)
    if wanted.until is not None:
        stmt = stmt.where(AlertIndexRow.sent < wanted.until)
    if wanted.bbox is not None:
        minx, miny, maxx, maxy = wanted.bbox
        stmt = stmt.where(AlertIndexRow.minx <= maxx, AlertIndexRow.maxx >= minx,
                          AlertIndexRow.miny <= maxy, AlertIndexRow.maxy >= miny)
    if wanted.hazard_kinds:
        stmt = stmt.where(AlertIndexRow.hazard_kind.in_(sorted(wanted.hazard_kinds)))
    if wanted.levels:
        stmt = stmt.where(AlertIndexRow.level.in_(sorted(wanted.levels)))
    if wanted.event_id is not None:
        stmt = stmt.where(AlertIndexRow.event_id == wanted.event_id)
    if cursor is not None:
        sent, ident = _alert_cursor(cursor)
        stmt = stmt.where(or_(AlertIndexRow.sent < sent,
                              and_(AlertIndexRow.sent == sent, AlertIndexRow.identifier < ident)))
    stmt = stmt.order_by(AlertIndexRow.sent.desc(), AlertIndexRow.identifier.desc())
    rows = list(session.scalars(stmt.limit(limit + 1)))
    page = [_summary(row) for row in rows[:limit]]
    more = len(rows) > limit
    next_cursor = encode_cursor(page[-1].sent.isoformat(), page[-1].identifier) if more else None
    return page, next_cursor


def _alert_cursor(cursor: str) -> tuple[datetime, str]:
    """The (sent, identifier) an alert cursor holds, checked before it reaches SQL."""
    sent_iso, ident = decode_cursor(cursor, 2)
    if not isinstance(sent_iso, str) or not isinstance(ident, str) or len(ident) > 200 \
            or "\x00" in ident:
        raise BadCursorError("cursor: not a cursor this API handed out")
    try:
        sent = datetime.fromisoformat(sent_iso)
        if sent.utcoffset() is None:
            raise ValueError("naive")
        sent.astimezone(UTC)  # OverflowError near year 1 or 9999
    except (ValueError, OverflowError):
        raise BadCursorError("cursor: not a cursor this API handed out") from None
    return sent, ident


def _summary(row: AlertIndexRow) -> AlertSummary:
    bbox = None if row.minx is None else (row.minx, row.miny, row.maxx, row.maxy)
    return AlertSummary(row.identifier, row.event_id, row.hazard_kind, row.level, row.msg_type,
                        row.sent, row.expires, bbox)  # type: ignore[arg-type]


def alert_summary(session: Session, identifier: str) -> AlertSummary | None:
    """The index row of one alert, or None when it is not stored."""
    row = session.get(AlertIndexRow, identifier)
    return None if row is None else _summary(row)


def agency_sees_alert(session: Session, agency_id: str, identifier: str) -> bool:
    """Whether the alert matched one of the agency's subscriptions (past or present)."""
    return session.scalar(select(AlertMatchRow.alert_identifier).where(
        AlertMatchRow.alert_identifier == identifier,
        AlertMatchRow.agency_id == agency_id).limit(1)) is not None


def list_agency_deliveries(
    session: Session, agency_id: str, *, alert_identifier: str | None = None,
    statuses: Collection[DeliveryStatus] = (), cursor: str | None = None, limit: int = 50,
) -> tuple[list[DeliveryRecord], str | None]:
    """One page of an agency's deliveries, newest first, and the next page's cursor."""
    stmt = select(DeliveryRow).where(DeliveryRow.agency_id == agency_id)
    if alert_identifier is not None:
        stmt = stmt.where(DeliveryRow.alert_identifier == alert_identifier)
    if statuses:
        stmt = stmt.where(DeliveryRow.status.in_(sorted(s.value for s in statuses)))
    if cursor is not None:
        (before,) = decode_cursor(cursor, 1)
        if not isinstance(before, int) or isinstance(before, bool) \
                or not 0 < before <= _MAX_ROW_ID:
            raise BadCursorError("cursor: not a cursor this API handed out")
        stmt = stmt.where(DeliveryRow.id < before)
    rows = list(session.scalars(stmt.order_by(DeliveryRow.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    page = rows[:limit]
    return ([mapping.delivery_from_row(r) for r in page],
            encode_cursor(page[-1].id) if more else None)


def update_subscription(session: Session, subscription: Subscription) -> None:
    """Replace a stored subscription's settings in place (same id and agency).

    Deliveries already planned keep what they were planned with.

    Raises:
        LookupError: no such subscription for that agency.
        ValueError: it would duplicate another subscription of the agency.
    """
    sub_id = subscription.subscription_id
    row = session.get(SubscriptionRow, sub_id)
    if row is None or row.agency_id != subscription.agency_id:
        raise LookupError(f"no subscription {sub_id!r}")
    area = mapping.union_of_areas(subscription.areas_wkt, sub_id)
    fingerprint = mapping.subscription_fingerprint(subscription, area)
    from store.repo import subscription_twin  # store.repo imports this module

    twin = subscription_twin(session, subscription.agency_id, fingerprint, other_than=sub_id)
    if twin is not None:
        raise ValueError(f"subscription {sub_id!r} would duplicate {twin!r} (same areas, zone "
                         "codes, hazard kinds and channels)")
    try:
        with session.begin_nested():
            for column, value in mapping.subscription_to_columns(subscription).items():
                setattr(row, column, value)
            row.area = area
            for column, value in mapping.bbox_columns(area).items():
                setattr(row, column, value)
            row.content_sha256 = fingerprint
    except IntegrityError as exc:
        raise ValueError(f"subscription {sub_id!r} could not be updated: {exc.orig}") from exc
