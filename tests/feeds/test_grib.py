"""GRIB reader on tiny GRIB2 files written with eccodes from its regular_ll sample."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from feeds.base import ReadOptions
from feeds.errors import (
    FeedCorruptError,
    FeedFormatError,
    FeedNotFoundError,
    SelectionError,
    UnknownVariableError,
)
from feeds.grib import read_grib
from geo.types import HazardKind, Nature

# 3 x 4 gusts in m/s, north row first, on 1-degree cells centred at lat 50..48, lon 10..13.
GUSTS = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])


def test_grib2_values_grid_and_times_are_read_exactly(make_grib) -> None:
    path = make_grib([(GUSTS, {"shortName": "gust", "dataDate": 20240301, "dataTime": 600,
                               "step": 3})])
    hazard = read_grib(path)
    np.testing.assert_array_equal(hazard.values_2d(), GUSTS)
    assert hazard.grid.bounds == pytest.approx((9.5, 47.5, 13.5, 50.5))
    assert hazard.grid.crs.to_epsg() == 4326
    assert hazard.kind == HazardKind.WIND_GUST and hazard.units == "m s**-1"
    assert hazard.variable == "gust" and hazard.nature == Nature.FORECAST
    assert hazard.issued_at == datetime(2024, 3, 1, 6, tzinfo=UTC)
    assert hazard.valid_at == datetime(2024, 3, 1, 9, tzinfo=UTC)


def test_bitmap_missing_points_become_nan(make_grib) -> None:
    values = GUSTS.copy()
    values[1, 2] = 9999.0
    hazard = read_grib(make_grib([(values, {"shortName": "gust"})], missing=9999.0))
    out = hazard.values_2d()
    assert np.isnan(out[1, 2]) and np.isnan(out).sum() == 1
    assert np.nansum(out) == pytest.approx(GUSTS.sum() - 7.0)


def test_longitudes_0_to_360_are_rolled_to_minus_180_to_180(make_grib) -> None:
    # 2 x 4 global grid at lon 0, 90, 180, 270 (90-degree steps), lat 45, -45
    values = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    path = make_grib([(values, {"shortName": "2t"})], lat_first=45.0, lon_first=0.0,
                     step_deg=90.0)
    hazard = read_grib(path)
    np.testing.assert_array_equal(hazard.values_2d(), [[3, 4, 1, 2], [7, 8, 5, 6]])
    np.testing.assert_array_equal(hazard.data.x.values, [-180.0, -90.0, 0.0, 90.0])
    assert hazard.kind == HazardKind.HEAT


def test_variable_and_filter_keys_pick_one_hypercube(make_grib) -> None:
    path = make_grib([
        (GUSTS, {"shortName": "gust", "stepType": "instant"}),
        (GUSTS * 10, {"shortName": "gust", "stepType": "max"}),
        (GUSTS + 0.5, {"shortName": "tp"}),
    ])
    with pytest.raises(SelectionError, match=r"give variable=one of \['gust', 'tp'\]"):
        read_grib(path)
    with pytest.raises(SelectionError, match=r"stepType: \['instant', 'max'\]"):
        read_grib(path, ReadOptions(variable="gust"))
    chosen = read_grib(path, ReadOptions(variable="gust", filter_keys={"stepType": "max"}))
    np.testing.assert_array_equal(chosen.values_2d(), GUSTS * 10)
    rain = read_grib(path, ReadOptions(variable="tp"))
    assert rain.kind == HazardKind.RAINFALL and rain.values_2d()[0, 0] == 1.5


def test_unknown_variable_lists_the_short_names(make_grib) -> None:
    path = make_grib([(GUSTS, {"shortName": "gust"})])
    with pytest.raises(UnknownVariableError, match=r"'swh'.*\['gust'\]"):
        read_grib(path, ReadOptions(variable="swh"))


def test_same_variable_on_two_grids_is_never_stacked(make_grib, tmp_path: Path) -> None:
    small = make_grib([(GUSTS, {"shortName": "tp"})], name="a.grib2")
    big = make_grib([(np.ones((2, 2)), {"shortName": "tp"})], name="b.grib2", step_deg=2.0)
    both = tmp_path / "both.grib2"
    both.write_bytes(small.read_bytes() + big.read_bytes())
    with pytest.raises(SelectionError, match=r"Ni: \['2', '4'\]"):
        read_grib(both)
    assert read_grib(both, ReadOptions(filter_keys={"Ni": 2})).grid.shape == (2, 2)


def test_bad_files_raise_feed_errors(make_grib, tmp_path: Path, truncate) -> None:
    with pytest.raises(FeedNotFoundError):
        read_grib(tmp_path / "absent.grib2")
    noise = tmp_path / "noise.grib2"
    noise.write_bytes(np.random.default_rng(3).bytes(1000).replace(b"GRIB", b"XXXX"))
    with pytest.raises(FeedFormatError, match="no GRIB message"):
        read_grib(noise)
    cut = truncate(make_grib([(GUSTS, {"shortName": "gust"})]), 0.7)
    with pytest.raises(FeedCorruptError, match="truncated or damaged"):
        read_grib(cut)
