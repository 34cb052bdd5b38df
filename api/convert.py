"""Between the API's bodies and Tocsin's values, with the checks done at the edge.

A subscription is checked as the CLI checks it (:func:`alerts.subscriptions.validate_subscription`)
plus the API's own limits (vertices, area) and the webhook destination rules of dispatch
(https, public addresses unless allow-listed), so a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import shapely
from shapely.geometry import mapping as geojson_of

from alerts.channels._http import HttpPermanentError, HttpRetryableError, check_destination
from alerts.errors import SubscriptionError
from alerts.model import ChannelAddress, ChannelKind, DigestPolicy, QuietHours, Subscription
from alerts.subscriptions import parse_geojson_areas
from api.errors import ApiError, FieldProblem
from api.schemas import Channel, DigestIn, QuietHoursIn, SubscriptionIn, SubscriptionOut
from store.models import DeliveryRecord

Resolver = Callable[[str, int], list[str]]


def _count_positions(node: Any, limit: int, depth: int = 0) -> int:
    """Positions in a GeoJSON coordinates array, stopping once over ``limit``."""
    if depth > 6 or not isinstance(node, list):
        return 0
    if node and all(isinstance(v, int | float) and not isinstance(v, bool) for v in node):
        return 1
    total = 0
    for child in node:
        total += _count_positions(child, limit, depth + 1)
        if total > limit:
            break
    return total


def _geometries(data: dict[str, Any]) -> list[Any]:
    kind = data.get("type")
    if kind == "FeatureCollection" and isinstance(data.get("features"), list):
        return [f.get("geometry") for f in data["features"] if isinstance(f, dict)]
    if kind == "Feature":
        return [data.get("geometry")]
    return [data]


def area_wkt(area: dict[str, Any], *, max_vertices: int) -> tuple[str, ...]:
    """The polygons of a GeoJSON area as WKT, after the vertex limit.

    Raises:
        ApiError: 422 naming ``area`` when it has too many vertices or is not a polygon area.
    """
    vertices = 0
    for geometry in _geometries(area):
        if isinstance(geometry, dict):
            vertices += _count_positions(geometry.get("coordinates"), max_vertices)
    if vertices > max_vertices:
        raise _invalid("area", f"more than {max_vertices} vertices; simplify the area")
    try:
        return parse_geojson_areas(area)
    except (SubscriptionError, ValueError, TypeError) as exc:
        raise _invalid("area", str(exc)) from None


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", errors=[FieldProblem(field=field, message=message)])


def check_webhooks(channels: Sequence[Channel], field: str, allow_hosts: Sequence[str],
                   resolve: Resolver | None) -> None:
    """Refuse webhook addresses that dispatch would refuse (plain http, private addresses).

    A host that does not resolve now is accepted: DNS may come back, and dispatch checks
    again before every send.

    Raises:
        ApiError: 422 naming the channel's field.
    """
    for i, channel in enumerate(channels):
        if channel.kind != ChannelKind.WEBHOOK:
            continue
        try:
            if resolve is None:
                check_destination(channel.address, allow_hosts)
            else:
                check_destination(channel.address, allow_hosts, resolve=resolve)
        except HttpRetryableError:
            continue
        except HttpPermanentError as exc:
            raise _invalid(f"{field}.{i}.address", str(exc)) from None


def subscription_of(body: SubscriptionIn, subscription_id: str, agency_id: str, *,
                    max_vertices: int) -> Subscription:
    """The core subscription a request describes (not yet validated against the region)."""
    areas = area_wkt(body.area, max_vertices=max_vertices) if body.area is not None else ()
    quiet = body.quiet_hours
    return Subscription(
        subscription_id=subscription_id, agency_id=agency_id, areas_wkt=areas,
        zone_codes=tuple(body.zone_codes), hazard_kinds=frozenset(body.hazard_kinds),
        min_level=body.min_level,
        channels=tuple(ChannelAddress(c.kind, c.address) for c in body.channels),
        languages=tuple(body.languages),
        quiet_hours=QuietHours(quiet.start, quiet.end, quiet.timezone) if quiet else None,
        digest=DigestPolicy(body.digest.up_to_level, body.digest.interval_min)
        if body.digest else None,
        escalation=tuple(ChannelAddress(c.kind, c.address) for c in body.escalation),
        escalate_after_min=body.escalate_after_min,
    )


def subscription_out(sub: Subscription) -> SubscriptionOut:
    """The API's view of a stored subscription (its area as a GeoJSON MultiPolygon)."""
    area = None
    if sub.areas_wkt:
        polygons = [shapely.from_wkt(w) for w in sub.areas_wkt]
        parts = [p for g in polygons for p in getattr(g, "geoms", [g])]
        area = dict(geojson_of(shapely.MultiPolygon(parts)))
        area = {"type": area["type"], "coordinates": _lists(area["coordinates"])}
    quiet = sub.quiet_hours
    return SubscriptionOut(
        subscription_id=sub.subscription_id, agency_id=sub.agency_id, area=area,
        zone_codes=list(sub.zone_codes), hazard_kinds=sorted(sub.hazard_kinds),
        min_level=sub.min_level, channels=[Channel(kind=c.kind, address=c.address)
                                           for c in sub.channels],
        languages=list(sub.languages),
        quiet_hours=QuietHoursIn(start=quiet.start, end=quiet.end, timezone=quiet.timezone)
        if quiet else None,
        digest=DigestIn(up_to_level=sub.digest.up_to_level,
                        interval_min=sub.digest.interval_min) if sub.digest else None,
        escalation=[Channel(kind=c.kind, address=c.address) for c in sub.escalation],
        escalate_after_min=sub.escalate_after_min,
    )


def _lists(node: Any) -> Any:
    if isinstance(node, tuple | list):
        return [_lists(n) for n in node]
    return node


def delivery_out(record: DeliveryRecord, *, redact: Callable[[str], str]) -> dict[str, Any]:
    """A delivery as the API shows it: addresses redacted of credentials and queries."""
    return {
        "idempotency_key": record.idempotency_key, "alert_identifier": record.alert_identifier,
        "subscription_id": record.subscription_id, "kind": record.kind,
        "channel": {"kind": record.channel.kind, "address": redact(record.channel.address)},
        "status": record.status.value, "attempts": record.attempts, "level": record.level,
        "created_at": record.created_at, "not_before": record.not_before,
        "last_error": record.last_error, "receipt": record.receipt,
        "history": [{"status": status.value, "at": at.isoformat()}
                    for status, at in record.history],
    }
