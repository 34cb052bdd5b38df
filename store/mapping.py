"""Explicit mapping between the store's rows and the values the rest of Tocsin sees.

Field by field, both ways: rows of :mod:`store.models` to and from the core values of
:mod:`alerts.model` and the store records. Also the derived columns a row needs (bounding box,
unioned area, duplicate fingerprint, delivery idempotency key), so :mod:`store.repo` keeps
only the queries and the transaction rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import shapely
from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from alerts.errors import SubscriptionError
from alerts.model import (
    AlertStatus,
    Certainty,
    ChannelAddress,
    ChannelKind,
    ClassExposure,
    DigestPolicy,
    ExposureSummary,
    FacilityHit,
    Level,
    MsgType,
    Priority,
    QuietHours,
    Severity,
    Subscription,
    Urgency,
)
from alerts.text import MessageText
from store.models import (
    AlertMatch,
    AlertMatchRow,
    AlertRecord,
    AlertRow,
    DeliveryRecord,
    DeliveryRow,
    DeliveryStatus,
    EventRow,
    StoredEvent,
    SubscriptionRow,
    as_multipolygon,
)


def bbox_columns(geometry: BaseGeometry | None) -> dict[str, float | None]:
    """The ``minx, miny, maxx, maxy`` columns of a geometry (all None without one)."""
    if geometry is None:
        return dict.fromkeys(("minx", "miny", "maxx", "maxy"))
    minx, miny, maxx, maxy = geometry.bounds
    return {"minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy}


def subscription_to_columns(subscription: Subscription) -> dict[str, Any]:
    """The plain columns of a subscription (not its area, bbox or fingerprint)."""
    quiet = subscription.quiet_hours
    digest = subscription.digest
    return {
        "subscription_id": subscription.subscription_id,
        "agency_id": subscription.agency_id,
        "areas_wkt": list(subscription.areas_wkt),
        "zone_codes": list(subscription.zone_codes),
        "hazard_kinds": sorted(subscription.hazard_kinds),
        "min_level": subscription.min_level.value,
        "channels": [{"kind": c.kind.value, "address": c.address}
                     for c in subscription.channels],
        "languages": list(subscription.languages),
        "quiet_hours": None if quiet is None else {
            "start": quiet.start, "end": quiet.end, "timezone": quiet.timezone,
            "override_level": quiet.override_level.value},
        "digest": None if digest is None else {
            "up_to_level": digest.up_to_level.value, "interval_min": digest.interval_min},
        "escalation": [{"kind": c.kind.value, "address": c.address}
                       for c in subscription.escalation],
        "escalate_after_min": float(subscription.escalate_after_min),
    }


def subscription_from_row(row: SubscriptionRow) -> Subscription:
    """The core value of a subscription row."""
    quiet = row.quiet_hours
    digest = row.digest
    return Subscription(
        subscription_id=row.subscription_id,
        agency_id=row.agency_id,
        areas_wkt=tuple(row.areas_wkt),
        zone_codes=tuple(row.zone_codes),
        hazard_kinds=frozenset(row.hazard_kinds),
        min_level=Level(row.min_level),
        channels=tuple(ChannelAddress(ChannelKind(c["kind"]), c["address"])
                       for c in row.channels),
        languages=tuple(row.languages),
        quiet_hours=None if quiet is None else QuietHours(
            start=quiet["start"], end=quiet["end"], timezone=quiet["timezone"],
            override_level=Level(quiet["override_level"])),
        digest=None if digest is None else DigestPolicy(
            up_to_level=Level(digest["up_to_level"]), interval_min=int(digest["interval_min"])),
        escalation=tuple(ChannelAddress(ChannelKind(c["kind"]), c["address"])
                         for c in row.escalation or ()),
        escalate_after_min=float(row.escalate_after_min or 30.0),
    )


def exposure_to_json(exposure: ExposureSummary) -> dict[str, Any]:
    """An exposure summary as JSON-ready data (field by field)."""
    return {
        "population": exposure.population, "disability": exposure.disability,
        "older": exposure.older, "electricity_dependent": exposure.electricity_dependent,
        "cut_off_population": exposure.cut_off_population,
        "cut_off_disability": exposure.cut_off_disability, "area_km2": exposure.area_km2,
        "facilities_hit": [{"name": f.name, "type": f.type, "class_label": f.class_label,
                            "cut_off": f.cut_off} for f in exposure.facilities_hit],
        "by_class": [{"k": c.k, "label": c.label, "population": c.population,
                      "disability": c.disability, "older": c.older,
                      "electricity_dependent": c.electricity_dependent,
                      "area_km2": c.area_km2} for c in exposure.by_class],
    }


def exposure_from_json(data: dict[str, Any]) -> ExposureSummary:
    """The exposure summary written by :func:`exposure_to_json`."""
    scalars = {k: float(v) for k, v in data.items() if k not in ("facilities_hit", "by_class")}
    return ExposureSummary(
        **scalars,
        facilities_hit=tuple(FacilityHit(**f) for f in data["facilities_hit"]),
        by_class=tuple(ClassExposure(**c) for c in data["by_class"]),
    )


def event_to_columns(stored: StoredEvent) -> dict[str, Any]:
    """The columns of an event row."""
    return {
        "event_id": stored.event_id, "kind": stored.kind,
        "source_event_id": stored.source_event_id, "footprint": stored.footprint,
        **bbox_columns(stored.footprint),
        "first_seen": stored.first_seen, "last_seen": stored.last_seen,
        "status": None if stored.status is None else stored.status.value,
        "last_level": None if stored.last_level is None else stored.last_level.value,
        "last_exposure": None if stored.last_exposure is None else exposure_to_json(
            stored.last_exposure),
        "last_checksum": stored.last_checksum,
        "last_issued_at": stored.last_issued_at,
    }


def event_from_row(row: EventRow) -> StoredEvent:
    """The store value of an event row."""
    return StoredEvent(
        event_id=row.event_id, kind=row.kind, source_event_id=row.source_event_id,
        footprint=row.footprint, first_seen=row.first_seen, last_seen=row.last_seen,
        status=None if row.status is None else AlertStatus(row.status),
        last_level=None if row.last_level is None else Level(row.last_level),
        last_exposure=None if row.last_exposure is None else exposure_from_json(
            row.last_exposure),
        last_checksum=row.last_checksum,
        last_issued_at=row.last_issued_at,
    )


def alert_to_columns(alert: AlertRecord) -> dict[str, Any]:
    """The columns of an alert row; the priority as JSON, the CAP bytes as they are."""
    p = alert.priority
    return {
        "identifier": alert.identifier, "event_id": alert.event_id, "sender": alert.sender,
        "msg_type": alert.msg_type.value, "level": p.level.value,
        "priority": {"level": p.level.value, "score": p.score, "severity": p.severity.value,
                     "urgency": p.urgency.value, "certainty": p.certainty.value,
                     "reasons": list(p.reasons), "rules_version": p.rules_version},
        "sent": alert.sent, "expires": alert.expires,
        "cap_bytes": alert.cap_bytes, "cap_sha256": alert.cap_sha256,
        "texts": [text_to_json(text) for text in alert.texts],
    }


def text_to_json(text: MessageText) -> dict[str, Any]:
    """One language's text variants as JSON (every field of :class:`MessageText`)."""
    data = {name: getattr(text, name) for name in MessageText.__dataclass_fields__}
    data["msg_type"] = text.msg_type.value
    return data


