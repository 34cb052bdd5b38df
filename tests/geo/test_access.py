"""Travel time to care: hand-computed times, walls, the incremental hazard recompute."""

from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from geo.access import (
    AccessBaseline,
    access_under_hazard,
    compute_access_baseline,
    newly_cut_off,
    times_on_grid,
    travel_time_min,
)
from geo.errors import (
    CacheFormatError,
    CRSMismatchError,
    GridMismatchError,
    TargetsIgnoredWarning,
)
from geo.grid import Grid
from geo.raster import Raster

R2 = math.sqrt(2.0)
CENTRE_5X5 = np.array([[250.0, 250.0]])  # centre of cell (row 2, col 2) of grid_5x5


def _friction(grid: Grid, values: np.ndarray | float = 0.01) -> Raster:
    data = np.broadcast_to(np.asarray(values, dtype=np.float64), grid.shape).copy()
    return Raster(np.ma.masked_invalid(data), grid, "min/m", "friction")


def _cell_centre(grid: Grid, row: int, col: int) -> tuple[float, float]:
    return grid.transform @ (col + 0.5, row + 0.5)


def _facilities(grid: Grid, cells: list[tuple[int, int]], types: list[str]) -> gpd.GeoDataFrame:
    points = [shapely.Point(_cell_centre(grid, r, c)) for r, c in cells]
    return gpd.GeoDataFrame(
        {"facility_id": [f"F{i}" for i in range(len(cells))], "name": "x", "type": types},
        geometry=points,
        crs=grid.crs,
    )


def test_uniform_friction_gives_one_minute_per_step_and_root_two_per_diagonal(
    grid_5x5: Grid,
) -> None:
    # 0.01 min/m over 100 m cells: 1 min per orthogonal step, sqrt(2) per diagonal step.
    times = travel_time_min(_friction(grid_5x5), CENTRE_5X5)

    expected = np.array(
        [
            [2 * R2, 1 + R2, 2, 1 + R2, 2 * R2],
            [1 + R2, R2, 1, R2, 1 + R2],
            [2, 1, 0, 1, 2],
            [1 + R2, R2, 1, R2, 1 + R2],
            [2 * R2, 1 + R2, 2, 1 + R2, 2 * R2],
        ]
    )
    np.testing.assert_allclose(times, expected, rtol=1e-12)
    assert times[0, 0] == pytest.approx(2.83, abs=0.005)


def test_a_wall_with_one_gap_forces_the_detour(grid_5x5: Grid) -> None:
    # Hospital in cell (0, 0); row 2 is impassable except its last cell (2, 4). Reaching
    # (4, 0) means going to the gap (2 rows, 4 cols: 2 diagonals + 2 steps = 2 + 2 sqrt 2)
    # and back (the same again): 4 + 4 sqrt(2) = 9.66 min instead of 4 min.
    wall = np.zeros((5, 5), dtype=bool)
    wall[2, :4] = True
    hospital = np.array([_cell_centre(grid_5x5, 0, 0)])

    open_times = travel_time_min(_friction(grid_5x5), hospital)
    times = travel_time_min(_friction(grid_5x5), hospital, impassable=wall)

    assert open_times[4, 0] == pytest.approx(4.0)
    assert times[4, 0] == pytest.approx(4 + 4 * R2)
    assert times[2, 4] == pytest.approx(2 + 2 * R2)
    assert np.isinf(times[wall]).all()


def test_cells_beyond_a_closed_wall_are_unreachable(grid_5x5: Grid) -> None:
    friction = np.full((5, 5), 0.01)
    friction[2, :] = np.nan  # no-data friction is impassable
    times = travel_time_min(_friction(grid_5x5, friction), np.array([_cell_centre(grid_5x5, 0, 0)]))

    assert np.isinf(times[2:]).all()
    assert np.isfinite(times[:2]).all()


