"""Between the API's bodies and Tocsin's values, with the checks done at the edge.

A subscription is checked as the CLI checks it (:func:`alerts.subscriptions.validate_subscription`)
plus, first, what the API checks itself, each refusal naming the field: the GeoJSON area
(positions finite numbers in WGS 84's range, closed rings, a valid polygon, the vertex and
area limits) and the channel addresses dispatch would refuse (webhooks: https and public
addresses unless allow-listed, a real port; CAP feeds: a safe file name). A refused request
changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import shapely
from pyproj import Geod
from shapely.geometry import mapping as geojson_of
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from alerts.channels._http import HttpPermanentError, HttpRetryableError, check_destination
from alerts.channels.atom import is_safe_slug
from alerts.errors import SubscriptionError
from alerts.model import ChannelAddress, ChannelKind, DigestPolicy, QuietHours, Subscription
from alerts.subscriptions import parse_geojson_areas
from api.errors import invalid
from api.schemas import Channel, DigestIn, QuietHoursIn, SubscriptionIn, SubscriptionOut
from store.models import DeliveryRecord

Resolver = Callable[[str, int], list[str]]
_GEOD = Geod(ellps="WGS84")
_AREA_TYPES = ("Polygon", "MultiPolygon")
_BAND_WIDTH_DEG = 90.0  # area is summed over lon bands, each under half the globe
_DENSIFY_DEG = 0.5  # edges follow the lon/lat grid, as subscriptions are matched


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Positions:
    """Checks every position of an area's rings while counting them (the vertex limit)."""

    def __init__(self, max_vertices: int) -> None:
        self.max_vertices = max_vertices
        self.count = 0

    def position(self, node: Any, where: str) -> None:
        if not isinstance(node, list) or len(node) not in (2, 3) \
                or not all(_is_number(v) for v in node):
            raise invalid(where, "a position is [lon, lat] (or [lon, lat, height]), numbers")
        lon, lat = float(node[0]), float(node[1])
        if not (math.isfinite(lon) and math.isfinite(lat)
                and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise invalid(where, f"[{node[0]}, {node[1]}] is outside lon -180..180 / lat "
                                 "-90..90: is it [lon, lat] in WGS 84 (RFC 7946)?")
        self.count += 1
        if self.count > self.max_vertices:
            raise invalid("area", f"more than {self.max_vertices} vertices; simplify the area")

    def ring(self, node: Any, where: str) -> None:
        if not isinstance(node, list) or len(node) < 4:
            raise invalid(where, "a ring is a list of at least 4 positions")
        for i, position in enumerate(node):
            self.position(position, f"{where}.{i}")
        if node[0] != node[-1]:
            raise invalid(where, "the ring is not closed: its first and last positions differ")

    def polygon(self, node: Any, where: str) -> None:
        if not isinstance(node, list) or not node:
            raise invalid(where, "a polygon is a non-empty list of rings")
        for i, ring in enumerate(node):
            self.ring(ring, f"{where}.{i}")


def _geometries(data: dict[str, Any]) -> list[tuple[Any, str]]:
    kind = data.get("type")
    if kind == "FeatureCollection" and isinstance(data.get("features"), list):
        return [(f.get("geometry"), f"area.features.{i}.geometry")
                for i, f in enumerate(data["features"]) if isinstance(f, dict)]
    if kind == "Feature":
        return [(data.get("geometry"), "area.geometry")]
    return [(data, "area")]


def _check_crs(data: dict[str, Any]) -> None:
    crs = data.get("crs")
    properties = crs.get("properties") if isinstance(crs, dict) else None
    if crs is not None and not (isinstance(properties, dict)
                                and isinstance(properties.get("name"), str)):
        raise invalid("area.crs", "leave crs out (RFC 7946: WGS 84 lon/lat), or give "
                                  '{"type": "name", "properties": {"name": "EPSG:4326"}}')


def _check_coordinates(area: dict[str, Any], max_vertices: int) -> None:
    positions = _Positions(max_vertices)
    for geometry, where in _geometries(area):
        if not isinstance(geometry, dict) or geometry.get("type") not in _AREA_TYPES:
            continue  # parse_geojson_areas names what is not an area
        coordinates = geometry.get("coordinates")
        where = f"{where}.coordinates"
        if geometry["type"] == "Polygon":
            positions.polygon(coordinates, where)
        elif not isinstance(coordinates, list) or not coordinates:
            raise invalid(where, "a MultiPolygon is a non-empty list of polygons")
        else:
            for i, polygon in enumerate(coordinates):
                positions.polygon(polygon, f"{where}.{i}")


def area_km2(geometry: BaseGeometry) -> float:
    """The area a lon/lat polygon covers as subscriptions are matched (edges along the grid).

    Summed over 90-degree longitude bands, so that no part is ever half the globe or more
    (a geodesic area is only known modulo the globe's: a world-wide box would read as 0).
    """
    dense = shapely.segmentize(geometry, _DENSIFY_DEG)
    total_m2 = 0.0
    west = -180.0
    while west < 180.0:
        part = dense.intersection(shapely.box(west, -90.0, west + _BAND_WIDTH_DEG, 90.0))
        if not part.is_empty:
            total_m2 += abs(_GEOD.geometry_area_perimeter(part)[0])
        west += _BAND_WIDTH_DEG
    return total_m2 / 1e6


def area_wkt(area: dict[str, Any], *, max_vertices: int, max_area_km2: float) -> tuple[str, ...]:
    """The polygons of a GeoJSON area as WKT, each checked at the edge.

    Positions are numbers inside WGS 84's range, rings closed, at most ``max_vertices`` in
    all; each polygon is valid (no self-intersection) and at most ``max_area_km2``.

    Raises:
        ApiError: 422 naming ``area`` (or the part of it) that is wrong.
    """
    _check_crs(area)
    _check_coordinates(area, max_vertices)
    try:
        wkts = parse_geojson_areas(area)
    except (SubscriptionError, ValueError, TypeError, LookupError) as exc:
        raise invalid("area", str(exc)) from None
    for i, wkt in enumerate(wkts):
        geometry = shapely.from_wkt(wkt)
        if not geometry.is_valid:
            raise invalid("area", f"polygon {i} is invalid: {explain_validity(geometry)}")
        covered_km2 = area_km2(geometry)
        if covered_km2 > max_area_km2:
            raise invalid("area", f"polygon {i} covers {covered_km2:,.0f} km2, more than the "
                                  f"{max_area_km2:,.0f} km2 allowed")
    return wkts


def _port_problem(url: str) -> str | None:
    try:
        port = httpx.URL(url).port
    except (httpx.InvalidURL, TypeError, UnicodeError):
        return None  # check_destination says what is wrong with it
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is not between 1 and 65535"
    return None


def check_channels(channels: Sequence[Channel], field: str, allow_hosts: Sequence[str],
                   resolve: Resolver | None, *, agency_id: str) -> None:
    """Refuse channel addresses that dispatch would refuse, before anything is stored.

    Webhooks: plain http, private addresses (unless allow-listed), malformed URLs. CAP feeds:
    names that are not safe file names, or not the agency's own (its id, or its id then '-'
    or '.'), so that no agency writes into another's feed or the public one. A host that
    does not resolve now is accepted: DNS may come back, and dispatch checks again before
    every send.

    Raises:
        ApiError: 422 naming the channel's field (``channels.1.address``).
    """
    for i, channel in enumerate(channels):
        where = f"{field}.{i}.address"
        if channel.kind == ChannelKind.CAP_FEED and not is_safe_slug(channel.address):
            raise invalid(where, "a feed name is letters, digits, '-', '_' and '.', no leading "
                                 "dot, at most 200 characters")
        if channel.kind == ChannelKind.CAP_FEED and not (
                channel.address == agency_id or channel.address.startswith(
                    (f"{agency_id}-", f"{agency_id}."))):
            raise invalid(where, f"a CAP feed of this agency is named {agency_id!r} or starts "
                                 f"with '{agency_id}-'; {channel.address!r} is not its own")
        if channel.kind != ChannelKind.WEBHOOK:
            continue
        problem = _port_problem(channel.address)
        if problem:
            raise invalid(where, problem)
        try:
            if resolve is None:
                check_destination(channel.address, allow_hosts)
            else:
                check_destination(channel.address, allow_hosts, resolve=resolve)
        except HttpRetryableError:
            continue
        except (HttpPermanentError, UnicodeError) as exc:
            # UnicodeError: a host name IDNA refuses (httpx raises it on reading the host).
            raise invalid(where, str(exc)) from None


def subscription_of(body: SubscriptionIn, subscription_id: str, agency_id: str, *,
                    max_vertices: int, max_area_km2: float) -> Subscription:
    """The core subscription a request describes (not yet validated against the region)."""
    areas = (area_wkt(body.area, max_vertices=max_vertices, max_area_km2=max_area_km2)
             if body.area is not None else ())
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
