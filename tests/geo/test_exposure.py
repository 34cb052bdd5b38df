"""The fused exposure kernel, the exposure tables, group counts and facilities."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geo.classes import SeverityClasses
from geo.errors import GeoError, GridMismatchError, MissingZoneRateError
from geo.exposure import (
    accumulate,
    accumulate_shares,
    exposure_frame,
    facilities_by_zone_class,
    group_counts,
    totals_by_class,
)
from geo.grid import Grid
from geo.raster import Raster
from geo.region import GroupLayer
from geo.sampling import ClassShares
from geo.types import Group
from geo.zones import RUN_BLOCK_CELLS, ZoneRaster

THREE_CLASSES = SeverityClasses((1.0, 2.0, 3.0), "m")


def hand_zones() -> np.ndarray:
    """Zone A (0) = rows 0-1; zone B (1) = rows 2-4, columns 0-2; the rest (-1) outside."""
    zone = np.full((5, 5), -1, dtype=np.int16)
    zone[:2] = 0
    zone[2:, :3] = 1
    return zone


def hand_classes() -> np.ndarray:
    """Class by column: 0, 1, 2, 3, 3."""
    return np.tile(np.array([0, 1, 2, 3, 3], dtype=np.uint8), (5, 1))


def hand_population() -> np.ndarray:
    """People per cell: 1..25 in row-major order (row r, column c holds 5 r + c + 1)."""
    return np.arange(1, 26, dtype=np.float32).reshape(5, 5)


def test_two_zones_and_three_classes_sum_to_hand_computed_totals() -> None:
    sums = accumulate(hand_zones(), hand_classes(), [hand_population()], 2, 3)

    assert sums.shape == (1, 3, 4) and sums.dtype == np.float64
    # Zone A, rows 0-1: class 0 = col 0 = 1 + 6 = 7; class 1 = 2 + 7 = 9; class 2 = 3 + 8 = 11;
    # class 3 = cols 3-4 = 4 + 5 + 9 + 10 = 28.
    assert sums[0, 0].tolist() == [7.0, 9.0, 11.0, 28.0]
    # Zone B, rows 2-4, cols 0-2: 11+16+21 = 48, 12+17+22 = 51, 13+18+23 = 54, nothing in 3.
    assert sums[0, 1].tolist() == [48.0, 51.0, 54.0, 0.0]
    # Outside, rows 2-4, cols 3-4 (class 3): 14+15+19+20+24+25 = 117.
    assert sums[0, 2].tolist() == [0.0, 0.0, 0.0, 117.0]
    assert sums.sum() == 325.0  # 1 + ... + 25


def test_no_data_population_cells_count_as_zero() -> None:
    population = hand_population()
    population[0, 0] = np.nan  # zone A, class 0 loses its 1: 7 -> 6
    population[4, 4] = np.nan  # outside, class 3 loses 25: 117 -> 92

    sums = accumulate(hand_zones(), hand_classes(), [population], 2, 3)

    assert sums[0, 0, 0] == 6.0
    assert sums[0, 2, 3] == 92.0
    assert sums.sum() == 325.0 - 26.0


def test_several_layers_are_summed_in_the_same_pass() -> None:
    population = hand_population()
    older = population * 0.5  # half of everyone, so every sum halves
    sums = accumulate(hand_zones(), hand_classes(), [population, older], 2, 3)
    assert sums.shape == (2, 3, 4)
    np.testing.assert_array_equal(sums[1], sums[0] / 2)


def test_class_shares_with_an_index_are_accepted_in_place_of_the_index() -> None:
    shares = ClassShares.from_index(hand_classes(), THREE_CLASSES)
    sums = accumulate(hand_zones(), shares, [hand_population()], 2, 3)
    assert sums[0, 0].tolist() == [7.0, 9.0, 11.0, 28.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layer_dtype", [np.float32, np.float64])
def test_kernel_equals_a_bincount_reference_on_random_97_by_113_inputs(
    seed: int, layer_dtype: type
) -> None:
    rng = np.random.default_rng(seed)
    n_zones, n_classes, shape = 7, 4, (97, 113)
    # Patchy zones and classes (runs of equal values, as real rasters have) plus noise.
    zone = np.repeat(rng.integers(-1, n_zones, (97, 12)), 10, axis=1)[:, :113].astype(np.int16)
    zone[rng.random(shape) < 0.1] = rng.integers(-1, n_zones)
    cls = rng.integers(0, n_classes + 1, shape).astype(np.uint8)
    layers = [rng.gamma(2.0, 30.0, shape).astype(layer_dtype) for _ in range(3)]
    layers[0][rng.random(shape) < 0.05] = np.nan

    sums = accumulate(zone, cls, layers, n_zones, n_classes)

    row = np.where(zone < 0, n_zones, zone).astype(np.int64)
    key = (row * (n_classes + 1) + cls).ravel()
    for i, layer in enumerate(layers):
        weights = np.nan_to_num(layer.astype(np.float64)).ravel()
        expected = np.bincount(key, weights, minlength=(n_zones + 1) * (n_classes + 1))
        np.testing.assert_allclose(sums[i].ravel(), expected, rtol=1e-12, atol=1e-9)


def test_fractional_shares_split_each_cell_between_classes() -> None:
    # Zone A's cell (0, 0) holds 1 person: 3/4 in class 2 and 1/4 in class 1, none left for
    # class 0. Cell (0, 1) holds 2 people: 1/2 in class 3, the other half in class 0.
    # Every other cell is entirely class 0. Zone A (rows 0-1) class 0 thus holds
    # 2/2 + (3+4+5) + (6+7+8+9+10) = 1 + 12 + 40 = 53.
    shares = np.zeros((3, 5, 5), dtype=np.float32)
    shares[1, 0, 0] = 0.75
    shares[0, 0, 0] = 0.25
    shares[2, 0, 1] = 0.5

    sums = accumulate_shares(hand_zones(), shares, [hand_population()], 2, 3)

    assert sums[0, 0].tolist() == [53.0, 0.25, 0.75, 1.0]
    # Zone B: everything class 0: 11+12+13+16+17+18+21+22+23 = 153; outside: 117.
    assert sums[0, 1].tolist() == [153.0, 0.0, 0.0, 0.0]
    assert sums[0, 2].tolist() == [117.0, 0.0, 0.0, 0.0]
    via_value = accumulate(
        hand_zones(), ClassShares(classes=THREE_CLASSES, shares=shares),
        [hand_population()], 2, 3,
    )
    np.testing.assert_array_equal(via_value, sums)


def test_feeding_halves_into_the_same_accumulator_equals_one_pass() -> None:
    zone, cls, pop = hand_zones(), hand_classes(), hand_population()
    whole = accumulate(zone, cls, [pop], 2, 3)

    out = np.zeros((1, 3, 4))
    first = accumulate(zone[:2], cls[:2], [pop[:2]], 2, 3, out=out)
    accumulate(zone[2:], cls[2:], [pop[2:]], 2, 3, out=out)

    assert first is out
    np.testing.assert_array_equal(out, whole)


def test_out_of_range_indices_raise_and_add_nothing() -> None:
    zone = hand_zones()
    zone[4, 0] = 2  # only zones 0 and 1 exist
    out = np.zeros((1, 3, 4))
    with pytest.raises(GeoError, match="1 cells have an index out of range"):
        accumulate(zone, hand_classes(), [hand_population()], 2, 3, out=out)
    assert not out.any()

    cls = hand_classes()
    cls[0, 0] = 4  # only classes 0..3 exist
    with pytest.raises(GeoError, match="out of range"):
        accumulate(hand_zones(), cls, [hand_population()], 2, 3)


def test_mismatched_shapes_and_accumulators_are_refused() -> None:
    with pytest.raises(GridMismatchError, match="layer 0"):
        accumulate(hand_zones(), hand_classes(), [np.ones((4, 5), np.float32)], 2, 3)
    with pytest.raises(GridMismatchError, match="accumulator"):
        accumulate(hand_zones(), hand_classes(), [hand_population()], 2, 3, out=np.zeros(3))


def test_classes_far_from_a_runs_first_class_are_summed_too() -> None:
    # One zone, one row: people 1..6 in classes 2, 0, 4, 2, 3, 1. The run's first class is 2;
    # classes 0 and 4 lie outside 1..3 around it. Class 0: 2; class 1: 6; class 2: 1 + 4 = 5;
    # class 3: 5; class 4: 3. The second layer (ten times the first) gives ten times that.
    zone = np.zeros((1, 6), dtype=np.int16)
    cls = np.array([[2, 0, 4, 2, 3, 1]], dtype=np.uint8)
    people = np.arange(1, 7, dtype=np.float32).reshape(1, 6)

    sums = accumulate(zone, cls, [people, people * 10], 1, 4)

    assert sums[0, 0].tolist() == [2.0, 6.0, 5.0, 5.0, 3.0]
    assert sums[1, 0].tolist() == [20.0, 60.0, 50.0, 50.0, 30.0]
    assert not sums[:, 1].any()


def test_a_zone_raster_gives_the_sums_of_its_index_array(zone_raster: ZoneRaster) -> None:
    by_index = accumulate(hand_zones(), hand_classes(), [hand_population()], 2, 3)

    by_raster = accumulate(zone_raster, hand_classes(), [hand_population()], 2, 3)
    by_shares = accumulate(
        zone_raster, ClassShares.from_index(hand_classes(), THREE_CLASSES),
        [hand_population()], 2, 3,
    )

    np.testing.assert_array_equal(by_raster, by_index)
    np.testing.assert_array_equal(by_shares, by_index)
    with pytest.raises(GeoError, match="2 zones, not n_zones=3"):
        accumulate(zone_raster, hand_classes(), [hand_population()], 3, 3)


def test_rows_longer_than_a_run_block_are_summed_whole() -> None:
    # 3 rows of 2.5 blocks, one person per cell; class = column // 1000 % 3, so each class
    # holds the same number of columns per 3000. Rows 0-1 are zone 0, row 2 is outside.
    width = RUN_BLOCK_CELLS * 5 // 2
    zone = np.zeros((3, width), dtype=np.int16)
    zone[2] = -1
    cls = np.tile((np.arange(width) // 1000 % 3).astype(np.uint8), (3, 1))
    people = np.ones((3, width), dtype=np.float32)
    per_row = np.bincount(cls[0], minlength=3).astype(np.float64)  # columns per class

    sums = accumulate(zone, cls, [people], 1, 2)

    np.testing.assert_array_equal(sums[0, 0], 2 * per_row)
    np.testing.assert_array_equal(sums[0, 1], per_row)
    assert sums.sum() == 3 * width


def test_bad_class_cells_are_counted_exactly() -> None:
    cls = hand_classes()
    cls[0, 1] = 9  # zone A
    cls[3, 4] = 7  # outside
    with pytest.raises(GeoError, match="2 cells have an index out of range"):
        accumulate(hand_zones(), cls, [hand_population()], 2, 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_fractional_shares_equal_a_per_cell_reference_on_random_inputs(seed: int) -> None:
    # Shares of three classes drawn so that some cells' shares add up to more than 1
    # (class 0 then gets nothing, not a negative share); 5 % of people are no-data.
    rng = np.random.default_rng(seed)
    n_zones, n_classes, shape = 5, 3, (61, 89)
    zone = np.repeat(rng.integers(-1, n_zones, (61, 9)), 10, axis=1)[:, :89].astype(np.int16)
    shares = (rng.random((n_classes, *shape)) * 0.45).astype(np.float32)
    people = rng.gamma(2.0, 30.0, shape).astype(np.float32)
    people[rng.random(shape) < 0.05] = np.nan

    sums = accumulate_shares(zone, shares, [people], n_zones, n_classes)

    rest = np.maximum(1.0 - shares.astype(np.float64).sum(axis=0), 0.0)
    split = np.concatenate([rest[None], shares.astype(np.float64)])  # (K + 1, H, W)
    weights = np.nan_to_num(people.astype(np.float64)) * split
    row = np.where(zone < 0, n_zones, zone).ravel()
    for k in range(n_classes + 1):
        expected = np.bincount(row, weights[k].ravel(), minlength=n_zones + 1)
        np.testing.assert_allclose(sums[0, :, k], expected, rtol=1e-12, atol=1e-9)


def test_exposure_frame_has_one_row_per_zone_and_class_and_an_outside_row_when_needed() -> None:
    sums = accumulate(hand_zones(), hand_classes(), [hand_population()], 2, 3)

    frame = exposure_frame(sums, ("A", "B"), ("Alpha", "Beta"), THREE_CLASSES, ["population"])

    assert list(frame.columns) == [
        "zone_id", "zone_name", "class", "label", "lower", "upper", "population"
    ]
    assert frame["zone_id"].tolist() == ["A"] * 4 + ["B"] * 4 + ["outside"] * 4
    assert frame["class"].tolist() == [0, 1, 2, 3] * 3
    assert frame["label"].tolist()[:4] == ["below", "1 to 2 m", "2 to 3 m", "3 m and above"]
    assert frame["lower"].tolist()[:4] == [-np.inf, 1.0, 2.0, 3.0]
    assert frame["upper"].tolist()[:4] == [1.0, 2.0, 3.0, np.inf]
    assert frame["population"].tolist() == [7, 9, 11, 28, 48, 51, 54, 0, 0, 0, 0, 117]

    inside_only = exposure_frame(sums[:, :, :] * [[[1], [1], [0]]], ("A", "B"), ("Alpha", "Beta"),
                                 THREE_CLASSES, ["population"])
    assert "outside" not in set(inside_only["zone_id"])


def test_without_zones_the_frame_reports_the_whole_area_as_zone_all() -> None:
    zone = np.full((5, 5), -1, dtype=np.int16)
    sums = accumulate(zone, hand_classes(), [hand_population()], 0, 3)

    frame = exposure_frame(sums, (), (), THREE_CLASSES, ["population"])

    assert frame["zone_id"].tolist() == ["all"] * 4
    # Columns 0..4 sum to 55, 60, 65, 70, 75 over the five rows; class 3 has columns 3 and 4.
    assert frame["population"].tolist() == [55.0, 60.0, 65.0, 145.0]


def test_totals_by_class_sum_over_zones_in_class_order() -> None:
    sums = accumulate(hand_zones(), hand_classes(), [hand_population()], 2, 3)
    frame = exposure_frame(sums, ("A", "B"), ("Alpha", "Beta"), THREE_CLASSES, ["population"])

    totals = totals_by_class(frame)

    assert totals["class"].tolist() == [0, 1, 2, 3]
    assert totals["population"].tolist() == [55.0, 60.0, 65.0, 145.0]


@pytest.fixture
def zone_raster(grid_5x5: Grid) -> ZoneRaster:
    return ZoneRaster(hand_zones(), ("A", "B"), ("Alpha", "Beta"), grid_5x5)


def test_group_counts_from_zone_rates_multiply_population_by_its_zones_rate(
    zone_raster: ZoneRaster,
) -> None:
    # A: 10 %, B: 50 %. Cell (0, 0) has 1 person -> 0.1; cell (2, 0) has 11 -> 5.5; outside
    # cells have no rate (NaN, counted as 0 by the kernel).
    layer = GroupLayer(Group.OLDER, rate_by_zone=pd.Series({"A": 0.1, "B": 0.5}))

    counts = group_counts(hand_population(), zone_raster, layer)

    assert counts.dtype == np.float32
    assert counts[0, 0] == np.float32(0.1)
    assert counts[2, 0] == 5.5
    assert np.isnan(counts[2:, 3:]).all()
    sums = accumulate(zone_raster.index, hand_classes(), [counts], 2, 3)
    # Zone A holds 55 people -> 5.5 older; zone B 153 -> 76.5.
    np.testing.assert_allclose(sums[0].sum(axis=1), [5.5, 76.5, 0.0], rtol=1e-6)


def test_a_zone_with_people_but_no_rate_is_named_in_the_error(zone_raster: ZoneRaster) -> None:
    layer = GroupLayer(Group.DISABILITY, rate_by_zone=pd.Series({"A": 0.1}), source="t.csv")
    with pytest.raises(MissingZoneRateError, match=r"t.csv.*\['B'\]"):
        group_counts(hand_population(), zone_raster, layer)

    empty_b = hand_population()
    empty_b[2:, :3] = 0.0  # nobody lives in B: a missing rate there does not matter
    counts = group_counts(empty_b, zone_raster, layer)
    assert np.all(counts[2:, :3] == 0.0)


def test_rates_outside_zero_to_one_are_refused(zone_raster: ZoneRaster) -> None:
    layer = GroupLayer(Group.OLDER, rate_by_zone=pd.Series({"A": 12.0, "B": 0.5}))
    with pytest.raises(GeoError, match="A=12"):
        group_counts(hand_population(), zone_raster, layer)


def test_group_counts_from_a_rate_raster_and_registry_counts_where_present(
    zone_raster: ZoneRaster, grid_5x5: Grid
) -> None:
    # Rate raster 0.2 everywhere: 0.2 x population. Registry counts known in row 0 only
    # (masked elsewhere): row 0 takes the registry (7 people per cell) instead.
    rate = Raster(np.ma.masked_array(np.full((5, 5), 0.2)), grid_5x5)
    registry_data = np.ma.masked_all((5, 5))
    registry_data[0] = 7.0
    registry = Raster(registry_data, grid_5x5, "people")
    layer = GroupLayer(Group.ELECTRICITY_DEPENDENT, rate_raster=rate, registry_counts=registry)

    counts = group_counts(hand_population(), zone_raster, layer)

    assert np.all(counts[0] == 7.0)
    np.testing.assert_allclose(counts[1:], hand_population()[1:] * 0.2, rtol=1e-6)

    only_registry = GroupLayer(Group.ELECTRICITY_DEPENDENT, registry_counts=registry)
    counts = group_counts(hand_population(), zone_raster, only_registry)
    assert np.all(counts[0] == 7.0) and np.all(counts[1:] == 0.0)


def test_a_rate_raster_on_another_grid_is_refused(
    zone_raster: ZoneRaster, grid_10x10: Grid
) -> None:
    rate = Raster(np.ma.masked_array(np.full((10, 10), 0.2)), grid_10x10)
    with pytest.raises(GridMismatchError, match="older rate raster"):
        group_counts(hand_population(), zone_raster, GroupLayer(Group.OLDER, rate_raster=rate))


def test_facilities_are_counted_by_the_zone_and_class_of_their_cell(
    zone_raster: ZoneRaster, grid_5x5: Grid
) -> None:
    # (50, 450) is cell (0, 0): zone A, class 0. (350, 450) is cell (0, 3): A, class 3.
    # (360, 460) is also cell (0, 3). (450, 50) is cell (4, 4): outside, class 3.
    # (900, 900) is off the grid: outside, class 0.
    facilities = gpd.GeoDataFrame(
        {
            "facility_id": ["h1", "h2", "s1", "c1", "h3"],
            "name": ["H1", "H2", "S1", "C1", "H3"],
            "type": ["hospital", "hospital", "school", "care_home", "hospital"],
        },
        geometry=shapely.points([(50, 450), (350, 450), (360, 460), (450, 50), (900, 900)]),
        crs="EPSG:3035",
    )

    counts = facilities_by_zone_class(facilities, grid_5x5, zone_raster, hand_classes())

    as_dict = {
        (row.zone_id, row["class"]): (row.hospital, row.school, row.care_home)
        for _, row in counts.iterrows()
    }
    assert as_dict == {
        ("A", 0): (1, 0, 0),
        ("A", 3): (1, 1, 0),
        ("outside", 0): (1, 0, 0),
        ("outside", 3): (0, 0, 1),
    }