def test_non_square_cells_use_their_own_spacing_per_axis() -> None:
    # Cells 100 m wide and 200 m tall at 0.01 min/m: 1 min east-west, 2 min north-south,
    # sqrt(1 + 4) = sqrt(5) min diagonally.
    grid = Grid.from_bounds((0, 0, 300, 600), (3, 3), "EPSG:3035")
    times = travel_time_min(_friction(grid), np.array([_cell_centre(grid, 1, 1)]))

    expected = np.array(
        [[math.sqrt(5), 2, math.sqrt(5)], [1, 0, 1], [math.sqrt(5), 2, math.sqrt(5)]]
    )
    np.testing.assert_allclose(times, expected, rtol=1e-12)


def test_the_nearest_of_several_targets_wins(grid_5x5: Grid) -> None:
    targets = np.array([_cell_centre(grid_5x5, 0, 0), _cell_centre(grid_5x5, 4, 4)])
    times = travel_time_min(_friction(grid_5x5), targets)

    assert times[0, 0] == 0.0
    assert times[4, 4] == 0.0
    assert times[0, 4] == pytest.approx(4.0)  # 4 steps from either corner
    assert times[2, 2] == pytest.approx(2 * R2)


def test_targets_outside_the_grid_are_ignored_with_a_warning(grid_5x5: Grid) -> None:
    targets = np.vstack([CENTRE_5X5, [[9_000.0, 9_000.0]]])

    with pytest.warns(TargetsIgnoredWarning, match="1 of 2 targets ignored: 1 outside"):
        times = travel_time_min(_friction(grid_5x5), targets)

    assert times[2, 2] == 0.0
    assert times[0, 0] == pytest.approx(2 * R2)


def test_no_target_at_all_leaves_every_cell_unreachable(grid_5x5: Grid) -> None:
    with pytest.warns(TargetsIgnoredWarning):
        times = travel_time_min(_friction(grid_5x5), np.array([[-50.0, -50.0]]))

    assert np.isinf(times).all()


def test_negative_friction_is_rejected_with_its_name(grid_5x5: Grid) -> None:
    with pytest.raises(ValueError, match="friction surface friction has 1 negative"):
        friction = np.full((5, 5), 0.01)
        friction[1, 1] = -0.5
        travel_time_min(_friction(grid_5x5, friction), CENTRE_5X5)


def test_geographic_friction_is_rejected() -> None:
    grid = Grid.from_bounds((5, 45, 6, 46), (5, 5), "EPSG:4326")
    with pytest.raises(CRSMismatchError, match="geographic CRS"):
        travel_time_min(_friction(grid), np.array([[5.5, 45.5]]))


def test_impassable_mask_of_another_shape_is_rejected(grid_5x5: Grid) -> None:
    with pytest.raises(GridMismatchError, match=r"impassable has shape \(4, 4\)"):
        travel_time_min(_friction(grid_5x5), CENTRE_5X5, impassable=np.zeros((4, 4), bool))


def test_baseline_uses_only_facilities_of_the_asked_type(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(2, 2), (0, 0)], ["hospital", "shelter"])

    baseline = compute_access_baseline(_friction(grid_5x5), facilities, "hospital")

    assert baseline.facility_type == "hospital"
    assert baseline.target_cells.tolist() == [[2, 2]]
    assert baseline.times_min[0, 0] == pytest.approx(2 * R2)
    # The centre is its own root; its neighbours' predecessor is the centre (flat index 12).
    assert baseline.predecessor[2, 2] == -1
    assert baseline.predecessor[1, 2] == 12


def test_facilities_in_another_crs_are_rejected(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(2, 2)], ["hospital"]).set_crs(3857, allow_override=True)
    with pytest.raises(CRSMismatchError, match="facilities is in EPSG:3857"):
        compute_access_baseline(_friction(grid_5x5), facilities, "hospital")


