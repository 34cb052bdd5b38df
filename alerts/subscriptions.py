"""Subscriptions: areas from GeoJSON, and the checks a subscription must pass before storing.

An agency subscribes with polygons (GeoJSON, EPSG:4326 ``[lon, lat]``, kept as WKT) and/or
zone codes of the region pack. :func:`validate_subscription` refuses, with one
:class:`~alerts.errors.SubscriptionError` listing every problem found, anything that would
give a wrong or surprising delivery: self-intersecting or enormous polygons, areas outside
the region, unknown zone codes or hazard kinds, a duplicate of an existing subscription,
malformed channel addresses, languages or quiet hours. It never changes its input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely
from pyproj import Geod
from shapely.geometry import box, shape
from shapely.validation import explain_validity

from alerts.errors import SubscriptionError
from alerts.model import ChannelAddress, ChannelKind, QuietHours, Subscription
from geo.types import BBox, HazardKind

MAX_AREA_KM2 = 1_000_000.0
"""Largest subscription polygon accepted: about a large country; bigger is almost always a
mistake (swapped coordinates, a world-wide box) and would match every event."""

_GEOD = Geod(ellps="WGS84")
_ACCEPTED_CRS = {"urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84",
                 "urn:ogc:def:crs:EPSG::4326", "EPSG:4326"}
_AREA_TYPES = ("Polygon", "MultiPolygon")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                    r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LANGUAGE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_MQTT_TOPIC_MAX_BYTES = 65535  # MQTT 3.1.1 / 5: a UTF-8 string of at most 65,535 bytes
_LISTED = 5  # how many valid choices an error message suggests


def parse_geojson_areas(data: dict[str, Any]) -> tuple[str, ...]:
    """Polygons of a GeoJSON object as EPSG:4326 WKT (lon lat), one per (multi)polygon.

    Accepts a ``Feature``, a ``FeatureCollection``, a ``Polygon`` or a ``MultiPolygon``
    (RFC 7946: ``[lon, lat]`` in WGS84). Validity (self-intersection, size) is checked by
    :func:`validate_subscription`, not here, so a user sees every problem at once.

    Args:
        data: the parsed GeoJSON (``json.load`` output).

    Returns:
        One WKT string per Polygon or MultiPolygon geometry, in document order.

    Raises:
        SubscriptionError: not a GeoJSON object of those types, a feature without a polygon
            geometry, malformed coordinates, or a ``crs`` member other than WGS84 lon/lat.
    """
    if not isinstance(data, dict) or "type" not in data:
        raise SubscriptionError("GeoJSON area: expected an object with a 'type' member")
    _check_geojson_crs(data)
    kind = data["type"]
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list) or not features:
            raise SubscriptionError("GeoJSON FeatureCollection has no 'features' list")
        geometries = [_feature_geometry(f, i) for i, f in enumerate(features)]
    elif kind == "Feature":
        geometries = [_feature_geometry(data, 0)]
    elif kind in _AREA_TYPES:
        geometries = [data]
    else:
        raise SubscriptionError(
            f"GeoJSON type {kind!r} is not an area; expected Feature, FeatureCollection, "
            "Polygon or MultiPolygon"
        )
    return tuple(_geometry_wkt(g, i) for i, g in enumerate(geometries))


def validate_subscription(
    sub: Subscription,
    *,
    region_bounds_lonlat: BBox | None,
    zone_ids: Collection[str] | None,
    existing: Sequence[Subscription] = (),
    max_area_km2: float = MAX_AREA_KM2,
) -> Subscription:
    """Check a subscription before it is stored; return it unchanged when it is valid.

    Args:
        sub: the subscription to check.
        region_bounds_lonlat: the region's ``(min lon, min lat, max lon, max lat)``; polygons
            entirely outside it are refused. ``None`` skips that check.
        zone_ids: zone ids of the region pack; ``None`` skips the zone-code check (but zone
            codes given without a region that has zones are then not checked at all).
        existing: subscriptions already stored, for the duplicate check (one with the same
            ``subscription_id`` is the one being replaced and is ignored).
        max_area_km2: largest geodesic area accepted for one polygon.

    Returns:
        ``sub`` itself.

    Raises:
        SubscriptionError: listing every problem found, each naming the field and value.
    """
    problems: list[str] = []
    if not sub.subscription_id.strip():
        problems.append("subscription_id is empty")
    if not sub.agency_id.strip():
        problems.append("agency_id is empty")
    if not sub.areas_wkt and not sub.zone_codes:
        problems.append("no area: give at least one polygon or one zone code")
    problems += _area_problems(sub.areas_wkt, region_bounds_lonlat, max_area_km2)
    problems += _zone_problems(sub.zone_codes, zone_ids)
    problems += _kind_problems(sub.hazard_kinds)
    problems += _channel_problems(sub.channels)
    problems += [f"escalation {p}" for p in _channel_problems(sub.escalation)]
    if sub.escalation and not sub.escalate_after_min > 0:
        problems.append(f"escalate_after_min must be positive, got {sub.escalate_after_min}")
    problems += _language_problems(sub.languages)
    if sub.quiet_hours is not None:
        problems += _quiet_hours_problems(sub.quiet_hours)
    if sub.digest is not None and sub.digest.interval_min <= 0:
        problems.append(f"digest interval_min must be positive, got {sub.digest.interval_min}")
    duplicate = _duplicate_of(sub, existing) if not problems else None
    if duplicate is not None:
        problems.append(
            f"duplicate of subscription {duplicate.subscription_id!r} of agency "
            f"{sub.agency_id!r} (same areas, zone codes and hazard kinds)"
        )
    if problems:
        listed = "; ".join(problems)
        raise SubscriptionError(f"subscription {sub.subscription_id!r} is invalid: {listed}")
    return sub


# --- GeoJSON ------------------------------------------------------------------------------


def _check_geojson_crs(data: dict[str, Any]) -> None:
    crs = data.get("crs")
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if name not in _ACCEPTED_CRS:
        raise SubscriptionError(
            f"GeoJSON crs {name or crs!r} is not supported; give WGS84 [lon, lat] (RFC 7946)"
        )


def _feature_geometry(feature: Any, i: int) -> dict[str, Any]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise SubscriptionError(f"GeoJSON feature {i} is not an object of type 'Feature'")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in _AREA_TYPES:
        found = geometry.get("type") if isinstance(geometry, dict) else geometry
        raise SubscriptionError(
            f"GeoJSON feature {i} has geometry {found!r}; expected Polygon or MultiPolygon"
        )
    return geometry


def _geometry_wkt(geometry: dict[str, Any], i: int) -> str:
    try:
        geom = shape(geometry)
    except (ValueError, TypeError, IndexError, AttributeError, shapely.errors.GEOSException) as exc:
        raise SubscriptionError(
            f"GeoJSON geometry {i} ({geometry.get('type')}) has malformed coordinates: {exc}"
        ) from exc
    if geom.is_empty:
        raise SubscriptionError(f"GeoJSON geometry {i} ({geometry.get('type')}) is empty")
    return shapely.to_wkt(shapely.force_2d(geom), rounding_precision=-1)


# --- Checks -------------------------------------------------------------------------------


def _area_problems(
    areas_wkt: Iterable[str], bounds: BBox | None, max_area_km2: float
) -> list[str]:
    problems: list[str] = []
    region = box(*bounds) if bounds is not None else None
    for i, wkt in enumerate(areas_wkt):
        where = f"area {i}"
        try:
            geom = shapely.from_wkt(wkt)
        except shapely.errors.GEOSException as exc:
            problems.append(f"{where} is not valid WKT ({exc}): {wkt[:60]!r}")
            continue
        if geom.geom_type not in _AREA_TYPES:
            problems.append(f"{where} is a {geom.geom_type}; expected Polygon or MultiPolygon")
            continue
        if geom.is_empty:
            problems.append(f"{where} is an empty polygon")
            continue
        minx, miny, maxx, maxy = geom.bounds
        if not all(math.isfinite(v) for v in geom.bounds) or minx < -180 or maxx > 180 \
                or miny < -90 or maxy > 90:
            problems.append(
                f"{where} has coordinates outside lon -180..180 / lat -90..90 (bounds "
                f"{_fmt_bounds(geom.bounds)}): is it [lon, lat] in WGS84?"
            )
            continue
        if not geom.is_valid:
            problems.append(f"{where} is not a valid polygon: {explain_validity(geom)}")
            continue
        area_km2 = abs(_GEOD.geometry_area_perimeter(geom)[0]) / 1e6
        if area_km2 > max_area_km2:
            problems.append(
                f"{where} covers {area_km2:,.0f} km2, more than the {max_area_km2:,.0f} km2 "
                "allowed for one subscription area"
            )
        if region is not None and not geom.intersects(region):
            problems.append(
                f"{where} (bounds {_fmt_bounds(geom.bounds)}) lies entirely outside the "
                f"region (bounds {_fmt_bounds(bounds)})"  # type: ignore[arg-type]
            )
    return problems


def _zone_problems(zone_codes: Sequence[str], zone_ids: Collection[str] | None) -> list[str]:
    if not zone_codes or zone_ids is None:
        return []
    known = set(zone_ids)
    unknown = sorted({code for code in zone_codes if code not in known})
    if not unknown:
        return []
    examples = sorted(known)[:_LISTED]
    hint = f"valid codes include {examples}" if examples else "the region has no zones"
    return [f"unknown zone code(s) {unknown[:20]}; {hint}"]


def _kind_problems(kinds: Collection[str]) -> list[str]:
    valid = {kind.value for kind in HazardKind}
    unknown = sorted(str(k) for k in kinds if k not in valid)
    if not unknown:
        return []
    return [f"unknown hazard kind(s) {unknown}; valid kinds are {sorted(valid)}"]


def _channel_problems(channels: Sequence[ChannelAddress]) -> list[str]:
    problems: list[str] = []
    for i, channel in enumerate(channels):
        try:
            kind = ChannelKind(channel.kind)
        except ValueError:
            problems.append(
                f"channel {i} has unknown kind {channel.kind!r}; valid kinds are "
                f"{[k.value for k in ChannelKind]}"
            )
            continue
        reason = _address_problem(kind, channel.address)
        if reason:
            problems.append(f"channel {i} ({kind.value}) address {channel.address!r}: {reason}")
    return problems


def _address_problem(kind: ChannelKind, address: str) -> str | None:
    if not isinstance(address, str) or not address.strip():
        return "empty"
    if kind is ChannelKind.EMAIL and not _EMAIL.match(address):
        return "not an e-mail address (expected name@example.org)"
    if kind is ChannelKind.WEBHOOK:
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "not an http(s) URL (expected https://host/path)"
    if kind is ChannelKind.SMS and not _E164.match(address):
        return "not an E.164 phone number (expected '+' then 7 to 15 digits, e.g. +41791234567)"
    if kind is ChannelKind.MQTT:
        if "+" in address or "#" in address:
            return "MQTT topics to publish on may not hold wildcards '+' or '#'"
        if "\x00" in address or len(address.encode("utf-8")) > _MQTT_TOPIC_MAX_BYTES:
            return "not a valid MQTT topic (NUL character or longer than 65,535 bytes)"
    return None


def _language_problems(languages: Sequence[str]) -> list[str]:
    if not languages:
        return ["no language: give at least one, e.g. 'en'"]
    bad = [lang for lang in languages if not isinstance(lang, str) or not _LANGUAGE.match(lang)]
    if bad:
        return [f"language(s) {bad} not in the form 'xx' or 'xx-YY' (e.g. 'en', 'fr-CH')"]
    return []


def _quiet_hours_problems(quiet: QuietHours) -> list[str]:
    problems = [
        f"quiet hours {name} {value!r} is not a time HH:MM (00:00 to 23:59)"
        for name, value in (("start", quiet.start), ("end", quiet.end))
        if not isinstance(value, str) or not _HH_MM.match(value)
    ]
    if not problems and quiet.start == quiet.end:
        problems.append(f"quiet hours start and end are both {quiet.start}: an empty span")
    try:
        ZoneInfo(quiet.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        problems.append(
            f"quiet hours time zone {quiet.timezone!r} is not an IANA time zone "
            "(e.g. 'Europe/Zurich', 'America/New_York', 'UTC')"
        )
    return problems


def _duplicate_of(sub: Subscription, existing: Sequence[Subscription]) -> Subscription | None:
    key = _identity(sub)
    for other in existing:
        if other.subscription_id == sub.subscription_id or other.agency_id != sub.agency_id:
            continue
        if _identity(other) == key:
            return other
    return None


def _identity(sub: Subscription) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """What makes two subscriptions of one agency the same: areas, zones and kinds."""
    areas = set()
    for wkt in sub.areas_wkt:
        try:
            geom = shapely.normalize(shapely.from_wkt(wkt))
        except shapely.errors.GEOSException:
            areas.add(wkt)
            continue
        areas.add(shapely.to_wkt(geom, rounding_precision=7))
    return frozenset(areas), frozenset(sub.zone_codes), frozenset(sub.hazard_kinds)


def _fmt_bounds(bounds: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in bounds) + ")"
