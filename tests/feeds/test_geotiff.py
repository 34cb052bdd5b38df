"""GeoTIFF / GDAL raster reader on tiny files whose values are written in the test."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from feeds.base import ReadOptions
from feeds.errors import (
    FeedCorruptError,
    FeedFormatError,
    FeedNotFoundError,
    MissingCRSError,
    SelectionError,
    UnknownVariableError,
)
from feeds.geotiff import read_geotiff
from geo.types import HazardKind, Nature

# 5 x 5 depths in metres, 0.0 .. 2.4 row by row; cell (2, 2) is the no-data -1.
DEPTHS_5x5 = np.arange(25, dtype="float32").reshape(5, 5) / 10
DEPTHS_5x5[2, 2] = -1.0


def test_geotiff_values_grid_and_nodata_are_read_exactly(make_geotiff) -> None:
    path = make_geotiff(DEPTHS_5x5, nodata=-1.0, descriptions=["flood_depth"], units=["m"])
    hazard = read_geotiff(path)
    values = hazard.values_2d()
    assert values.shape == (5, 5)
    assert np.isnan(values[2, 2]) and np.isnan(values).sum() == 1
    assert values[0, 1] == pytest.approx(0.1)
    assert values[4, 4] == pytest.approx(2.4)
    # upper-left (10, 50), 1-degree cells -> bounds (10, 45, 15, 50)
    assert hazard.grid.bounds == pytest.approx((10.0, 45.0, 15.0, 50.0))
    assert hazard.grid.crs.to_epsg() == 4326
    assert hazard.kind == HazardKind.FLOOD_DEPTH
    assert hazard.units == "m"
    assert hazard.nature == Nature.OBSERVED
    assert hazard.checksum.startswith("sha256:") and len(hazard.checksum) == 7 + 64
    assert hazard.data.x.values[0] == pytest.approx(10.5)
    assert hazard.data.y.values[0] == pytest.approx(49.5)


def test_nodata_sentinel_option_overrides_a_wrong_declared_nodata(make_geotiff) -> None:
    grid = np.array([[1.0, -9999.0], [3.0, 4.0]], dtype="float32")
    path = make_geotiff(grid, nodata=1.7e38)
    assert not np.isnan(read_geotiff(path).values_2d()).any()
    values = read_geotiff(path, ReadOptions(nodata=-9999.0)).values_2d()
    assert np.isnan(values[0, 1]) and np.nansum(values) == pytest.approx(8.0)


def test_cog_with_overviews_returns_full_resolution_values(make_geotiff) -> None:
    values = np.arange(64 * 64, dtype="float32").reshape(64, 64)
    path = make_geotiff(values, cog=True, res=0.1)
    with rasterio.open(path) as src_dst:
        assert src_dst.overviews(1) == [2, 4]
    hazard = read_geotiff(path)
    assert hazard.grid.shape == (64, 64)
    np.testing.assert_array_equal(hazard.values_2d(), values)


def test_bbox_read_is_rounded_outward_to_whole_cells(make_geotiff) -> None:
    path = make_geotiff(DEPTHS_5x5, nodata=-1.0)
    # (11.5, 46.2)-(12.2, 48.9) touches columns 1..2 and rows 1..3 (y 49-46)
    hazard = read_geotiff(path, ReadOptions(bbox=(11.5, 46.2, 12.2, 48.9)))
    assert hazard.grid.shape == (3, 2)
    assert hazard.grid.bounds == pytest.approx((11.0, 46.0, 13.0, 49.0))
    np.testing.assert_allclose(hazard.values_2d()[0], [0.6, 0.7])
    assert np.isnan(hazard.values_2d()[1, 1])  # the no-data cell (2, 2)


def test_bbox_is_clipped_to_the_raster_and_outside_bbox_is_an_error(make_geotiff) -> None:
    path = make_geotiff(DEPTHS_5x5)
    clipped = read_geotiff(path, ReadOptions(bbox=(0.0, 0.0, 11.0, 46.0)))
    assert clipped.grid.shape == (1, 1) and clipped.values_2d()[0, 0] == pytest.approx(2.0)
    with pytest.raises(SelectionError, match="does not overlap"):
        read_geotiff(path, ReadOptions(bbox=(100.0, 0.0, 101.0, 1.0)))


def test_band_is_chosen_by_number_or_description(make_geotiff) -> None:
    bands = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 2.0)]).astype("float32")
    path = make_geotiff(bands, descriptions=["rain_mm", "gust"])
    assert read_geotiff(path, ReadOptions(variable="band=2")).values_2d()[0, 0] == 2.0
    by_name = read_geotiff(path, ReadOptions(variable="GUST"))
    assert by_name.values_2d()[0, 0] == 2.0 and by_name.kind == HazardKind.WIND_GUST
    assert read_geotiff(path).kind == HazardKind.RAINFALL
    with pytest.raises(UnknownVariableError, match=r"band=1..band=2.*rain_mm"):
        read_geotiff(path, ReadOptions(variable="band=3"))


def test_missing_crs_is_an_error_unless_supplied(make_geotiff) -> None:
    path = make_geotiff(DEPTHS_5x5, crs=None)
    with pytest.raises(MissingCRSError, match="no CRS"):
        read_geotiff(path)
    assert read_geotiff(path, ReadOptions(crs="EPSG:32633")).grid.crs.to_epsg() == 32633


def test_valid_time_comes_from_the_tiff_datetime_tag(make_geotiff) -> None:
    path = make_geotiff(DEPTHS_5x5, tags={"TIFFTAG_DATETIME": "2024:03:01 06:30:00"})
    assert read_geotiff(path).valid_at == datetime(2024, 3, 1, 6, 30, tzinfo=UTC)


def test_gzipped_ascii_grid_is_read_through_vsigzip(tmp_path: Path) -> None:
    import gzip

    text = "ncols 3\nnrows 2\nxllcorner 0\nyllcorner 0\ncellsize 1\nNODATA_value -9999\n" \
           "1 2 3\n4 -9999 6\n"
    path = tmp_path / "depth.asc.gz"
    path.write_bytes(gzip.compress(text.encode()))
    hazard = read_geotiff(path, ReadOptions(crs="EPSG:4326"))
    np.testing.assert_array_equal(hazard.values_2d(), [[1, 2, 3], [4, np.nan, 6]])
    assert hazard.grid.bounds == pytest.approx((0.0, 0.0, 3.0, 2.0))


def test_missing_file_is_feed_not_found(tmp_path: Path) -> None:
    with pytest.raises(FeedNotFoundError, match="no such file"):
        read_geotiff(tmp_path / "absent.tif")


def test_truncated_tiff_is_feed_corrupt(make_geotiff, truncate) -> None:
    values = np.random.default_rng(1).random((64, 64)).astype("float32")
    path = truncate(make_geotiff(values), 0.5)
    with pytest.raises(FeedCorruptError, match="absent|damaged|truncated|cannot read"):
        read_geotiff(path)


def test_random_bytes_are_feed_format_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(FeedFormatError, match="not a raster"):
        read_geotiff(path)