def test_facilities_without_a_type_column_are_rejected(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(2, 2)], ["hospital"]).drop(columns="type")
    with pytest.raises(ValueError, match="'type' column"):
        compute_access_baseline(_friction(grid_5x5), facilities, "hospital")


def test_hazard_on_the_wall_row_matches_the_hand_computed_detour(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(0, 0)], ["hospital"])
    baseline = compute_access_baseline(_friction(grid_5x5), facilities, "hospital")
    flood = np.zeros((5, 5), dtype=bool)
    flood[2, :4] = True

    times = access_under_hazard(baseline, flood)

    assert times[4, 0] == pytest.approx(4 + 4 * R2)
    assert np.isinf(times[flood]).all()
    np.testing.assert_array_equal(times[:2], baseline.times_min[:2])  # above the wall


def test_a_flooded_hospital_cannot_be_reached(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(2, 2)], ["hospital"])
    baseline = compute_access_baseline(_friction(grid_5x5), facilities, "hospital")
    flood = np.zeros((5, 5), dtype=bool)
    flood[2, 2] = True

    assert np.isinf(access_under_hazard(baseline, flood)).all()


@pytest.mark.parametrize("seed", range(8))
def test_incremental_hazard_times_equal_a_full_recompute(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
    xres, yres = (100.0, 100.0) if seed % 2 else (100.0, 150.0)
    grid = Grid.from_bounds((0, 0, xres * shape[1], yres * shape[0]), shape, "EPSG:3035")
    friction = rng.uniform(0.001, 0.05, shape)
    friction[rng.random(shape) < 0.05] = np.nan  # some no-data
    if seed % 4 == 0:
        friction[rng.random(shape) < 0.1] = 0.0  # free cells make ties
    raster = _friction(grid, friction)
    cells = [(int(rng.integers(shape[0])), int(rng.integers(shape[1]))) for _ in range(4)]
    cells = [c for c in cells if np.isfinite(friction[c])] or [(0, 0)]
    friction[cells[0]] = 0.01
    raster = _friction(grid, friction)
    facilities = _facilities(grid, cells, ["hospital"] * len(cells))
    baseline = compute_access_baseline(raster, facilities, "hospital")
    flood = np.zeros(shape, dtype=bool)
    for _ in range(3):  # a few rectangular flood patches, sometimes over a hospital
        r0, c0 = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        flood[r0 : r0 + rng.integers(2, 15), c0 : c0 + rng.integers(2, 15)] = True
    flood |= rng.random(shape) < 0.03

    incremental = access_under_hazard(baseline, flood)
    with warnings.catch_warnings():  # a flooded hospital is ignored, with a warning
        warnings.simplefilter("ignore", TargetsIgnoredWarning)
        full = travel_time_min(
            raster, shapely.get_coordinates(facilities.geometry.values), impassable=flood
        )

    np.testing.assert_array_equal(incremental, full)
    assert (incremental >= baseline.times_min).all()
    assert not np.array_equal(incremental, baseline.times_min)


def test_no_hazard_leaves_the_baseline_unchanged(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(2, 2)], ["hospital"])
    baseline = compute_access_baseline(_friction(grid_5x5), facilities, "hospital")

    times = access_under_hazard(baseline, np.zeros((5, 5), dtype=bool))

    np.testing.assert_array_equal(times, baseline.times_min)


@pytest.mark.parametrize(
    ("baseline", "hazard", "expected"),
    [
        (30.0, 30.0, False),  # unchanged, within
        (30.0, 90.0, True),  # pushed beyond by the hazard
        (60.0, 60.1, True),  # exactly at the threshold counts as within at baseline
        (30.0, 60.0, False),  # exactly at the threshold is still within under the hazard
        (90.0, 120.0, False),  # already beyond at baseline
        (30.0, math.inf, True),  # cut off entirely
        (math.inf, math.inf, False),  # never reachable
        (math.nan, 90.0, False),  # no data
    ],
)
def test_newly_cut_off_truth_table(baseline: float, hazard: float, expected: bool) -> None:
    result = newly_cut_off(np.array([baseline]), np.array([hazard]), 60.0)
    assert result.tolist() == [expected]


