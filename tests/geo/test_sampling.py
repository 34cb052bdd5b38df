"""Hazard sampling onto the population grid, and class shares of a finer hazard."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from geo.classes import SeverityClasses
from geo.errors import EmptyHazardError, GridMismatchError, InvalidOptionError, NoOverlapError
from geo.grid import Grid
from geo.sampling import ClassShares, class_shares, is_finer, sample_hazard

TWO_CLASSES = SeverityClasses((1.0, 2.0), "m")


@pytest.fixture
def grid_fine_50m() -> Grid:
    """10 x 10 cells of 50 m over the same area as ``grid_5x5``: 4 hazard cells per pop cell."""
    return Grid.from_bounds((0, 0, 500, 500), (10, 10), "EPSG:3035")


def test_finer_hazard_gives_the_share_of_each_population_cell_in_each_class(
    grid_5x5: Grid, grid_fine_50m: Grid
) -> None:
    # Population cell (0, 0) is fine cells rows 0-1, cols 0-1: three at 2.5 m (class 2) and
    # one at 0.5 m (class 0), so its class-2 share is exactly 3/4 and its class-1 share 0.
    # Population cell (0, 1) (fine cols 2-3): two at 1.5 m (class 1), two at 2.5 m (class 2).
    # Population cell (4, 4) (fine rows 8-9, cols 8-9): two no-data, one 1.5, one 0.5:
    # shares are of the covered half, so class 1 is 1/2.
    hazard = np.full((10, 10), 0.5)
    hazard[0, 0] = hazard[0, 1] = hazard[1, 0] = 2.5
    hazard[0:2, 2] = 1.5
    hazard[0:2, 3] = 2.5
    hazard[8, 8:10] = np.nan
    hazard[9, 8] = 1.5

    shares = class_shares(hazard, grid_fine_50m, grid_5x5, TWO_CLASSES, resampling="bilinear")

    assert shares.is_fractional and shares.index is None
    assert shares.shares is not None and shares.shares.dtype == np.float32
    assert shares.shares.shape == (2, 5, 5)
    assert shares.shares[1, 0, 0] == 0.75
    assert shares.shares[0, 0, 0] == 0.0
    assert shares.shares[0, 0, 1] == 0.5 and shares.shares[1, 0, 1] == 0.5
    assert shares.shares[0, 4, 4] == 0.5 and shares.shares[1, 4, 4] == 0.0
    # Every other population cell is entirely class 0.
    others = np.ones((5, 5), dtype=bool)
    others[0, 0] = others[0, 1] = others[4, 4] = False
    assert np.all(shares.shares[:, others] == 0.0)


def test_dominant_class_of_shares_is_the_largest_share_with_ties_going_to_the_higher_class(
    grid_5x5: Grid, grid_fine_50m: Grid
) -> None:
    # (0, 0): class 2 holds 3/4 -> 2. (0, 1): 1/2 class 1 and 1/2 class 2, a tie -> 2.
    # (0, 2): 1/4 class 1, 3/4 class 0 -> 0. (0, 3): 1/2 class 0, 1/2 class 1, a tie -> 1.
    hazard = np.full((10, 10), 0.5)
    hazard[0, 0] = hazard[0, 1] = hazard[1, 0] = 2.5
    hazard[0:2, 2] = 1.5
    hazard[0:2, 3] = 2.5
    hazard[0, 4] = 1.5
    hazard[0:2, 6] = 1.5

    shares = class_shares(hazard, grid_fine_50m, grid_5x5, TWO_CLASSES, resampling="bilinear")

    dominant = shares.dominant_index()
    assert dominant.dtype == np.uint8
    assert dominant[0].tolist() == [2, 2, 0, 1, 0]
    assert np.all(dominant[1:] == 0)


def test_hazard_as_coarse_as_population_is_sampled_and_classified_per_cell(
    grid_5x5: Grid,
) -> None:
    # Same grid: the sample is the value itself; 0.5 -> 0, 1.0 -> 1 (breaks are closed
    # below), 1.99 -> 1, 2.0 -> 2, NaN -> 0.
    hazard = np.full((5, 5), 0.5)
    hazard[0, :5] = [0.5, 1.0, 1.99, 2.0, np.nan]

    shares = class_shares(hazard, grid_5x5, grid_5x5, TWO_CLASSES, resampling="bilinear")

    assert not shares.is_fractional
    assert shares.index is not None and shares.index.dtype == np.uint8
    assert shares.index[0].tolist() == [0, 1, 1, 2, 0]
    assert np.array_equal(shares.dominant_index(), shares.index)


def test_bilinear_sampling_of_a_linear_ramp_reproduces_the_ramp_at_cell_centres(
    grid_10x10: Grid,
) -> None:
    # v = x + 2 y at the hazard's cell centres; the population grid (5 x 5, 100 m cells,
    # offset by 125 m so no centre coincides with a hazard centre) lies inside the hazard,
    # so bilinear interpolation of a linear field is exact: v(centre) = x + 2 y.
    xs, ys = grid_10x10.xy_centres()
    ramp = xs[None, :] + 2.0 * ys[:, None]
    pop_grid = Grid.from_bounds((125, 125, 625, 625), (5, 5), "EPSG:3035")

    sampled = sample_hazard(ramp, grid_10x10, pop_grid, resampling="bilinear")

    px, py = pop_grid.xy_centres()
    assert sampled.dtype == np.float64
    np.testing.assert_allclose(sampled, px[None, :] + 2.0 * py[:, None], rtol=0, atol=1e-9)


def test_nearest_sampling_keeps_categories_and_never_blends_them(grid_5x5: Grid) -> None:
    # Categories 1..5 by hazard column; a 50 m population grid puts 2 x 2 cells in each
    # hazard cell, which must all take exactly its category (bilinear would give 1.5 etc.).
    categories = np.tile(np.arange(1.0, 6.0), (5, 1))
    fine = Grid.from_bounds((0, 0, 500, 500), (10, 10), "EPSG:3035")

    sampled = sample_hazard(categories, grid_5x5, fine, resampling="nearest")

    expected = np.repeat(np.repeat(categories, 2, axis=0), 2, axis=1)
    assert np.array_equal(sampled, expected)


def test_hazard_in_lat_lon_is_sampled_onto_a_population_grid_in_laea_europe() -> None:
    # Hazard: v = longitude, on a 0.01 deg grid over 8-10 E, 46-48 N (EPSG:4326).
    # Population: 2 km cells in EPSG:3035 well inside it. Bilinear sampling of a field
    # linear in longitude gives each cell centre's longitude, to GDAL's approximate
    # transformer tolerance (1/8 source cell = 0.00125 deg).
    haz_grid = Grid.from_bounds((8.0, 46.0, 10.0, 48.0), (200, 200), "EPSG:4326")
    lons, _ = haz_grid.xy_centres()
    hazard = np.tile(lons, (200, 1))
    to_laea = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
    cx, cy = to_laea.transform(9.0, 47.0)
    pop_grid = Grid.from_bounds((cx - 40e3, cy - 40e3, cx + 40e3, cy + 40e3), (40, 40), 3035)

    sampled = sample_hazard(hazard, haz_grid, pop_grid, resampling="bilinear")

    px, py = pop_grid.xy_centres()
    xx, yy = np.meshgrid(px, py)
    expected_lon, _ = Transformer.from_crs(3035, 4326, always_xy=True).transform(xx, yy)
    np.testing.assert_allclose(sampled, expected_lon, rtol=0, atol=0.00125)


def test_finer_hazard_is_recognised_across_crss_by_true_cell_area() -> None:
    # 0.001 deg cells at 47 N are about 76 m x 111 m = 0.0085 km2; a 1 km population cell
    # is 118 of them: the shares path. A 0.05 deg hazard (about 21 km2) is not finer.
    to_laea = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
    cx, cy = to_laea.transform(9.0, 47.0)
    pop_grid = Grid.from_bounds((cx - 5e3, cy - 5e3, cx + 5e3, cy + 5e3), (10, 10), 3035)
    fine = Grid.from_bounds((8.8, 46.8, 9.2, 47.2), (400, 400), "EPSG:4326")
    coarse = Grid.from_bounds((8.0, 46.0, 10.0, 48.0), (40, 40), "EPSG:4326")
    assert is_finer(fine, pop_grid)
    assert not is_finer(coarse, pop_grid)

    hazard = np.full(fine.shape, 1.5)  # class 1 everywhere
    shares = class_shares(hazard, fine, pop_grid, TWO_CLASSES, resampling="bilinear")

    assert shares.shares is not None
    np.testing.assert_allclose(shares.shares[0], 1.0, atol=1e-6)
    assert np.all(shares.shares[1] == 0.0)


def test_hazard_that_misses_the_population_grid_raises_no_overlap(grid_5x5: Grid) -> None:
    elsewhere = Grid.from_bounds((10_000, 10_000, 10_500, 10_500), (5, 5), "EPSG:3035")
    with pytest.raises(NoOverlapError, match="does not overlap"):
        sample_hazard(np.ones((5, 5)), elsewhere, grid_5x5, resampling="bilinear")
    with pytest.raises(NoOverlapError):
        class_shares(np.ones((5, 5)), elsewhere, grid_5x5, TWO_CLASSES, resampling="nearest")


def test_hazard_in_another_crs_far_away_raises_no_overlap() -> None:
    # A hazard over New Zealand against a population grid over Switzerland.
    to_laea = Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
    cx, cy = to_laea.transform(8.0, 47.0)
    pop_grid = Grid.from_bounds((cx, cy, cx + 1e4, cy + 1e4), (10, 10), 3035)
    nz = Grid.from_bounds((170.0, -45.0, 175.0, -40.0), (50, 50), "EPSG:4326")
    with pytest.raises(NoOverlapError):
        sample_hazard(np.ones((50, 50)), nz, pop_grid, resampling="bilinear")


def test_hazard_that_is_all_no_data_raises_empty_hazard(
    grid_5x5: Grid, grid_fine_50m: Grid
) -> None:
    with pytest.raises(EmptyHazardError, match="no valid hazard value"):
        sample_hazard(np.full((5, 5), np.nan), grid_5x5, grid_5x5, resampling="bilinear")
    with pytest.raises(EmptyHazardError):
        class_shares(
            np.full((10, 10), np.nan), grid_fine_50m, grid_5x5, TWO_CLASSES,
            resampling="bilinear",
        )


def test_allow_empty_returns_all_no_data_instead_of_raising(grid_5x5: Grid) -> None:
    elsewhere = Grid.from_bounds((10_000, 10_000, 10_500, 10_500), (5, 5), "EPSG:3035")
    missed = sample_hazard(
        np.ones((5, 5)), elsewhere, grid_5x5, resampling="bilinear", allow_empty=True
    )
    empty = sample_hazard(
        np.full((5, 5), np.nan), grid_5x5, grid_5x5, resampling="bilinear", allow_empty=True
    )
    assert np.isnan(missed).all() and np.isnan(empty).all()


def test_partial_overlap_leaves_no_data_outside_the_hazard(grid_5x5: Grid) -> None:
    # The hazard covers x in [0, 300) only: population columns 3 and 4 get NaN (nearest).
    hazard_grid = Grid.from_bounds((0, 0, 300, 500), (5, 3), "EPSG:3035")
    sampled = sample_hazard(np.full((5, 3), 2.0), hazard_grid, grid_5x5, resampling="nearest")
    assert np.all(sampled[:, :3] == 2.0)
    assert np.isnan(sampled[:, 3:]).all()


def test_unknown_resampling_and_wrong_shapes_are_refused_with_a_clear_message(
    grid_5x5: Grid,
) -> None:
    with pytest.raises(InvalidOptionError, match="'cubic'"):
        sample_hazard(np.ones((5, 5)), grid_5x5, grid_5x5, resampling="cubic")  # type: ignore[arg-type]
    with pytest.raises(GridMismatchError, match=r"\(4, 5\)"):
        sample_hazard(np.ones((4, 5)), grid_5x5, grid_5x5, resampling="bilinear")


def test_class_shares_needs_exactly_one_representation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ClassShares(classes=TWO_CLASSES)
    with pytest.raises(ValueError, match="only 2 classes"):
        ClassShares.from_index(np.full((2, 2), 3), TWO_CLASSES)
