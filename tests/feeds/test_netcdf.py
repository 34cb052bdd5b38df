"""NetCDF reader on tiny CF files written in the test, with hand-computed answers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pyproj import CRS

from feeds.base import ReadOptions
from feeds.errors import (
    FeedCorruptError,
    FeedFormatError,
    FeedNotFoundError,
    MissingCRSError,
    SelectionError,
    UnknownVariableError,
)
from feeds.netcdf import read_netcdf
from geo.types import HazardKind, Nature

LAT_ATTRS = {"units": "degrees_north", "standard_name": "latitude"}
LON_ATTRS = {"units": "degrees_east", "standard_name": "longitude"}


def _write(ds: xr.Dataset, path: Path) -> Path:
    ds.to_netcdf(path, engine="netcdf4")
    return path


def _lat_lon_dataset() -> xr.Dataset:
    """3 x 4 gusts, latitudes listed south to north (40, 41, 42), lon 5..8; value = 10*row + col."""
    gust = np.arange(12, dtype="float32").reshape(3, 4) + np.array([[0], [6], [12]], "float32")
    gust[1, 1] = np.nan
    return xr.Dataset(
        {"max_wind_gust": (("latitude", "longitude"), gust, {"units": "m s-1"})},
        coords={"latitude": ("latitude", [40.0, 41.0, 42.0], LAT_ATTRS),
                "longitude": ("longitude", [5.0, 6.0, 7.0, 8.0], LON_ATTRS)},
    )


def test_lat_lon_rows_are_flipped_north_to_south_with_exact_bounds(tmp_path: Path) -> None:
    hazard = read_netcdf(_write(_lat_lon_dataset(), tmp_path / "gust.nc"))
    values = hazard.values_2d()
    # source row 2 (lat 42: 20, 21, 22, 23) becomes the first row
    np.testing.assert_array_equal(values[0], [20, 21, 22, 23])
    np.testing.assert_array_equal(values[2], [0, 1, 2, 3])
    assert np.isnan(values[1, 1]) and np.isnan(values).sum() == 1
    assert hazard.grid.transform.e < 0
    assert hazard.grid.bounds == pytest.approx((4.5, 39.5, 8.5, 42.5))
    assert hazard.grid.crs.to_epsg() == 4326
    assert hazard.kind == HazardKind.WIND_GUST and hazard.units == "m s-1"
    assert hazard.variable == "max_wind_gust" and hazard.nature == Nature.OBSERVED


def test_longitudes_0_to_360_are_rolled_to_minus_180_to_180(tmp_path: Path) -> None:
    ds = xr.Dataset(
        {"t2m": (("lat", "lon"), np.array([[1, 2, 3, 4], [5, 6, 7, 8]], "float32"))},
        coords={"lat": ("lat", [45.0, -45.0], LAT_ATTRS),
                "lon": ("lon", [0.0, 90.0, 180.0, 270.0], LON_ATTRS)},
    )
    hazard = read_netcdf(_write(ds, tmp_path / "global.nc"))
    # 180 -> -180 and 270 -> -90 move to the front: columns [180, 270, 0, 90]
    np.testing.assert_array_equal(hazard.values_2d(), [[3, 4, 1, 2], [7, 8, 5, 6]])
    np.testing.assert_array_equal(hazard.data.x.values, [-180.0, -90.0, 0.0, 90.0])
    assert hazard.grid.bounds == pytest.approx((-225.0, -90.0, 135.0, 90.0))
    assert hazard.kind == HazardKind.HEAT


def test_projected_axes_use_the_cf_grid_mapping(tmp_path: Path) -> None:
    laea = CRS("EPSG:3035")
    ds = xr.Dataset(
        {"depth": (("y", "x"), np.array([[0.5, 1.0, 1.5], [2.0, 2.5, 3.0]]),
                   {"units": "m", "grid_mapping": "crs"}),
         "crs": ((), 0, laea.to_cf())},
        coords={"x": ("x", [4_000_500.0, 4_001_500.0, 4_002_500.0],
                      {"standard_name": "projection_x_coordinate", "units": "m"}),
                "y": ("y", [3_001_500.0, 3_000_500.0],
                      {"standard_name": "projection_y_coordinate", "units": "m"})},
    )
    hazard = read_netcdf(_write(ds, tmp_path / "laea.nc"))
    assert hazard.grid.crs.equals(laea, ignore_axis_order=True)
    assert hazard.grid.bounds == pytest.approx((4_000_000.0, 3_000_000.0, 4_003_000.0, 3_002_000.0))
    assert hazard.values_2d()[1, 2] == 3.0
    assert hazard.kind == HazardKind.FLOOD_DEPTH


def test_projected_axes_without_grid_mapping_need_a_crs(tmp_path: Path) -> None:
    ds = xr.Dataset({"depth": (("y", "x"), np.ones((2, 2)))},
                    coords={"x": [100.0, 200.0], "y": [200.0, 100.0]})
    path = _write(ds, tmp_path / "nocrs.nc")
    with pytest.raises(MissingCRSError, match="pass crs"):
        read_netcdf(path)
    hazard = read_netcdf(path, ReadOptions(crs="EPSG:32632"))
    assert hazard.grid.crs.to_epsg() == 32632
    assert hazard.grid.bounds == pytest.approx((50.0, 50.0, 250.0, 250.0))


def _curvilinear(offset_per_row_deg: float) -> xr.Dataset:
    """3 x 3 points, rows at lat 50, 49.9, 49.8; row i shifted east by i*offset; v = 10*i + j."""
    rows, cols = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    lat = 50.0 - 0.1 * rows
    lon = 10.0 + 0.1 * cols + offset_per_row_deg * rows
    return xr.Dataset(
        {"gust": (("j", "i"), (10.0 * rows + cols), {"units": "m s-1"})},
        coords={"lat2d": (("j", "i"), lat, LAT_ATTRS), "lon2d": (("j", "i"), lon, LON_ATTRS)},
    )


def test_skewed_2d_lat_lon_is_resampled_to_nearest_neighbour(tmp_path: Path) -> None:
    hazard = read_netcdf(_write(_curvilinear(0.03), tmp_path / "skew.nc"))
    assert "resampled" in hazard.attrs
    # target centres lon 10.0..10.3 x lat 50..49.8; row 1 sources at 10.03/10.13/10.23,
    # row 2 at 10.06/10.16/10.26: nearest source by hand
    np.testing.assert_array_equal(
        hazard.values_2d(), [[0, 1, 2, 2], [10, 11, 12, 12], [20, 20, 21, 22]]
    )
    assert hazard.grid.transform.a == pytest.approx(0.1)
    assert hazard.grid.bounds == pytest.approx((9.95, 49.75, 10.35, 50.05))


def test_resampled_cells_far_from_any_source_point_are_nodata(tmp_path: Path) -> None:
    hazard = read_netcdf(_write(_curvilinear(0.3), tmp_path / "far.nc"))
    values = hazard.values_2d()
    assert values.shape == (3, 9)
    # (50, 10.8) and (49.8, 10.0) are > 1.5 cells from every point; (50, 10.0) is a point
    assert np.isnan(values[0, 8]) and np.isnan(values[2, 0])
    assert values[0, 0] == 0 and values[2, 8] == 22


def test_regular_2d_lat_lon_is_used_without_resampling(tmp_path: Path) -> None:
    hazard = read_netcdf(_write(_curvilinear(0.0), tmp_path / "reg2d.nc"))
    assert "resampled" not in hazard.attrs
    np.testing.assert_array_equal(hazard.values_2d(), [[0, 1, 2], [10, 11, 12], [20, 21, 22]])


def _ensemble(tmp_path: Path) -> Path:
    """Time (00, 06 UTC) x member (4) x 2 x 2 gusts: member m at time t is 10*t + m everywhere."""
    times = pd.to_datetime(["2024-01-01T00:00", "2024-01-01T06:00"])
    values = (10.0 * np.arange(2)[:, None, None, None] + np.arange(4)[None, :, None, None]
              + np.zeros((2, 4, 2, 2)))
    ds = xr.Dataset(
        {"gust": (("time", "member", "lat", "lon"), values, {"units": "m s-1"}),
         "forecast_reference_time": ((), np.datetime64("2023-12-31T18:00", "ns"))},
        coords={"time": times, "member": [0, 1, 2, 3],
                "lat": ("lat", [47.0, 46.0], LAT_ATTRS), "lon": ("lon", [8.0, 9.0], LON_ATTRS)},
    )
    return _write(ds, tmp_path / "ens.nc")


def test_time_and_member_dims_are_kept_when_nothing_is_selected(tmp_path: Path) -> None:
    hazard = read_netcdf(_ensemble(tmp_path))
    assert hazard.extra_dims == ("time", "member")
    assert hazard.data.shape == (2, 4, 2, 2)
    assert hazard.nature == Nature.FORECAST
    assert hazard.issued_at == datetime(2023, 12, 31, 18, tzinfo=UTC)


def test_time_by_iso_string_and_member_by_index_select_one_field(tmp_path: Path) -> None:
    hazard = read_netcdf(_ensemble(tmp_path), ReadOptions(time="2024-01-01T06:00", member=2))
    np.testing.assert_array_equal(hazard.values_2d(), np.full((2, 2), 12.0))
    assert hazard.valid_at == datetime(2024, 1, 1, 6, tzinfo=UTC)


def test_exceedance_is_the_share_of_members_at_or_above_the_threshold(tmp_path: Path) -> None:
    # at time 0 members hold 0, 1, 2, 3: three of four are >= 1
    hazard = read_netcdf(_ensemble(tmp_path), ReadOptions(time=0, reduce="exceedance",
                                                          threshold=1.0))
    np.testing.assert_array_equal(hazard.values_2d(), np.full((2, 2), 0.75))
    assert hazard.units == "1" and hazard.kind == HazardKind.PROBABILITY


@pytest.mark.parametrize(("how", "expected"), [("max", 13.0), ("mean", 11.5), ("min", 10.0)])
def test_members_are_reduced_by_max_mean_min(tmp_path: Path, how: str, expected: float) -> None:
    hazard = read_netcdf(_ensemble(tmp_path), ReadOptions(time=1, reduce=how))  # type: ignore[arg-type]
    np.testing.assert_array_equal(hazard.values_2d(), np.full((2, 2), expected))


def test_a_time_that_is_not_in_the_file_lists_the_available_times(tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match=r"2024-01-01T00:00:00, 2024-01-01T06:00:00"):
        read_netcdf(_ensemble(tmp_path), ReadOptions(time="2024-01-01T03:00"))
    with pytest.raises(SelectionError, match="out of range"):
        read_netcdf(_ensemble(tmp_path), ReadOptions(member=7))


def test_unknown_variable_lists_the_data_variables(tmp_path: Path) -> None:
    path = _write(_lat_lon_dataset(), tmp_path / "gust.nc")
    with pytest.raises(UnknownVariableError, match=r"'rain'.*\['max_wind_gust'\]"):
        read_netcdf(path, ReadOptions(variable="rain"))


def test_two_spatial_variables_without_a_choice_is_a_selection_error(tmp_path: Path) -> None:
    ds = _lat_lon_dataset()
    ds["rain"] = ds["max_wind_gust"] * 2
    with pytest.raises(SelectionError, match=r"\['max_wind_gust', 'rain'\]"):
        read_netcdf(_write(ds, tmp_path / "two.nc"))


def test_bad_files_raise_feed_errors(tmp_path: Path, truncate) -> None:
    with pytest.raises(FeedNotFoundError):
        read_netcdf(tmp_path / "absent.nc")
    noise = tmp_path / "noise.nc"
    noise.write_bytes(b"\x00\x01" * 500)
    with pytest.raises(FeedFormatError, match="not a NetCDF"):
        read_netcdf(noise)
    cut = truncate(_write(_lat_lon_dataset(), tmp_path / "cut.nc"), 0.5)
    with pytest.raises(FeedCorruptError):
        read_netcdf(cut)
