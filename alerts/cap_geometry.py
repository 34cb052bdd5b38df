"""Footprints to CAP polygons and back.

CAP areas are WGS 84 ``lat,lon`` rings with no holes, and receivers (cell broadcast,
IPAWS) limit the vertices. :func:`cap_polygons` turns a footprint into such rings
*without shrinking it*: every ring covers its part of the footprint, because an alert
that leaves out a street at the edge of a flood is wrong while one that reaches a little
further is only cautious. :func:`footprint_of` goes the other way, so external CAP alerts
enter the same pipeline as raster footprints.

Geometry here is planar in lon/lat degrees, the same space CAP draws its straight edges
in, so "covers" is checked where the receiver will apply it. The antimeridian is not
handled (a footprint crossing it must be split by the caller).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import shapely
from pyproj import Geod
from shapely import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from alerts.errors import CapError
from alerts.model import AlertEvent, Area

Ring = tuple[tuple[float, float], ...]
"""A closed CAP ring as ``((lat, lon), ...)``, first point repeated last."""

MIN_RING_POINTS = 5
"""The smallest budget that always fits: the bounding box, closed, is 5 points."""
CIRCLE_SEGMENTS = 64
"""Points of the geodesic polygon standing for a CAP circle."""
CIRCLE_MARGIN = 1.01
"""Edges straight in lon/lat bow inward of a geodesic circle by ~1e-5 of its radius at 25 km
and more for larger ones; 1 % more radius keeps the circle covered up to ~1000 km."""
COORD_DECIMALS = 7
"""Coordinates are written to 1e-7 degrees (about 1 cm); coverage is checked after rounding."""
_WORLD = box(-180.0, -90.0, 180.0, 90.0)
_GEOD = Geod(ellps="WGS84")
_FIRST_TOLERANCE_SHARE = 1e-4
_TOLERANCE_STEPS = 24


class UnknownGeocodeWarning(UserWarning):
    """A CAP geocode whose area the lookup does not know: that part of the footprint is absent."""


def cap_polygons(footprint: BaseGeometry, *, max_vertices: int = 100,
                 max_polygons: int = 10) -> tuple[Ring, ...]:
    """Turn a footprint (EPSG:4326, lon/lat) into CAP rings that cover it.

    Holes are filled (CAP polygons have none). When the footprint has more parts than
    ``max_polygons``, nothing is dropped: either the ``max_polygons - 1`` largest are kept
    and the rest wrapped in their convex hull, or all parts are grown together until they
    merge into few enough, whichever covers less area. Each part is then simplified until
    its ring has at most ``max_vertices`` points (closing point included): simplified by a
    tolerance and grown by 1.5 times it (mitred buffer), doubling the tolerance until the
    budget is met; the convex hull and finally the bounding box are the last resorts.
    Every ring returned is checked to cover its part.

    Args:
        footprint: Polygon or MultiPolygon (other parts of a collection are ignored) in
            lon/lat degrees.
        max_vertices: most points per ring, closing point included (at least 5).
        max_polygons: most rings returned (at least 1).

    Returns:
        Rings as ``((lat, lon), ...)``, closed, valid, largest part first; empty when the
        footprint has no area.

    Raises:
        CapError: budget too small, or coordinates outside lon -180..180 / lat -90..90.
    """
    if max_vertices < MIN_RING_POINTS:
        raise CapError(f"max_vertices={max_vertices}: a CAP ring budget needs at least "
                       f"{MIN_RING_POINTS} points")
    if max_polygons < 1:
        raise CapError(f"max_polygons={max_polygons}: at least one polygon is needed")
    parts = _polygon_parts(footprint)
    if not parts:
        return ()
    minx, miny, maxx, maxy = shapely.total_bounds(parts)
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise CapError(f"footprint bounds ({minx}, {miny}, {maxx}, {maxy}) are outside "
                       f"lon -180..180 / lat -90..90: is it in EPSG:4326, lon/lat order?")
    parts.sort(key=lambda part: part.area, reverse=True)
    if len(parts) > max_polygons:
        parts = _merge_parts(parts, max_polygons)
    return tuple(_to_ring(_cover_within_budget(part, max_vertices)) for part in parts)


def _polygon_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The polygonal parts of a geometry, repaired, with holes filled."""
    if geometry.is_empty:
        return []
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    parts: list[Polygon] = []
    for piece in shapely.get_parts(geometry):
        if isinstance(piece, Polygon) and piece.area > 0:
            parts.append(Polygon(piece.exterior))
        elif isinstance(piece, MultiPolygon | shapely.GeometryCollection):
            parts += _polygon_parts(piece)
    return parts


