"""Footprints to CAP polygons without shrinking, and CAP areas back to footprints."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely import MultiPolygon, Point, Polygon, box

from alerts.cap import render_cap
from alerts.cap_geometry import (
    CIRCLE_SEGMENTS,
    area_geometry,
    cap_polygons,
    circle_polygon,
    footprint_of,
)
from alerts.cap_parse import parse_cap
from alerts.errors import CapError
from alerts.model import (
    AlertEvent,
    Area,
    Category,
    Certainty,
    Info,
    MsgType,
    Scope,
    Severity,
    Status,
    Urgency,
)

GEOD = Geod(ellps="WGS84")


def _union(rings: tuple) -> shapely.Geometry:
    return shapely.union_all([Polygon([(lon, lat) for lat, lon in ring]) for ring in rings])


def _check_rings(rings: tuple, footprint: shapely.Geometry, max_vertices: int) -> None:
    for ring in rings:
        assert 4 <= len(ring) <= max_vertices
        assert ring[0] == ring[-1]
        assert Polygon([(lon, lat) for lat, lon in ring]).is_valid
    assert _union(rings).covers(footprint)


def test_a_square_within_budget_comes_back_unchanged_in_lat_lon_order() -> None:
    (ring,) = cap_polygons(box(7.0, 46.0, 7.5, 46.5))
    assert set(ring) == {(46.0, 7.0), (46.0, 7.5), (46.5, 7.5), (46.5, 7.0)}
    assert len(ring) == 5 and ring[0] == ring[-1]


def test_holes_are_filled_because_cap_polygons_have_none() -> None:
    donut = box(0, 0, 4, 4).difference(box(1, 1, 3, 3))
    (ring,) = cap_polygons(donut)
    assert _union((ring,)).equals(box(0, 0, 4, 4))


def test_a_round_footprint_is_simplified_to_the_budget_and_stays_tight() -> None:
    disc = Point(7.0, 46.0).buffer(0.1, quad_segs=64)  # 257 points
    rings = cap_polygons(disc, max_vertices=20)
    _check_rings(rings, disc, 20)
    # Covering, yet far from the bounding box (4/pi = 1.27 times the disc's area).
    assert _union(rings).area / disc.area < 1.1


def test_too_many_parts_keep_the_largest_and_merge_the_rest_into_their_hull() -> None:
    big = box(0, 0, 2, 2)
    # Sides 0.30, 0.28, ... 0.16: strictly decreasing, so "largest" is unambiguous.
    small = [box(5 + i, 5, 5 + i + 0.3 - 0.02 * i, 5 + 0.3 - 0.02 * i) for i in range(8)]
    footprint = MultiPolygon([big, *small])
    rings = cap_polygons(footprint, max_polygons=3)
    assert len(rings) == 3
    _check_rings(rings, footprint, 100)
    # Largest first, then the largest small square; the last ring is the hull of the seven
    # others: x from 6 to 12 + 0.16, y up to 5 + 0.28.
    assert _union(rings[:1]).equals(big) and _union(rings[1:2]).equals(small[0])
    assert _union(rings[-1:]).bounds == pytest.approx((6.0, 5.0, 12.16, 5.28), abs=1e-6)


def test_an_empty_or_areal_less_footprint_gives_no_polygon() -> None:
    assert cap_polygons(Polygon()) == ()
    assert cap_polygons(Point(7, 46)) == ()


def test_an_invalid_footprint_is_repaired_before_covering() -> None:
    bow_tie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    rings = cap_polygons(bow_tie)
    _check_rings(rings, shapely.make_valid(bow_tie), 100)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"max_vertices": 4}, "at least 5"),
    ({"max_polygons": 0}, "at least one polygon"),
])
def test_impossible_budgets_are_refused(kwargs: dict[str, int], expected: str) -> None:
    with pytest.raises(CapError, match=expected):
        cap_polygons(box(0, 0, 1, 1), **kwargs)


def test_a_projected_footprint_is_refused_rather_than_written_as_degrees() -> None:
    with pytest.raises(CapError, match="EPSG:4326"):
        cap_polygons(box(2_600_000, 1_200_000, 2_601_000, 1_201_000))


@st.composite
def blobs(draw: st.DrawFn) -> shapely.Geometry:
    """Unions of random discs and star polygons: many vertices, several parts, concavities."""
    n = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n):
        cx, cy = rng.uniform(-10, 10), rng.uniform(40, 50)
        k = int(rng.integers(8, 120))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(0.05, 1.0, k)
        parts.append(Polygon(np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]))
    return shapely.make_valid(shapely.union_all(parts))


@settings(max_examples=40, deadline=None)
@given(footprint=blobs(), max_vertices=st.integers(5, 60), max_polygons=st.integers(1, 6))
def test_cap_polygons_always_cover_the_footprint_within_the_budgets(
        footprint: shapely.Geometry, max_vertices: int, max_polygons: int) -> None:
    rings = cap_polygons(footprint, max_vertices=max_vertices, max_polygons=max_polygons)
    assert 1 <= len(rings) <= max_polygons
    _check_rings(rings, footprint, max_vertices)


@pytest.mark.parametrize(("lat", "lon", "radius_km"), [
    (46.2, 7.3, 25.0), (-33.9, 151.2, 300.0), (70.0, 20.0, 1000.0), (0.0, 0.0, 5.0),
])
def test_a_circle_polygon_covers_the_geodesic_circle(lat: float, lon: float,
                                                     radius_km: float) -> None:
    polygon = circle_polygon(lat, lon, radius_km)
    assert len(polygon.exterior.coords) == CIRCLE_SEGMENTS + 1
    n = 720
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), np.linspace(0, 360, n),
                             np.full(n, radius_km * 1000))
    assert polygon.covers(shapely.multipoints(np.c_[lons, lats]))
    # Vertices sit at r / cos(pi / 64) * 1.01: 1.13 % further out, barely larger.
    _, _, dist_m = GEOD.inv(np.full(CIRCLE_SEGMENTS + 1, lon), np.full(CIRCLE_SEGMENTS + 1, lat),
                            *np.asarray(polygon.exterior.coords).T)
    assert dist_m == pytest.approx(radius_km * 1010 / math.cos(math.pi / 64), rel=1e-9)


def test_a_zero_radius_circle_is_its_centre_and_a_negative_one_is_refused() -> None:
    assert circle_polygon(32.9525, -115.5527, 0).equals(Point(-115.5527, 32.9525))
    with pytest.raises(CapError, match="negative"):
        circle_polygon(0, 0, -1)


def test_area_geometry_looks_geocodes_up_by_scheme_then_by_value() -> None:
    area = Area("two zones", geocodes=(("zone", "Z1"), ("zone", "Z2"), ("zone", "Z3")))
    lookup = {"zone:Z1": box(0, 0, 1, 1), "Z2": box(1, 0, 2, 1)}
    geometry, unknown = area_geometry(area, lookup)
    assert geometry.equals(box(0, 0, 2, 1)) and unknown == ("zone:Z3",)
    assert area_geometry(area)[1] == ("zone:Z1", "zone:Z2", "zone:Z3")


def test_a_footprint_survives_render_and_parse_and_still_covers_the_original() -> None:
    disc = Point(7.0, 46.0).buffer(0.2, quad_segs=128)
    sent = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    info = Info(language="en-GB", category=(Category.MET,), event="Flood",
                urgency=Urgency.EXPECTED, severity=Severity.SEVERE, certainty=Certainty.LIKELY,
                headline="Flood", description="", instruction="",
                expires=sent + timedelta(hours=3),
                areas=(Area("disc", polygons=cap_polygons(disc, max_vertices=30)),))
    event = AlertEvent("t-1", "tocsin@example.org", sent, Status.TEST, MsgType.ALERT,
                       Scope.PUBLIC, infos=(info,))
    footprint = footprint_of(parse_cap(render_cap(event)))
    assert footprint.covers(disc)
    assert footprint.area / disc.area < 1.1