def text_from_json(data: dict[str, Any]) -> MessageText:
    """The text variants stored by :func:`text_to_json`."""
    return MessageText(**{**data, "msg_type": MsgType(data["msg_type"])})


def alert_from_row(row: AlertRow) -> AlertRecord:
    """The store value of an alert row (CAP bytes exactly as stored)."""
    p = row.priority
    priority = Priority(
        level=Level(p["level"]), score=float(p["score"]), severity=Severity(p["severity"]),
        urgency=Urgency(p["urgency"]), certainty=Certainty(p["certainty"]),
        reasons=tuple(p["reasons"]), rules_version=p["rules_version"],
    )
    return AlertRecord(
        identifier=row.identifier, event_id=row.event_id, sender=row.sender,
        msg_type=MsgType(row.msg_type), priority=priority, sent=row.sent,
        expires=row.expires, cap_bytes=bytes(row.cap_bytes),
        texts=tuple(text_from_json(t) for t in row.texts or ()),
    )


def history_entry(status: DeliveryStatus, at: datetime,
                  note: str | None = None) -> dict[str, str]:
    """One status-history entry as JSON: the status, its UTC ISO-8601 time, and why."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at.isoformat()}: times must be timezone-aware")
    entry = {"status": status.value, "at": at.astimezone(UTC).isoformat()}
    if note:
        entry["note"] = note
    return entry


def delivery_to_columns(record: DeliveryRecord) -> dict[str, Any]:
    """The columns of a delivery row."""
    return {
        "idempotency_key": record.idempotency_key, "alert_identifier": record.alert_identifier,
        "subscription_id": record.subscription_id, "channel_kind": record.channel.kind.value,
        "address": record.channel.address, "status": record.status.value,
        "attempts": record.attempts,
        "status_history": [history_entry(status, at) for status, at in record.history],
        "kind": record.kind, "agency_id": record.agency_id,
        "level": None if record.level is None else Level(record.level).value,
        "language": record.language, "created_at": record.created_at,
        "not_before": record.not_before, "lease_until": record.lease_until,
        "last_error": record.last_error, "receipt": record.receipt,
        "items": list(record.items) or None, "digest_key": record.digest_key,
        "escalation_step": record.escalation_step,
    }


def delivery_from_row(row: DeliveryRow) -> DeliveryRecord:
    """The store value of a delivery row."""
    return DeliveryRecord(
        idempotency_key=row.idempotency_key, alert_identifier=row.alert_identifier,
        subscription_id=row.subscription_id,
        channel=ChannelAddress(ChannelKind(row.channel_kind), row.address),
        status=DeliveryStatus(row.status), attempts=row.attempts,
        history=tuple((DeliveryStatus(h["status"]), datetime.fromisoformat(h["at"]))
                      for h in row.status_history),
        kind=row.kind or "alert", agency_id=row.agency_id,
        level=None if row.level is None else Level(row.level), language=row.language,
        created_at=row.created_at, not_before=row.not_before, lease_until=row.lease_until,
        last_error=row.last_error, receipt=row.receipt, items=tuple(row.items or ()),
        digest_key=row.digest_key, escalation_step=int(row.escalation_step or 0),
    )


def match_to_columns(match: AlertMatch) -> dict[str, Any]:
    """The columns of an alert-match row; the exposure as :func:`exposure_to_json` writes it."""
    return {
        "alert_identifier": match.alert_identifier, "subscription_id": match.subscription_id,
        "agency_id": match.agency_id, "level": Level(match.level).value,
        "max_class": match.max_class, "exposure": exposure_to_json(match.exposure),
    }


def match_from_row(row: AlertMatchRow) -> AlertMatch:
    """The store value of an alert-match row."""
    return AlertMatch(
        alert_identifier=row.alert_identifier, subscription_id=row.subscription_id,
        agency_id=row.agency_id, level=Level(row.level), max_class=int(row.max_class),
        exposure=exposure_from_json(row.exposure),
    )


# --- Derived columns ---------------------------------------------------------------------


def delivery_idempotency_key(
    alert_identifier: str, subscription_id: str, channel: ChannelAddress
) -> str:
    """Deterministic key of one delivery: sha256 of its four parts, unit-separated.

    The separator (U+001F) keeps ``("ab", "c")`` and ``("a", "bc")`` apart.
    """
    parts = (alert_identifier, subscription_id, channel.kind.value, channel.address)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def union_of_areas(areas_wkt: Sequence[str], subscription_id: str) -> MultiPolygon | None:
    """Parse and check a subscription's WKT areas; their union as one MultiPolygon.

    Raises:
        SubscriptionError: an area is not WKT, not a polygon, invalid (self-intersecting...),
            empty, or outside lon/lat range.
    """
    parts: list[BaseGeometry] = []
    for index, wkt in enumerate(areas_wkt):
        where = f"subscription {subscription_id!r} area {index}"
        try:
            geometry = shapely.from_wkt(wkt)
        except (ShapelyError, TypeError) as exc:
            raise SubscriptionError(f"{where}: not WKT ({exc})") from exc
        if not isinstance(geometry, Polygon | MultiPolygon) or geometry.is_empty:
            got = ("an empty " if geometry.is_empty else "a ") + geometry.geom_type
            raise SubscriptionError(f"{where}: expected a non-empty Polygon or MultiPolygon, "
                                    f"got {got}")
        if not geometry.is_valid:
            reason = shapely.is_valid_reason(geometry)
            raise SubscriptionError(f"{where}: invalid polygon ({reason})")
        minx, miny, maxx, maxy = geometry.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise SubscriptionError(f"{where}: coordinates outside lon/lat range "
                                    f"(bounds {geometry.bounds}); expected EPSG:4326 lon lat")
        parts.append(geometry)
    if not parts:
        return None
    return as_multipolygon(shapely.union_all(parts) if len(parts) > 1 else parts[0])


def subscription_fingerprint(subscription: Subscription, area: BaseGeometry | None) -> str:
    """SHA-256 of what makes two subscriptions of one agency duplicates.

    Areas (normalised geometry), zone codes, hazard kinds and channels, order-insensitive:
    two subscriptions equal on these would deliver the same alerts to the same addresses.
    """
    content = {
        "area": None if area is None else shapely.to_wkb(shapely.normalize(area), hex=True),
        "zones": sorted(subscription.zone_codes),
        "kinds": sorted(subscription.hazard_kinds),
        "channels": sorted([c.kind.value, c.address] for c in subscription.channels),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