def _grow(geometry: BaseGeometry, tolerance: float, distance: float) -> BaseGeometry:
    """Simplify by ``tolerance`` then grow by ``distance + tolerance``: covers the input.

    Douglas-Peucker keeps the simplified boundary within ``tolerance`` of the original
    (Hausdorff), so growing it by more than that puts every original point inside. Growing
    the simplified shape, not the original, keeps the buffer cheap on raster staircases.
    """
    simplified = geometry.simplify(tolerance, preserve_topology=True)
    return simplified.buffer(distance + 1.5 * tolerance, join_style="mitre", mitre_limit=2.0)


def _candidates(shell: Polygon) -> Iterator[Polygon]:
    """Ever coarser polygons that should cover ``shell``, ending with the bounding box."""
    step = 10.0 ** -COORD_DECIMALS
    yield shell
    # Grown by two rounding steps: survives rounding to COORD_DECIMALS with the same vertices.
    yield Polygon(shell.buffer(2 * step, join_style="mitre", mitre_limit=2.0).exterior)
    minx, miny, maxx, maxy = shell.bounds
    tolerance = max(maxx - minx, maxy - miny) * _FIRST_TOLERANCE_SHARE
    for _ in range(_TOLERANCE_STEPS):
        grown = _grow(shell, tolerance, 0.0)
        if isinstance(grown, Polygon):
            yield Polygon(grown.exterior)
        tolerance *= 2
    yield shell.convex_hull
    # Rounded outward, with one more step of margin, so rounding can never cut the part.
    yield box(math.floor(minx / step) * step - step, math.floor(miny / step) * step - step,
              math.ceil(maxx / step) * step + step, math.ceil(maxy / step) * step + step)


def _merge_parts(parts: list[Polygon], max_polygons: int) -> list[Polygon]:
    """At most ``max_polygons`` polygons covering ``parts`` (sorted largest first).

    Two ways, the one with less total area wins: keep the ``max_polygons - 1`` largest and
    wrap the rest in their convex hull; or grow everything together (simplify, then buffer
    by a doubling distance) until the parts have merged into few enough.
    """
    rest = shapely.union_all(parts[max_polygons - 1:]).convex_hull
    by_hull = parts[:max_polygons - 1] + _polygon_parts(rest)
    union = shapely.union_all(parts)
    minx, miny, maxx, maxy = union.bounds
    distance = max(maxx - minx, maxy - miny) * _FIRST_TOLERANCE_SHARE
    for _ in range(_TOLERANCE_STEPS):
        # Simplifying by the growth distance itself keeps each buffer cheap.
        by_growth = _polygon_parts(_grow(union, distance, distance))
        if len(by_growth) <= max_polygons:
            by_growth.sort(key=lambda part: part.area, reverse=True)
            if sum(p.area for p in by_growth) < sum(p.area for p in by_hull):
                return by_growth
            break
        distance *= 2
    return by_hull


def _cover_within_budget(shell: Polygon, max_vertices: int) -> Polygon:
    for candidate in _candidates(shell):
        if not candidate.within(_WORLD):
            candidate = candidate.intersection(_WORLD)
        if not isinstance(candidate, Polygon) or candidate.is_empty:
            continue
        coords = np.round(np.asarray(candidate.exterior.coords), COORD_DECIMALS)
        if len(coords) > max_vertices:
            continue
        ring = Polygon(coords)
        if ring.is_valid and ring.covers(shell):
            return ring
    raise CapError(f"could not cover a footprint part of bounds {shell.bounds} within "
                   f"{max_vertices} points")  # unreachable: the bounding box always fits


