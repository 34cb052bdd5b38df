"""The alert model: CAP 1.2 vocabularies, levels, the alert lifecycle and the sent snapshot.

Pure values. An :class:`AlertEvent` is the immutable snapshot of one message as sent (CAP
``alert``): the renderer reads only it, never live tables, so what was sent can always be
reproduced byte for byte. Times are timezone-aware and passed in; nothing here reads the
clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from alerts.errors import InvalidTransition


class Status(StrEnum):
    """CAP ``status``: the handling of the message."""

    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MsgType(StrEnum):
    """CAP ``msgType``: the nature of the message."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Scope(StrEnum):
    """CAP ``scope``: who the message is for."""

    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class Category(StrEnum):
    """CAP ``category`` of the subject event."""

    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(StrEnum):
    """CAP ``responseType``: the action recommended."""

    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


class Urgency(StrEnum):
    """CAP ``urgency``: the time available to prepare."""

    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Severity(StrEnum):
    """CAP ``severity``: the intensity of impact."""

    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    """CAP ``certainty``: the confidence in the observation or prediction."""

    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


class Level(StrEnum):
    """Tocsin's alert level, always shown in words (never by colour alone)."""

    GREEN = "green"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        """0 for green up to 3 for red, for comparisons."""
        return _LEVEL_RANK[self]

    def at_least(self, other: Level) -> bool:
        """True when this level is ``other`` or more severe."""
        return self.rank >= other.rank


_LEVEL_RANK = {Level.GREEN: 0, Level.YELLOW: 1, Level.ORANGE: 2, Level.RED: 3}


class AlertStatus(StrEnum):
    """Where an alert (the event's current message) is in its life."""

    ISSUED = "issued"
    UPDATED = "updated"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ALLOWED_TRANSITIONS: Mapping[AlertStatus, frozenset[AlertStatus]] = MappingProxyType({
    AlertStatus.ISSUED: frozenset({AlertStatus.UPDATED, AlertStatus.CANCELLED,
                                   AlertStatus.EXPIRED}),
    AlertStatus.UPDATED: frozenset({AlertStatus.UPDATED, AlertStatus.CANCELLED,
                                    AlertStatus.EXPIRED}),
    AlertStatus.CANCELLED: frozenset(),
    AlertStatus.EXPIRED: frozenset(),
})
"""Cancelled and expired alerts are final: a new occurrence is a new event."""


def transition(current: AlertStatus, to: AlertStatus) -> AlertStatus:
    """Return ``to`` if the lifecycle allows moving there from ``current``.

    Raises:
        InvalidTransition: the move is not in :data:`ALLOWED_TRANSITIONS`.
    """
    if to not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(f"an alert that is {current.value} cannot become {to.value}")
    return to


@dataclass(frozen=True, slots=True)
class Reference:
    """One earlier message, as CAP ``references`` names it: ``sender,identifier,sent``."""

    sender: str
    identifier: str
    sent: datetime


