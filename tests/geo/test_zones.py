"""Zones rasterised with cell-centre semantics, and their cache."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geo.errors import CRSMismatchError, GeoError, GeometryRepairedWarning
from geo.grid import Grid
from geo.zones import ZoneRaster, ZoneRasterCache, rasterize_zones, zones_fingerprint


def two_rectangles(crs: str | None = "EPSG:3035") -> gpd.GeoDataFrame:
    """Zone A = box(0, 0, 260, 500), zone B = box(140, 0, 500, 260) on ``grid_5x5``.

    Cell centres are at x, y in {50, 150, 250, 350, 450}; row 0 is the top (y = 450).
    A holds the centres with x < 260: columns 0-2, every row. B holds those with x > 140
    and y < 260: rows 2-4 (y = 250, 150, 50), columns 1-4. They overlap on rows 2-4,
    columns 1-2, which go to A, the first zone. Rows 0-1, columns 3-4 are in no zone.

    Expected index::

        0  0  0 -1 -1
        0  0  0 -1 -1
        0  0  0  1  1
        0  0  0  1  1
        0  0  0  1  1
    """
    return gpd.GeoDataFrame(
        {"zone_id": ["A", "B"], "name": ["Alpha", "Beta"]},
        geometry=[shapely.box(0, 0, 260, 500), shapely.box(140, 0, 500, 260)],
        crs=crs,
    )


EXPECTED_TWO_RECTANGLES = np.array(
    [
        [0, 0, 0, -1, -1],
        [0, 0, 0, -1, -1],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
    ]
)


def test_two_rectangles_are_rasterised_by_cell_centre_with_the_first_zone_winning_overlaps(
    grid_5x5: Grid,
) -> None:
    zr = rasterize_zones(two_rectangles(), grid_5x5)

    assert np.array_equal(zr.index, EXPECTED_TWO_RECTANGLES)
    assert zr.index.dtype == np.int16
    assert zr.zone_ids == ("A", "B") and zr.names == ("Alpha", "Beta")
    assert zr.grid is grid_5x5 and zr.n_zones == 2


def test_reversing_the_zone_order_gives_the_overlap_to_the_other_zone(grid_5x5: Grid) -> None:
    # B first: the overlap (rows 2-4, columns 1-2) goes to B, now index 0; A is index 1.
    zones = two_rectangles().iloc[::-1].reset_index(drop=True)
    zr = rasterize_zones(zones, grid_5x5)
    expected = np.array(
        [
            [1, 1, 1, -1, -1],
            [1, 1, 1, -1, -1],
            [1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
        ]
    )
    assert np.array_equal(zr.index, expected)
    assert zr.zone_ids == ("B", "A")


def test_zones_in_another_crs_are_reprojected_to_the_grid_first(grid_5x5: Grid) -> None:
    in_lat_lon = two_rectangles().to_crs("EPSG:4326")
    zr = rasterize_zones(in_lat_lon, grid_5x5)
    assert np.array_equal(zr.index, EXPECTED_TWO_RECTANGLES)


def test_zones_without_a_crs_are_refused(grid_5x5: Grid) -> None:
    with pytest.raises(CRSMismatchError, match="no CRS"):
        rasterize_zones(two_rectangles(crs=None), grid_5x5)


def test_an_invalid_bow_tie_zone_is_repaired_with_a_warning(grid_5x5: Grid) -> None:
    # The bow tie (0,0)-(500,400)-(500,0)-(0,400) crosses itself at (250, 200); repaired, it
    # is two triangles: left 0.8x < y < 400 - 0.8x (x < 250), right mirrored (x > 250).
    # Centres inside (none lies on an edge): x=50: y in 50..350 (rows 1-4); x=150: y=150,
    # 250 (rows 3, 2); x=250: none; x=350: rows 2, 3; x=450: rows 1-4.
    bow_tie = shapely.Polygon([(0, 0), (500, 400), (500, 0), (0, 400)])
    zones = gpd.GeoDataFrame({"zone_id": ["X"]}, geometry=[bow_tie], crs="EPSG:3035")
    assert not bow_tie.is_valid

    with pytest.warns(GeometryRepairedWarning, match=r"1 invalid zone polygon.*'X'"):
        zr = rasterize_zones(zones, grid_5x5)

    expected = np.array(
        [
            [-1, -1, -1, -1, -1],
            [0, -1, -1, -1, 0],
            [0, 0, -1, 0, 0],
            [0, 0, -1, 0, 0],
            [0, -1, -1, -1, 0],
        ]
    )
    assert np.array_equal(zr.index, expected)
    assert zr.names == ("X",)  # no name column: names are the ids


def test_more_than_32766_zones_use_an_int32_index() -> None:
    # 182 x 182 = 33,124 one-cell zones on a 182 x 182 grid: zone i is cell i, row-major.
    n = 182
    grid = Grid.from_bounds((0, 0, n, n), (n, n), "EPSG:3035")
    rows, cols = np.divmod(np.arange(n * n), n)
    boxes = shapely.box(cols, n - rows - 1, cols + 1, n - rows)
    zones = gpd.GeoDataFrame(
        {"zone_id": [f"z{i}" for i in range(n * n)]}, geometry=boxes, crs="EPSG:3035"
    )

    zr = rasterize_zones(zones, grid)

    assert zr.index.dtype == np.int32
    assert np.array_equal(zr.index.ravel(), np.arange(n * n))


def test_zone_ids_must_be_present_unique_and_not_the_reserved_outside(grid_5x5: Grid) -> None:
    zones = two_rectangles()
    with pytest.raises(GeoError, match="'zone_id' column"):
        rasterize_zones(zones.rename(columns={"zone_id": "code"}), grid_5x5)
    with pytest.raises(GeoError, match=r"repeated: \['A'\]"):
        rasterize_zones(zones.assign(zone_id=["A", "A"]), grid_5x5)
    with pytest.raises(GeoError, match="reserved"):
        rasterize_zones(zones.assign(zone_id=["A", "outside"]), grid_5x5)


def test_a_zone_raster_survives_a_round_trip_through_bytes(grid_5x5: Grid) -> None:
    zr = rasterize_zones(two_rectangles(), grid_5x5)

    back = ZoneRaster.from_bytes(zr.to_bytes())

    assert np.array_equal(back.index, zr.index) and back.index.dtype == np.int16
    assert back.zone_ids == zr.zone_ids and back.names == zr.names
    assert back.grid.same_as(grid_5x5)


def test_bytes_that_are_not_a_zone_raster_are_refused() -> None:
    with pytest.raises(GeoError, match="not a zone raster"):
        ZoneRaster.from_bytes(b"definitely not npz")


def test_the_cache_rasterises_once_per_zones_and_grid(grid_5x5: Grid, grid_10x10: Grid) -> None:
    cache = ZoneRasterCache()
    zones = two_rectangles()

    first = cache.get(zones, grid_5x5)
    again = cache.get(two_rectangles(), grid_5x5)  # equal content, another object
    other_grid = cache.get(zones, grid_10x10)
    moved = zones.assign(geometry=zones.geometry.translate(100, 0))
    other_zones = cache.get(moved, grid_5x5)

    assert again is first
    assert cache.misses == 3 and len(cache) == 3
    assert other_grid.index.shape == (10, 10)
    assert not np.array_equal(other_zones.index, first.index)


def test_fingerprint_changes_with_ids_names_and_geometry_but_not_object_identity() -> None:
    zones = two_rectangles()
    base = zones_fingerprint(zones)
    assert base == zones_fingerprint(two_rectangles())
    assert base.startswith("sha256:")
    assert base != zones_fingerprint(zones.assign(zone_id=["A", "C"]))
    assert base != zones_fingerprint(zones.assign(name=["Alpha", "Gamma"]))
    assert base != zones_fingerprint(zones.assign(geometry=zones.geometry.scale(1.01, 1.0)))


@pytest.mark.realdata
def test_georgia_counties_tile_a_grid_with_every_county_present(real_data: Path) -> None:
    # 159 counties (EPSG:26916, no .prj): on a 2 km grid every county holds at least one
    # cell centre, and every cell centre lies in at most one county.
    counties = gpd.read_file(real_data / "boundaries" / "georgia_counties_1990")
    counties = counties.set_crs("EPSG:26916", allow_override=True)
    zones = gpd.GeoDataFrame(
        {"zone_id": counties["AreaKey"].astype(str), "name": counties["AreaKey"].astype(str)},
        geometry=counties.geometry, crs=counties.crs,
    )
    minx, miny, maxx, maxy = zones.total_bounds
    shape = (int((maxy - miny) // 2000) + 1, int((maxx - minx) // 2000) + 1)
    grid = Grid.from_bounds((minx, miny, minx + 2000 * shape[1], miny + 2000 * shape[0]),
                            shape, "EPSG:26916")

    zr = rasterize_zones(zones, grid)

    present = np.unique(zr.index[zr.index >= 0])
    assert zr.n_zones == 159
    assert np.array_equal(present, np.arange(159))
    assert (zr.index == -1).any()  # the grid's corners lie outside Georgia