def _to_ring(polygon: Polygon) -> Ring:
    return tuple((float(lat), float(lon)) for lon, lat in polygon.exterior.coords)


# --- CAP areas back to geometry ---------------------------------------------------------


def circle_polygon(lat: float, lon: float, radius_km: float) -> BaseGeometry:
    """A CAP circle as a geodesic polygon (WGS 84) that covers the circle.

    The :data:`CIRCLE_SEGMENTS` vertices lie at ``radius / cos(pi / n)`` plus a 1 % margin,
    so the polygon's edges (straight in lon/lat, not geodesics) pass outside the true circle
    rather than cutting into it. A zero radius is the centre point itself.

    Args:
        lat: centre latitude, degrees.
        lon: centre longitude, degrees.
        radius_km: radius in kilometres (CAP's unit).

    Returns:
        A Polygon in lon/lat, or a Point when ``radius_km`` is 0.
    """
    if radius_km < 0:
        raise CapError(f"circle radius {radius_km} km is negative")
    if radius_km == 0:
        return Point(lon, lat)
    n = CIRCLE_SEGMENTS
    azimuths = np.linspace(0.0, 360.0, n, endpoint=False)
    distance_m = radius_km * 1000.0 / math.cos(math.pi / n) * CIRCLE_MARGIN
    lons, lats, _ = _GEOD.fwd(np.full(n, lon), np.full(n, lat), azimuths, np.full(n, distance_m))
    return Polygon(list(zip(lons, lats, strict=True)))


def _ring_polygon(ring: Ring) -> BaseGeometry:
    polygon = Polygon([(lon, lat) for lat, lon in ring])
    return polygon if polygon.is_valid else shapely.make_valid(polygon)


def area_geometry(area: Area, geocode_lookup: Mapping[str, BaseGeometry] | None = None,
                  ) -> tuple[BaseGeometry, tuple[str, ...]]:
    """The geometry of one CAP area and the geocodes that could not be placed.

    Geocodes are looked up as ``"valueName:value"`` first, then as the bare ``value``.

    Args:
        area: the CAP area.
        geocode_lookup: geometries (EPSG:4326) by geocode, e.g. a region pack's zones.

    Returns:
        ``(geometry, unknown)``: the union of polygons, circles and known geocodes in lon/lat
        (empty when none), and the unknown geocodes as ``"valueName:value"``.
    """
    pieces = [_ring_polygon(ring) for ring in area.polygons]
    pieces += [circle_polygon(lat, lon, radius) for (lat, lon), radius in area.circles]
    unknown = []
    for name, value in area.geocodes:
        found = None
        if geocode_lookup is not None:
            found = geocode_lookup.get(f"{name}:{value}", geocode_lookup.get(value))
        if found is None:
            unknown.append(f"{name}:{value}")
        else:
            pieces.append(found)
    geometry = shapely.union_all(pieces) if pieces else Polygon()
    return geometry, tuple(unknown)


def footprint_of(event: AlertEvent,
                 geocode_lookup: Mapping[str, BaseGeometry] | None = None) -> BaseGeometry:
    """The footprint of a CAP message: the union of every area of every info.

    Args:
        event: a parsed or rendered CAP message.
        geocode_lookup: geometries (EPSG:4326) by geocode (``"SAME:006109"`` or
            ``"006109"``).

    Returns:
        A shapely geometry in lon/lat (EPSG:4326): polygons, plus points for zero-radius
        circles; empty when the message has no placeable area.

    Warns:
        UnknownGeocodeWarning: a geocode the lookup does not know (named in the message).
    """
    pieces = []
    unknown: list[str] = []
    for info in event.infos:
        for area in info.areas:
            geometry, missing = area_geometry(area, geocode_lookup)
            pieces.append(geometry)
            unknown += [code for code in missing if code not in unknown]
    if unknown:
        warnings.warn(f"CAP message {event.identifier}: geocodes not in the lookup, left out "
                      f"of the footprint: {', '.join(unknown)}", UnknownGeocodeWarning,
                      stacklevel=2)
    return shapely.union_all(pieces) if pieces else Polygon()
