"""Zones rasterised with cell-centre semantics, and their cache."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geo.errors import CRSMismatchError, GeoError, GeometryRepairedWarning
from geo.grid import Grid
from geo.zones import (
    RUN_BLOCK_CELLS,
    ZoneRaster,
    ZoneRasterCache,
    ZoneRuns,
    rasterize_zones,
    zone_runs,
    zones_fingerprint,
)


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


def test_zone_runs_follow_the_index_along_rows_and_over_row_ends() -> None:
    # EXPECTED_TWO_RECTANGLES row-major: 0 0 0 -1 -1 | 0 0 0 -1 -1 | 0 0 0 1 1 | 0 0 0 1 1 |
    # 0 0 0 1 1. Runs start where the value changes: at 0, 3, 5 (row 1 starts with 0 after
    # -1), 8, 10, 13, 15, 18, 20, 23; the last ends at 25 cells.
    runs = zone_runs(EXPECTED_TWO_RECTANGLES.astype(np.int16))

    assert runs.starts.dtype == np.uint64 and runs.zones.dtype == np.int32
    assert runs.starts.tolist() == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert runs.zones.tolist() == [0, -1, 0, -1, 0, 1, 0, 1, 0, 1]
    assert runs.n_runs == 10 and runs.shape == (5, 5)
    assert np.array_equal(runs.to_index(), EXPECTED_TWO_RECTANGLES)


def test_zone_runs_are_cut_every_block_of_cells_and_carry_over_row_ends() -> None:
    # One zone over 3 rows of (block + 7) cells = 3 * block + 21 cells: a run over the row
    # ends, cut at offsets block, 2 block and 3 block.
    index = np.zeros((3, RUN_BLOCK_CELLS + 7), dtype=np.int16)

    runs = zone_runs(index)

    block = RUN_BLOCK_CELLS
    assert runs.starts.tolist() == [0, block, 2 * block, 3 * block, 3 * block + 21]
    assert runs.zones.tolist() == [0, 0, 0, 0]


def test_zone_runs_round_trip_random_indices_of_every_integer_kind() -> None:
    rng = np.random.default_rng(3)
    for dtype in (np.int16, np.int32, np.int64, np.uint8):
        low = 0 if np.dtype(dtype).kind == "u" else -1
        # Blocks of 1 to 40 equal values, so runs of many lengths, some across blocks.
        values = rng.integers(low, 50, 700)
        index = np.repeat(values, rng.integers(1, 40, 700))[: 97 * 113].reshape(97, 113)

        runs = zone_runs(index.astype(dtype))

        assert np.array_equal(runs.to_index(), index)
        lengths = np.diff(runs.starts.astype(np.int64))
        assert lengths.min() >= 1 and lengths.max() <= RUN_BLOCK_CELLS
        # Adjacent runs differ in zone unless a block boundary cut them.
        same = runs.zones[1:] == runs.zones[:-1]
        assert np.all(runs.starts[1:-1][same] % RUN_BLOCK_CELLS == 0)


def test_an_empty_index_has_no_runs() -> None:
    runs = zone_runs(np.zeros((0, 5), dtype=np.int16))
    assert runs.n_runs == 0 and runs.starts.tolist() == [0]
    assert runs.to_index().shape == (0, 5)


def test_zone_runs_refuse_a_float_index_and_values_beyond_int32() -> None:
    with pytest.raises(GeoError, match="integers"):
        zone_runs(np.zeros((2, 2)))
    with pytest.raises(GeoError, match="int32"):
        zone_runs(np.array([[0, 2**40]], dtype=np.int64))


def test_inconsistent_zone_runs_are_refused() -> None:
    with pytest.raises(GeoError, match="increasing uint64 starts from 0 to 6"):
        ZoneRuns(np.array([0, 4, 3, 6], np.uint64), np.zeros(3, np.int32), (2, 3))
    with pytest.raises(GeoError, match="from 0 to 6"):
        ZoneRuns(np.array([0, 5], np.uint64), np.zeros(1, np.int32), (2, 3))


def test_a_zone_raster_computes_its_runs_once_and_its_index_is_read_only(
    grid_5x5: Grid,
) -> None:
    zr = rasterize_zones(two_rectangles(), grid_5x5)

    first = zr.runs

    assert zr.runs is first  # cached: every hazard reuses them
    assert np.array_equal(first.to_index(), zr.index)
    with pytest.raises(ValueError, match="read-only"):
        zr.index[0, 0] = 1  # would make the cached runs wrong


def test_zone_runs_are_rebuilt_after_a_round_trip_through_bytes(grid_5x5: Grid) -> None:
    zr = rasterize_zones(two_rectangles(), grid_5x5)

    back = ZoneRaster.from_bytes(zr.to_bytes())

    assert np.array_equal(back.runs.starts, zr.runs.starts)
    assert np.array_equal(back.runs.zones, zr.runs.zones)


def test_a_zone_raster_of_floats_is_refused(grid_5x5: Grid) -> None:
    with pytest.raises(GeoError, match="integers"):
        ZoneRaster(np.zeros((5, 5)), ("A",), ("Alpha",), grid_5x5)


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
