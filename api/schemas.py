"""Request and response bodies of the API (pydantic at the edge; frozen values inside).

Every string is bounded and every identifier has a pattern, so that nothing unbounded
reaches the store and the OpenAPI document says exactly what is accepted.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from alerts.model import ChannelKind, Level
from geo.types import HazardKind

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
"""Ids of agencies and subscriptions: letters, digits, '.', '_', '-'; 1 to 100 characters."""
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=300,
                                             pattern=r"^[^\x00-\x1f\x7f]+$")]
"""One line of text (names, labels): no control characters (PostgreSQL refuses NUL)."""
OptionalText = Annotated[str, StringConstraints(max_length=300, pattern=r"^[^\x00-\x1f\x7f]*$")]
Address = Annotated[str, StringConstraints(min_length=1, max_length=2000,
                                           pattern=r"^[^\x00-\x1f\x7f]+$")]
ZoneCode = Annotated[str, StringConstraints(min_length=1, max_length=100,
                                            pattern=r"^[^\x00-\x1f\x7f]+$")]
TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                                pattern=r"^[A-Za-z0-9_+/-]+$")]
LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]

_ISO_DATE = re.compile(r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_8601(value: object) -> object:
    """Refuse a number, which pydantic would read as a Unix time: times are ISO 8601 here."""
    if not isinstance(value, datetime) and not (isinstance(value, str)
                                                and _ISO_DATE.match(value)):
        raise ValueError("expected an ISO 8601 time with its zone, e.g. 2026-12-01T10:00:00Z")
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_8601)]
"""A time given as ISO 8601 text (never a bare number)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Channel(_Strict):
    """One channel and its address (URL, e-mail address, phone number, topic, feed name)."""

    kind: ChannelKind
    address: Address


class QuietHoursIn(_Strict):
    """Local hours when only red alerts are sent at once (the rest waits for the end)."""

    start: ClockTime
    end: ClockTime
    timezone: TimeZoneName = "UTC"


class DigestIn(_Strict):
    """Alerts at ``up_to_level`` or below gathered into one message every ``interval_min``."""

    up_to_level: Level = Level.YELLOW
    interval_min: int = Field(default=360, ge=5, le=7 * 24 * 60)


class SubscriptionIn(_Strict):
    """What an agency wants to hear about, where (a GeoJSON area and/or zone codes) and how."""

    area: dict[str, Any] | None = Field(
        default=None, description="GeoJSON (RFC 7946, WGS 84 lon/lat) Polygon, MultiPolygon, "
                                  "Feature or FeatureCollection of those.")
    zone_codes: list[ZoneCode] = Field(default=[], max_length=1000)
    hazard_kinds: list[HazardKind] = Field(default=[], max_length=50,
                                               description="Empty: every hazard kind.")
    min_level: Level = Level.YELLOW
    channels: list[Channel] = Field(min_length=1, max_length=20)
    languages: list[LanguageTag] = Field(default=["en"], min_length=1, max_length=10)
    quiet_hours: QuietHoursIn | None = None
    digest: DigestIn | None = None
    escalation: list[Channel] = Field(default=[], max_length=10)
    escalate_after_min: float = Field(default=30.0, gt=0, le=7 * 24 * 60, allow_inf_nan=False)


class SubscriptionCreate(SubscriptionIn):
    """A new subscription: its id and its settings."""

    subscription_id: Identifier


class SubscriptionOut(BaseModel):
    """A stored subscription."""

    subscription_id: str
    agency_id: str
    area: dict[str, Any] | None
    zone_codes: list[str]
    hazard_kinds: list[str]
    min_level: Level
    channels: list[Channel]
    languages: list[str]
    quiet_hours: QuietHoursIn | None
    digest: DigestIn | None
    escalation: list[Channel]
    escalate_after_min: float


class AlertOut(BaseModel):
    """One CAP message as listed: what it is about, its level in words, where and when."""

    identifier: str
    event_id: str
    hazard_kind: str
    level: Level
    msg_type: Literal["Alert", "Update", "Cancel"]
    sent: datetime
    expires: datetime
    bbox: list[float] | None = Field(description="[min lon, min lat, max lon, max lat]")
    cap_url: str


class AlertPage(BaseModel):
    """A page of alerts, newest first; ``next`` fetches the following page."""

    items: list[AlertOut]
    next: str | None = Field(description="Cursor of the next page; null on the last page.")


class MatchOut(BaseModel):
    """What the alert meant inside one of the agency's subscriptions."""

    subscription_id: str
    level: Level
    max_class: int
    population: float
    exposure: dict[str, Any]


class AlertDetail(AlertOut):
    """One alert with its priority explanation and what it meant for the agency."""

    priority: dict[str, Any]
    matches: list[MatchOut]
    acknowledged: bool


class DeliveryOut(BaseModel):
    """One delivery of an alert (or digest, or escalation) to one channel."""

    idempotency_key: str
    alert_identifier: str
    subscription_id: str
    kind: str
    channel: Channel
    status: str
    attempts: int
    level: Level | None
    created_at: datetime | None
    not_before: datetime | None
    last_error: str | None
    receipt: str | None
    history: list[dict[str, str]]


class DeliveryPage(BaseModel):
    """A page of deliveries, newest first."""

    items: list[DeliveryOut]
    next: str | None


class AckIn(_Strict):
    """Who acknowledges (a name or duty desk, recorded with the acknowledgement)."""

    by: ShortText = "api"


class AckOut(BaseModel):
    """The acknowledgement: ``new`` is false when the agency had already acknowledged."""

    identifier: str
    agency_id: str
    new: bool


class AgencyIn(_Strict):
    """A new agency."""

    agency_id: Identifier
    name: ShortText
    contact: OptionalText | None = None


class AgencyOut(BaseModel):
    """A stored agency."""

    agency_id: str
    name: str
    contact: str | None


class KeyIn(_Strict):
    """A new API key for an agency."""

    label: ShortText = "api key"
    expires_in_days: float | None = Field(default=None, gt=0, le=3660, allow_inf_nan=False)


class KeyOut(BaseModel):
    """An API key as stored (never its secret)."""

    key_id: str
    role: Literal["agency", "admin"]
    agency_id: str | None
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    """A key just made, with its token: shown once; store it now."""

    token: str


class Health(BaseModel):
    """Whether the API and its store answer."""

    status: Literal["ok"]
    store: Literal["ok"]