def test_newly_cut_off_rejects_arrays_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="same grid"):
        newly_cut_off(np.zeros(3), np.zeros(4), 60.0)


def test_baseline_round_trips_through_bytes(grid_5x5: Grid) -> None:
    facilities = _facilities(grid_5x5, [(1, 3)], ["shelter"])
    baseline = compute_access_baseline(_friction(grid_5x5), facilities, "shelter")

    again = AccessBaseline.from_bytes(baseline.to_bytes())

    assert again.grid.same_as(baseline.grid)
    assert again.facility_type == "shelter"
    for name in ("target_cells", "times_min", "cost_min_per_m", "predecessor"):
        np.testing.assert_array_equal(getattr(again, name), getattr(baseline, name))
    flood = np.zeros((5, 5), dtype=bool)
    flood[2, 1:] = True
    np.testing.assert_array_equal(
        access_under_hazard(again, flood), access_under_hazard(baseline, flood)
    )


def test_unreadable_baseline_bytes_raise_a_cache_error() -> None:
    with pytest.raises(CacheFormatError, match="unreadable"):
        AccessBaseline.from_bytes(b"not an npz file")


def test_times_on_the_same_grid_are_copied(grid_5x5: Grid) -> None:
    times = travel_time_min(_friction(grid_5x5), CENTRE_5X5)
    out = times_on_grid(times, grid_5x5, grid_5x5)
    np.testing.assert_array_equal(out, times)
    assert out is not times


def test_times_are_sampled_by_nearest_cell_onto_a_coarser_grid(grid_10x10: Grid) -> None:
    # Coarse 300 m cells over (0, 100, 900, 1000): centres at x = 150, 450, 750 and
    # y = 850, 550, 250 fall in fine columns 1, 4, 7 and rows 1, 4, 7.
    times = np.arange(100, dtype=np.float64).reshape(10, 10)
    times[4, 4] = np.inf
    coarse = Grid.from_bounds((0, 100, 900, 1000), (3, 3), "EPSG:3035")

    out = times_on_grid(times, grid_10x10, coarse)

    np.testing.assert_array_equal(out, times[np.ix_([1, 4, 7], [1, 4, 7])])
    assert np.isinf(out[1, 1])


def test_times_are_sampled_across_crs_and_nan_outside(grid_10x10: Grid) -> None:
    # A real-world 3035 grid (100 m cells) and a small lon/lat grid over it; each lon/lat
    # centre projected to 3035 names the fine cell whose time it must get.
    src = Grid.from_bounds((4_000_000, 2_500_000, 4_001_000, 2_501_000), (10, 10), "EPSG:3035")
    times = np.arange(100, dtype=np.float64).reshape(10, 10)
    to_ll = Transformer.from_crs(3035, 4326, always_xy=True)
    lon0, lat0 = to_ll.transform(4_000_100, 2_500_100)
    lon1, lat1 = to_ll.transform(4_000_900, 2_500_900)
    dst = Grid.from_bounds((lon0, lat0, lon1, lat1), (4, 4), "EPSG:4326")
    wide = Grid.from_bounds((lon0 - 1, lat0, lon1, lat1), (4, 4), "EPSG:4326")

    out = times_on_grid(times, src, dst)

    xs, ys = dst.xy_centres()
    lon, lat = np.meshgrid(xs, ys)
    x, y = Transformer.from_crs(4326, 3035, always_xy=True).transform(lon, lat)
    cols, rows = ~src.transform @ (x, y)
    np.testing.assert_array_equal(out, times[rows.astype(int), cols.astype(int)])
    assert np.isnan(times_on_grid(times, src, wide)[:, 0]).all()