@dataclass(frozen=True, slots=True)
class Area:
    """One CAP ``area``.

    Attributes:
        description: ``areaDesc``, plain words.
        polygons: rings as ``((lat, lon), ...)``, closed (first point repeated last).
        circles: ``((lat, lon), radius_km)``.
        geocodes: ``(valueName, value)`` pairs.
    """

    description: str
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()
    circles: tuple[tuple[tuple[float, float], float], ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Resource:
    """One CAP ``resource`` (the map): description, MIME type, size, SHA-1, URI or content."""

    description: str
    mime_type: str
    size_bytes: int | None = None
    uri: str | None = None
    digest_sha1: str | None = None
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class Info:
    """One CAP ``info`` block: one language's text about the event."""

    language: str
    category: tuple[Category, ...]
    event: str
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    headline: str
    description: str
    instruction: str
    # Tocsin always sets it (its render profile refuses an info without one); messages
    # from elsewhere may lack it, as three of the four specification examples do.
    expires: datetime | None
    response_types: tuple[ResponseType, ...] = ()
    sender_name: str | None = None
    effective: datetime | None = None
    onset: datetime | None = None
    web: str | None = None
    contact: str | None = None
    event_codes: tuple[tuple[str, str], ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()
    resources: tuple[Resource, ...] = ()
    areas: tuple[Area, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """The immutable snapshot of one CAP message as sent.

    Attributes:
        identifier: unique id of this message.
        sender: the originator's id (no spaces or commas).
        sent: when it was sent (timezone-aware).
        status: CAP status.
        msg_type: Alert, Update or Cancel (Ack and Error are possible but not issued here).
        scope: Public, Restricted or Private.
        infos: one per language.
        references: every earlier message of the same event (Update and Cancel).
        restriction: required text when ``scope`` is Restricted.
        addresses: required when ``scope`` is Private.
        codes: CAP ``code`` values (profiles).
        note: CAP ``note`` (e.g. why it was cancelled).
        incidents: CAP ``incidents``: Tocsin's event id.
        source: CAP ``source``: the operator or system that issued it (empty: omitted).
    """

    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    scope: Scope
    infos: tuple[Info, ...] = ()
    references: tuple[Reference, ...] = ()
    restriction: str | None = None
    addresses: str | None = None
    codes: tuple[str, ...] = ()
    note: str | None = None
    incidents: str | None = None
    source: str = ""


# --- What an assessment found: the inputs of priority, text and CAP rendering -------------


@dataclass(frozen=True, slots=True)
class ClassExposure:
    """People and area in one severity class (1-based ``k``)."""

    k: int
    label: str
    population: float
    disability: float = 0.0
    older: float = 0.0
    electricity_dependent: float = 0.0
    area_km2: float = 0.0


@dataclass(frozen=True, slots=True)
class FacilityHit:
    """A facility in the footprint or cut off from care by it."""

    name: str
    type: str
    class_label: str
    cut_off: bool = False


@dataclass(frozen=True, slots=True)
class ExposureSummary:
    """Exposure of one event, over the whole region or inside one subscriber's area.

    Attributes:
        population: people in severity classes 1 and above.
        disability: people with disabilities among them.
        older: older people among them.
        electricity_dependent: electricity-dependent people among them.
        cut_off_population: people newly beyond the access threshold to care.
        cut_off_disability: people with disabilities among those.
        facilities_hit: facilities in a class, or cut off.
        area_km2: footprint area (classes 1 and above).
        by_class: the figures per class, most severe last.
    """

    population: float
    disability: float = 0.0
    older: float = 0.0
    electricity_dependent: float = 0.0
    cut_off_population: float = 0.0
    cut_off_disability: float = 0.0
    facilities_hit: tuple[FacilityHit, ...] = ()
    area_km2: float = 0.0
    by_class: tuple[ClassExposure, ...] = ()


@dataclass(frozen=True, slots=True)
class HazardSummary:
    """What the hazard is, from the feed, as the alerting needs it.

    Attributes:
        kind: hazard kind value (``flood_depth``, ``shaking_mmi``...).
        nature: ``observed`` or ``forecast``.
        units: units of the field.
        n_classes: number of severity classes above 0.
        max_class: highest class reached anywhere (0 when none).
        max_class_label: its label (``"1.5 m and above"``, ``"VIII"``).
        issued_at: when the producer issued it.
        onset: when the hazard starts (valid time of a forecast; issue time if observed).
        exceedance_share: for ensembles, the share of members over the threshold.
        source: the feed file or URL.
        checksum: ``sha256:`` of the source bytes (idempotent ingest).
        source_event_id: the producer's event id, when the feed has one.
    """

    kind: str
    nature: str
    units: str
    n_classes: int
    max_class: int
    max_class_label: str
    issued_at: datetime | None
    onset: datetime | None
    exceedance_share: float | None
    source: str
    checksum: str
    source_event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Priority:
    """An explainable priority: level in words, CAP triple, and the reasons why.

    Attributes:
        level: green, yellow, orange or red.
        score: the numeric score the level came from (for ordering within a level).
        severity: CAP severity.
        urgency: CAP urgency.
        certainty: CAP certainty.
        reasons: plain-language reasons, most important first.
        rules_version: version of the rule table that decided.
    """

    level: Level
    score: float
    severity: Severity
    urgency: Urgency
    certainty: Certainty
    reasons: tuple[str, ...]
    rules_version: str


# --- Agencies and what they subscribe to ------------------------------------------------


class ChannelKind(StrEnum):
    """Channels an alert can be delivered on."""

    CAP_FEED = "cap_feed"
    WEBHOOK = "webhook"
    EMAIL = "email"
    SMS = "sms"
    MQTT = "mqtt"


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    """One channel of a subscription with its own address (URL, e-mail, phone, topic)."""

    kind: ChannelKind
    address: str


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Hours when only alerts at ``override_level`` or above are sent at once.

    Attributes:
        start: local start time, ``"22:00"``.
        end: local end time, ``"07:00"`` (may be before start: the span crosses midnight).
        timezone: IANA time zone of the subscriber (``"Europe/Zurich"``).
        override_level: alerts at this level or above ignore quiet hours.
    """

    start: str
    end: str
    timezone: str
    override_level: Level = Level.RED


@dataclass(frozen=True, slots=True)
class DigestPolicy:
    """Low-level alerts gathered into one message.

    Attributes:
        up_to_level: alerts at this level or below go into the digest.
        interval_min: how often the digest is sent.
    """

    up_to_level: Level = Level.YELLOW
    interval_min: int = 360


@dataclass(frozen=True, slots=True)
class Agency:
    """An emergency agency that receives alerts."""

    agency_id: str
    name: str
    contact: str | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """What an agency wants to hear about, where, and how.

    Attributes:
        subscription_id: stable id.
        agency_id: the subscribing agency.
        areas_wkt: area polygons in EPSG:4326 as WKT (lon lat order), from GeoJSON.
        zone_codes: zone ids of the region pack, instead of or besides polygons.
        hazard_kinds: hazard kind values; empty means every kind.
        min_level: the lowest level delivered.
        channels: where to deliver.
        languages: languages of the text, first preferred (``"en"``, ``"fr"``).
        quiet_hours: when to hold all but the top levels.
        digest: how low levels are gathered.
        escalation: channels tried in turn when nobody acknowledges a red alert: the first
            after ``escalate_after_min``, the next after twice that, and so on.
        escalate_after_min: minutes without acknowledgement before each escalation step.
    """

    subscription_id: str
    agency_id: str
    areas_wkt: tuple[str, ...] = ()
    zone_codes: tuple[str, ...] = ()
    hazard_kinds: frozenset[str] = frozenset()
    min_level: Level = Level.YELLOW
    channels: tuple[ChannelAddress, ...] = ()
    languages: tuple[str, ...] = ("en",)
    quiet_hours: QuietHours | None = None
    digest: DigestPolicy | None = None
    escalation: tuple[ChannelAddress, ...] = ()
    escalate_after_min: float = 30.0
