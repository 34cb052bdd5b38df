"""Matching footprints to subscriptions, exact at cell resolution, and exposure per subscriber.

Most tests use a 10 x 10 grid of 1-degree cells in EPSG:4326 covering lon 0..10, lat 0..10,
so cell ``(row, col)`` is lon ``col..col+1``, lat ``9-row..10-row`` and every answer can be
read off a sketch. A subscription matches when its polygon shares area with a footprint cell;
touching a cell along an edge is not enough.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from pyproj import Transformer
from shapely.geometry import Point, box

from alerts._matching_kernels import BLOCK
from alerts.errors import SubscriptionError
from alerts.matching import build_index, exposure_for, match
from alerts.model import Subscription
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.overlay import run_overlay
from geo.raster import Raster
from geo.region import GroupLayer, RegionPack
from geo.types import Group
from geo.zones import ZoneRaster, rasterize_zones

LONLAT = Grid.from_bounds((0, 0, 10, 10), (10, 10), "EPSG:4326")


def _cell(row: int, col: int) -> tuple[float, float, float, float]:
    return (col, 9 - row, col + 1, 10 - row)


def _sub(sid: str, *wkts: str, **kwargs: object) -> Subscription:
    return Subscription(sid, "A1", tuple(wkts), **kwargs)  # type: ignore[arg-type]


def _classes(**cells: int) -> np.ndarray:
    out = np.zeros((10, 10), dtype=np.uint8)
    for key, k in cells.items():
        row, col = (int(v) for v in key[1:].split("_"))
        out[row, col] = k
    return out


def test_polygon_touching_a_footprint_cell_only_along_its_edge_does_not_match() -> None:
    cls = _classes(c2_3=1)  # lon 3..4, lat 7..8
    subs = [_sub("edge", box(4, 7, 5, 8).wkt), _sub("corner", box(4, 8, 5, 9).wkt),
            _sub("sliver", box(3.999, 7, 5, 8).wkt)]
    result = match(build_index(subs, LONLAT), cls)
    assert result.as_dict() == {"sliver": 1}


def test_rectangle_is_answered_from_its_box_without_a_polygon_test() -> None:
    cls = _classes(c2_3=1, c3_4=3)
    result = match(build_index([_sub("r", box(3.5, 6.5, 4.5, 7.5).wkt)], LONLAT), cls)
    # The box spans cells (2,3), (2,4), (3,3), (3,4): the highest is class 3.
    assert result.as_dict() == {"r": 3}
    assert result.exact_tests == 0


def test_no_footprint_in_the_box_means_no_match_and_no_polygon_test() -> None:
    cls = _classes(c0_0=3)
    triangle = "POLYGON ((5 0, 9 0, 9 4, 5 0))"
    result = match(build_index([_sub("t", triangle)], LONLAT), cls)
    assert result.as_dict() == {} and result.exact_tests == 0


def test_box_entirely_in_the_footprint_matches_a_triangle_without_a_polygon_test() -> None:
    cls = np.full((10, 10), 2, dtype=np.uint8)
    result = match(build_index([_sub("t", "POLYGON ((5 0, 9 0, 9 4, 5 0))")], LONLAT), cls)
    assert result.as_dict() == {"t": 2} and result.exact_tests == 0


def test_triangle_reaches_only_the_cells_it_overlaps() -> None:
    # Triangle below the diagonal lat = lon: cell (2, 3) (lon 3..4, lat 7..8) is above it,
    # cell (7, 7) (lon 7..8, lat 2..3) below it; cell (2, 7) (lon 7..8, lat 7..8) is cut
    # by the diagonal (shares area) -> class 2 is the highest it reaches.
    cls = _classes(c2_3=3, c7_7=1, c2_7=2)
    result = match(build_index([_sub("t", "POLYGON ((0 0, 10 0, 10 10, 0 0))")], LONLAT), cls)
    assert result.as_dict() == {"t": 2}
    assert result.exact_tests == 1


def test_footprint_cell_in_a_hole_does_not_match() -> None:
    cls = _classes(c5_5=1)  # lon 5..6, lat 4..5
    ring = box(2, 1, 9, 8).exterior.coords
    holed = shapely.Polygon(ring, [box(4.5, 3.5, 6.5, 5.5).exterior.coords])
    filled = shapely.Polygon(ring)
    result = match(build_index([_sub("holed", holed.wkt), _sub("filled", filled.wkt)],
                               LONLAT), cls)
    assert result.as_dict() == {"filled": 1}


def test_multipolygon_matches_through_any_part_with_the_highest_class() -> None:
    cls = _classes(c0_0=1, c9_9=3)
    multi = shapely.MultiPolygon([box(0.2, 9.2, 0.8, 9.8), box(9.2, 0.2, 9.8, 0.8)])
    two_areas = _sub("two", box(0.2, 9.2, 0.8, 9.8).wkt, box(5, 5, 6, 6).wkt)
    result = match(build_index([_sub("multi", multi.wkt), two_areas], LONLAT), cls)
    assert result.as_dict() == {"multi": 3, "two": 1}


def test_min_class_leaves_out_subscriptions_that_see_only_lower_classes() -> None:
    cls = _classes(c0_0=1, c9_9=3)
    subs = [_sub("low", box(0, 9, 1, 10).wkt), _sub("high", box(9, 0, 10, 1).wkt)]
    assert match(build_index(subs, LONLAT), cls, min_class=2).as_dict() == {"high": 3}


def test_polygons_off_the_grid_never_match_and_clipped_ones_use_their_cells_on_it() -> None:
    cls = np.full((10, 10), 1, dtype=np.uint8)
    # Its box overlaps the grid's lower-left corner but the triangle itself stays outside.
    outside_corner = "POLYGON ((-3 0.5, 0.5 -3, -3 -3, -3 0.5))"  # x + y <= -2.5
    subs = [_sub("away", box(20, 20, 21, 21).wkt), _sub("corner", outside_corner),
            _sub("across", box(-3, 4.5, 0.5, 5.5).wkt)]
    assert match(build_index(subs, LONLAT), cls).as_dict() == {"across": 1}


def test_hazard_kind_filter_keeps_subscribers_of_that_kind_or_of_every_kind() -> None:
    cls = np.full((10, 10), 1, dtype=np.uint8)
    area = box(1, 1, 2, 2).wkt
    subs = [_sub("flood", area, hazard_kinds=frozenset({"flood_depth"})),
            _sub("wind", area, hazard_kinds=frozenset({"wind_gust"})), _sub("all", area)]
    index = build_index(subs, LONLAT)
    assert set(match(index, cls, hazard_kind="flood_depth").subscription_ids) == {"flood", "all"}
    with pytest.raises(SubscriptionError, match="unknown hazard kind 'lava'"):
        match(index, cls, hazard_kind="lava")


def test_zone_codes_match_when_their_zone_holds_a_footprint_cell() -> None:
    zones = gpd.GeoDataFrame({"zone_id": ["W", "E"]},
                             geometry=[box(0, 0, 5, 10), box(5, 0, 10, 10)], crs="EPSG:4326")
    zone_raster = rasterize_zones(zones, LONLAT)
    cls = _classes(c4_7=2)  # lon 7..8: zone E
    subs = [Subscription("w", "A1", zone_codes=("W",)),
            Subscription("e", "A1", zone_codes=("E",)),
            Subscription("both", "A1", areas_wkt=(box(0, 0, 1, 1).wkt,), zone_codes=("W", "E"))]
    index = build_index(subs, LONLAT, zone_raster=zone_raster)
    assert match(index, cls).as_dict() == {"e": 2, "both": 2}
    with pytest.raises(SubscriptionError, match="zone raster"):
        build_index(subs, LONLAT)
    with pytest.raises(SubscriptionError, match=r"unknown zone code\(s\) \['N'\]"):
        build_index([Subscription("n", "A1", zone_codes=("N",))], LONLAT,
                    zone_raster=zone_raster)


def test_class_index_of_another_shape_or_type_is_refused() -> None:
    index = build_index([_sub("a", box(1, 1, 2, 2).wkt)], LONLAT)
    with pytest.raises(SubscriptionError, match="uint8"):
        match(index, np.zeros((10, 10), dtype=np.int64))
    with pytest.raises(SubscriptionError, match=r"\(10, 10\)"):
        match(index, np.zeros((5, 5), dtype=np.uint8))


def _brute_force(polygon: shapely.Polygon, cls: np.ndarray) -> int:
    """Highest class among the cells sharing area with ``polygon``, by GEOS, cell by cell."""
    rows, cols = np.nonzero(cls)
    top = cls.shape[0]  # 1-degree cells from lat 0 up: row r is lat top-1-r .. top-r
    cells = shapely.box(cols, top - 1 - rows, cols + 1, top - rows)
    overlap = shapely.intersects(polygon, cells) & ~shapely.touches(polygon, cells)
    return int(cls[rows[overlap], cols[overlap]].max()) if overlap.any() else 0


def test_matching_agrees_with_geos_cell_by_cell_on_random_polygons() -> None:
    rng = np.random.default_rng(11)
    cls = np.where(rng.random((10, 10)) < 0.12, rng.integers(1, 4, (10, 10)), 0).astype(np.uint8)
    polygons = []
    while len(polygons) < 400:
        n = int(rng.integers(3, 9))
        if len(polygons) % 2:  # integer vertices: edges on grid lines and through corners
            pts = rng.integers(-1, 12, (n, 2)).astype(float)
        else:  # star polygons around a centre
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radius = rng.uniform(0.2, 3.0, n)
            centre = rng.uniform(-1, 11, 2)
            pts = centre + np.column_stack([radius * np.cos(angles), radius * np.sin(angles)])
        polygon = shapely.Polygon(pts)
        if polygon.is_valid and polygon.area > 0:
            polygons.append(polygon)
    subs = [_sub(f"p{i}", p.wkt) for i, p in enumerate(polygons)]
    got = match(build_index(subs, LONLAT), cls).as_dict()
    expected = {f"p{i}": k for i, p in enumerate(polygons) if (k := _brute_force(p, cls))}
    assert got == expected
    assert 50 < len(expected) < 350  # both outcomes are well represented


# --- Grids of many blocks -------------------------------------------------------------
# Matching reads the class grid through the highest and lowest class of each BLOCK x BLOCK
# block (16 x 16), so these grids span several blocks, with partial blocks at the edges.
# 1-degree cells from lon 0, lat 0 again: cell (row, col) is lon col..col+1 and
# lat H-1-row .. H-row on a grid of H rows.


def _lonlat_grid(height: int, width: int) -> Grid:
    return Grid.from_bounds((0, 0, width, height), (height, width), "EPSG:4326")


def test_rectangle_across_blocks_takes_the_highest_class_inside_it_not_beside_it() -> None:
    assert BLOCK == 16  # the cells below are placed around the block lines 16 and 32
    cls = np.ones((40, 40), dtype=np.uint8)
    cls[17, 17] = 3  # block (1, 1), one column left of the rectangle
    cls[30, 30] = 2  # block (1, 1), inside the rectangle
    cls[5, 20] = 3  # block (0, 1), above the rectangle
    # Rows 17..30, columns 18..33: lat 40-31 .. 40-17, lon 18..34.
    rectangle = box(18, 9, 34, 23)
    shifted = box(17, 9, 34, 23)  # one column further left: now holds cell (17, 17)
    subs = [_sub("rect", rectangle.wkt), _sub("shifted", shifted.wkt)]
    result = match(build_index(subs, _lonlat_grid(40, 40)), cls)
    assert result.as_dict() == {"rect": 2, "shifted": 3}
    assert result.exact_tests == 0


def test_polygon_across_blocks_reaches_a_high_cell_only_through_its_own_area() -> None:
    # The diagonal lat = lon / 2 from (0, 0) to (40, 20) splits the box lon 0..40, lat 0..20
    # (rows 20..39: block rows 1 and 2) into a lower and an upper triangle.
    cls = np.zeros((40, 40), dtype=np.uint8)
    cls[22, 2] = 3  # lon 2..3, lat 17..18: far above the diagonal (lat 1..1.5 there)
    cls[36, 30] = 2  # lon 30..31, lat 3..4: far below it (lat 15..15.5 there)
    cls[29, 20] = 1  # lon 20..21, lat 10..11: the diagonal (lat 10..10.5) cuts it
    lower = _sub("lower", "POLYGON ((0 0, 40 0, 40 20, 0 0))")
    upper = _sub("upper", "POLYGON ((0 0, 40 20, 0 20, 0 0))")
    index = build_index([lower, upper], _lonlat_grid(40, 40))
    result = match(index, cls)
    # Both boxes hold the class-3 cell: neither is decided from its box.
    assert result.as_dict() == {"lower": 2, "upper": 3} and result.exact_tests == 2
    assert match(index, cls, min_class=3).as_dict() == {"upper": 3}
    cls[36, 30] = 0
    assert match(index, cls).as_dict() == {"lower": 1, "upper": 3}


def test_matching_agrees_with_geos_on_a_grid_of_many_blocks() -> None:
    rng = np.random.default_rng(5)
    height, width = 45, 70  # 3 x 5 blocks, the last row and column of blocks partial
    # Patches of one class (whole blocks of one class) with scattered single cells.
    patches = rng.integers(0, 4, (-(-height // 8), -(-width // 8)))
    cls = np.kron(patches, np.ones((8, 8), dtype=np.int64))[:height, :width]
    noise = rng.random((height, width)) < 0.03
    cls[noise] = rng.integers(0, 4, int(noise.sum()))
    cls = cls.astype(np.uint8)
    polygons = []
    while len(polygons) < 240:
        centre = rng.uniform(-5, [width + 5, height + 5])
        size = rng.uniform(0.5, 30)
        if len(polygons) % 3 == 0:  # rectangles, some with integer sides on block lines
            x0, y0 = np.round(centre) if len(polygons) % 2 else centre
            polygon = box(x0, y0, x0 + size, y0 + rng.uniform(0.5, 30))
        else:  # star polygons
            n = int(rng.integers(3, 12))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radius = rng.uniform(0.2, 1.0, n) * size
            polygon = shapely.Polygon(
                centre + np.column_stack([radius * np.cos(angles), radius * np.sin(angles)]))
        if polygon.is_valid and polygon.area > 0:
            polygons.append(polygon)
    index = build_index([_sub(f"p{i}", p.wkt) for i, p in enumerate(polygons)],
                        _lonlat_grid(height, width))
    for min_class in (1, 2, 3):
        got = match(index, cls, min_class=min_class).as_dict()
        expected = {}
        for i, polygon in enumerate(polygons):
            k = _brute_force(polygon, np.where(cls >= min_class, cls, 0))
            if k:
                expected[f"p{i}"] = k
        assert got == expected
        assert 30 < len(expected) < 220  # matches and misses both well represented


# --- A projected grid and exposure per subscriber ---------------------------------------
# 5 x 5 cells of 100 m in EPSG:3035 (equal-area: each cell is 0.01 km2), 10 people a cell.
# Zones W = columns 0-1 (disability rate 0.1), E = columns 2-4 (rate 0.2). Flood: column 3
# is 0.3 m (class 1), column 4 is 2.0 m (class 3). A hospital in cell (2, 2), a shelter in
# cell (2, 4); one minute per 100 m, access threshold 3 min: column 4 (5 cells, 50 people,
# 10 with disabilities) is cut off from the hospital once it is flooded.

X0, Y0 = 4_000_000.0, 2_500_000.0
GRID_3035 = Grid.from_bounds((X0, Y0, X0 + 500, Y0 + 500), (5, 5), "EPSG:3035")
_TO_LONLAT = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)


def _lonlat_wkt(geom: shapely.Geometry) -> str:
    return shapely.transform(
        geom, lambda xy: np.column_stack(_TO_LONLAT.transform(xy[:, 0], xy[:, 1]))).wkt


def _cells_3035(row0: int, row1: int, col0: int, col1: int, inset_m: float = 0.0) -> object:
    """The cells rows row0..row1-1, cols col0..col1-1, shrunk by ``inset_m`` on every side."""
    return box(X0 + 100 * col0 + inset_m, Y0 + 500 - 100 * row1 + inset_m,
               X0 + 100 * col1 - inset_m, Y0 + 500 - 100 * row0 - inset_m)


def _region() -> RegionPack:
    zones = gpd.GeoDataFrame({"zone_id": ["W", "E"], "name": ["West", "East"]},
                             geometry=[_cells_3035(0, 5, 0, 2), _cells_3035(0, 5, 2, 5)],
                             crs="EPSG:3035")
    facilities = gpd.GeoDataFrame(
        {"facility_id": ["h1", "s1"], "name": ["Centre hospital", "East shelter"],
         "type": ["hospital", "shelter"]},
        geometry=[Point(X0 + 250, Y0 + 250), Point(X0 + 450, Y0 + 250)], crs="EPSG:3035")
    return RegionPack(
        name="tiny", population=Raster(np.ma.masked_array(np.full((5, 5), 10.0)), GRID_3035,
                                       "people"),
        zones=zones, groups={Group.DISABILITY: GroupLayer(
            Group.DISABILITY, rate_by_zone=pd.Series({"W": 0.1, "E": 0.2}))},
        facilities=facilities,
        friction=Raster(np.ma.masked_array(np.full((5, 5), 0.01)), GRID_3035, "min/m"),
        access_threshold_min=3.0,
    )


@pytest.fixture(scope="module")
def overlay() -> tuple[RegionPack, object, ZoneRaster]:
    depth = np.zeros((5, 5))
    depth[:, 3], depth[:, 4] = 0.3, 2.0
    hazard = HazardGrid(data=xr.DataArray(depth, dims=("y", "x")), grid=GRID_3035,
                        kind="flood_depth", units="m", nature="forecast", source="flood.tif",
                        checksum="sha256:00")
    region = _region()
    assert region.zones is not None
    return region, run_overlay(hazard, region), rasterize_zones(region.zones, GRID_3035)


def test_polygons_in_lon_lat_are_matched_on_a_projected_grid(overlay) -> None:
    _, result, _ = overlay
    subs = [_sub("col3", _lonlat_wkt(_cells_3035(1, 2, 3, 4, inset_m=10))),
            _sub("col1", _lonlat_wkt(_cells_3035(0, 5, 1, 2, inset_m=10))),
            _sub("cols2-4", _lonlat_wkt(_cells_3035(0, 1, 2, 5, inset_m=10)))]
    got = match(build_index(subs, GRID_3035), result.class_index).as_dict()
    assert got == {"col3": 1, "cols2-4": 3}


def test_exposure_of_a_zone_subscriber_is_the_sum_of_its_zone_rows(overlay) -> None:
    region, result, zone_raster = overlay
    summary = exposure_for(Subscription("e", "A1", zone_codes=("E",)), result, zone_raster)
    # Zone E: column 3 (50 people, class 1) and column 4 (50 people, class 3), rate 0.2.
    assert summary.population == pytest.approx(100)
    assert summary.disability == pytest.approx(20)
    assert [c.population for c in summary.by_class] == pytest.approx([50, 0, 50])
    assert summary.area_km2 == pytest.approx(0.10, rel=1e-6)  # 10 cells of 0.01 km2
    assert summary.cut_off_population == pytest.approx(50)
    assert summary.cut_off_disability == pytest.approx(10)
    assert [(f.name, f.class_label) for f in summary.facilities_hit] == [
        ("East shelter", "1.5 m and above")]
    west = exposure_for(Subscription("w", "A1", zone_codes=("W",)), result, zone_raster)
    assert west.population == 0 and west.facilities_hit == () and west.area_km2 == 0


def test_exposure_of_a_polygon_subscriber_counts_only_cells_centred_inside_it(overlay) -> None:
    region, result, zone_raster = overlay
    # Rows 0-1, columns 3-4 (4 cells): 20 people in class 1, 20 in class 3, rate 0.2; the
    # polygon stops 10 m short of each edge: the centres are still inside.
    top_right = _sub("tr", _lonlat_wkt(_cells_3035(0, 2, 3, 5, inset_m=10)))
    summary = exposure_for(top_right, result, zone_raster, region=region)
    assert [c.population for c in summary.by_class] == pytest.approx([20, 0, 20])
    assert summary.disability == pytest.approx(8)
    assert summary.area_km2 == pytest.approx(0.04, rel=1e-6)
    assert summary.facilities_hit == () and summary.cut_off_population == 0
    # Row 2 from x = 320 m: centres of columns 3 and 4 inside, the shelter too.
    row2 = _sub("r2", _lonlat_wkt(box(X0 + 320, Y0 + 210, X0 + 500, Y0 + 290)))
    summary = exposure_for(row2, result, zone_raster, region=region)
    assert summary.population == pytest.approx(20)
    assert [f.name for f in summary.facilities_hit] == ["East shelter"]


def test_polygon_exposure_without_the_region_pack_is_refused(overlay) -> None:
    _, result, zone_raster = overlay
    sub = _sub("tr", _lonlat_wkt(_cells_3035(0, 2, 3, 5)))
    with pytest.raises(SubscriptionError, match="needs the region pack"):
        exposure_for(sub, result, zone_raster)


def _big_overlay(seed: int = 5):
    """60 x 60 cells of 100 m: random people, two zones (west, east) with rates, a flood."""
    rng = np.random.default_rng(seed)
    grid = Grid.from_bounds((X0, Y0, X0 + 6000, Y0 + 6000), (60, 60), "EPSG:3035")
    zones = gpd.GeoDataFrame({"zone_id": ["W", "E"], "name": ["West", "East"]},
                             geometry=[box(X0, Y0, X0 + 3000, Y0 + 6000),
                                       box(X0 + 3000, Y0, X0 + 6000, Y0 + 6000)],
                             crs="EPSG:3035")
    people = rng.gamma(2.0, 5.0, (60, 60))
    region = RegionPack(name="big", population=Raster(np.ma.masked_array(people), grid, "people"),
                        zones=zones, groups={Group.DISABILITY: GroupLayer(
                            Group.DISABILITY, rate_by_zone=pd.Series({"W": 0.1, "E": 0.3}))})
    depth = rng.uniform(0, 2.5, (60, 60))
    hazard = HazardGrid(data=xr.DataArray(depth, dims=("y", "x")), grid=grid, kind="flood_depth",
                        units="m", nature="forecast", source="f.tif", checksum="sha256:01")
    result = run_overlay(hazard, region)
    return region, result, rasterize_zones(zones, grid), people


@pytest.mark.parametrize("cells", [(10, 17, 40, 52), (0, 8, 0, 9), (52, 60, 55, 60),
                                   (25, 35, 25, 35)])
def test_exposure_of_a_small_area_is_computed_on_its_window_exactly_as_on_the_whole_grid(
        cells) -> None:
    region, result, zone_raster, people = _big_overlay()
    row0, row1, col0, col1 = cells
    geom = box(X0 + 100 * col0 + 30, Y0 + 6000 - 100 * row1 + 30,
               X0 + 100 * col1 - 30, Y0 + 6000 - 100 * row0 - 30)
    summary = exposure_for(_sub("s", _lonlat_wkt(geom)), result, zone_raster, region=region)
    # The reference: every cell of the whole grid whose centre lies inside, summed by class.
    from geo.zones import rasterize_lonlat

    inside = rasterize_lonlat(shapely.from_wkt(_lonlat_wkt(geom)), result.population_grid,
                              all_touched=False, segment_max_deg=0.1)
    classes = result.class_index
    rate = np.where(zone_raster.index == 0, 0.1, 0.3)
    for c in summary.by_class:
        sel = inside & (classes == c.k)
        assert c.population == pytest.approx(people[sel].sum(), rel=1e-5)
        assert c.disability == pytest.approx((people * rate)[sel].sum(), rel=1e-5)
        assert c.area_km2 == pytest.approx(sel.sum() * 0.01, rel=1e-4)
    assert summary.population == pytest.approx(people[inside & (classes > 0)].sum(), rel=1e-5)


def test_exposure_of_zones_and_a_polygon_together_covers_both() -> None:
    from geo.zones import rasterize_lonlat

    region, result, zone_raster, people = _big_overlay()
    geom = box(X0 + 4000, Y0 + 4000, X0 + 5000, Y0 + 5000)  # inside the east zone
    both = exposure_for(_sub("b", _lonlat_wkt(geom), zone_codes=("W",)), result, zone_raster,
                        region=region)
    inside = (zone_raster.index == 0) | rasterize_lonlat(
        shapely.from_wkt(_lonlat_wkt(geom)), result.population_grid, all_touched=False,
        segment_max_deg=0.1)
    expected = people[inside & (result.class_index > 0)].sum()
    assert both.population == pytest.approx(expected, rel=1e-5)
