"""Registry records counted per population cell, on a 5 x 5 grid of 10 m cells.

Grid: EPSG:3035, upper-left corner (1000, 2050), so column c spans x 1000+10c .. 1010+10c
and row r spans y 2050-10r-10 .. 2050-10r.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from feeds.errors import FeedFormatError, FeedNotFoundError, MissingCRSError
from feeds.registry import (
    RecordsOutsideGridWarning,
    RegistryCounts,
    aggregate_registry,
    load_registry_counts,
    read_registry_csv,
)
from geo.errors import CRSMismatchError
from geo.grid import Grid

GRID = Grid.from_bounds((1000.0, 2000.0, 1050.0, 2050.0), (5, 5), "EPSG:3035")


def test_points_are_counted_in_the_cells_that_hold_them() -> None:
    points = np.array([
        [1005.0, 2045.0],  # row 0, col 0
        [1001.0, 2041.0],  # row 0, col 0
        [1025.0, 2025.0],  # row 2, col 2
        [1049.0, 2001.0],  # row 4, col 4
        [1012.0, 2033.0],  # row 1, col 1
        [1013.0, 2034.0],  # row 1, col 1
        [1014.0, 2035.0],  # row 1, col 1
    ])
    result = aggregate_registry(points, GRID)
    expected = np.array([
        [2, 0, 0, 0, 0],
        [0, 3, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1],
    ])
    np.testing.assert_array_equal(result.counts.filled(), expected)
    assert (result.total, result.outside) == (7, 0)
    assert result.counts.units == "people" and result.counts.grid is GRID


def test_a_point_on_a_shared_corner_is_counted_once_in_the_cell_to_its_south_east() -> None:
    # x = 1010 is the edge between columns 0 and 1; y = 2040 between rows 0 and 1. Cells
    # hold their west and north edges: the point belongs to row 1, column 1.
    result = aggregate_registry(np.array([[1010.0, 2040.0]]), GRID)
    assert result.counts.filled()[1, 1] == 1 and result.counts.filled().sum() == 1


def test_points_outside_the_grid_are_counted_and_reported_not_dropped_silently() -> None:
    points = np.array([[1005.0, 2045.0], [999.0, 2045.0], [1050.0, 2025.0], [1025.0, 2000.0]])
    with pytest.warns(RecordsOutsideGridWarning, match="3 of 4 registry record"):
        result = aggregate_registry(points, GRID)
    assert (result.total, result.outside) == (4, 3)
    assert result.counts.filled().sum() == 1


def test_geodataframe_points_must_share_the_grid_crs() -> None:
    frame = gpd.GeoDataFrame(geometry=[shapely.Point(1005, 2045)], crs="EPSG:3035")
    assert aggregate_registry(frame, GRID).counts.filled()[0, 0] == 1
    with pytest.raises(CRSMismatchError, match="registry points is in EPSG:4326"):
        aggregate_registry(frame.set_crs("EPSG:4326", allow_override=True), GRID)
    lines = gpd.GeoDataFrame(geometry=[shapely.LineString([(1, 1), (2, 2)])], crs="EPSG:3035")
    with pytest.raises(FeedFormatError, match="not points"):
        aggregate_registry(lines, GRID)


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(FeedFormatError, match=r"\(n, 2\) array"):
        aggregate_registry(np.zeros((3, 3)), GRID)
    with pytest.raises(FeedFormatError, match="1 record"):
        aggregate_registry(np.array([[1005.0, np.nan]]), GRID)
    assert aggregate_registry(np.empty((0, 2)), GRID).counts.filled().sum() == 0


def test_the_result_keeps_counts_only_never_locations() -> None:
    fields = [f.name for f in dataclasses.fields(RegistryCounts)]
    assert fields == ["counts", "total", "outside"]


def test_csv_with_lon_lat_is_read_as_wgs84(tmp_path: Path) -> None:
    path = tmp_path / "reg.csv"
    path.write_text("record_id,lon,lat,need\nR1,10.5,47.25,oxygen\nR2,10.6,47.3,dialysis\n",
                    encoding="utf-8")
    xy, crs = read_registry_csv(path)
    np.testing.assert_array_equal(xy, [[10.5, 47.25], [10.6, 47.3]])
    assert crs.to_epsg() == 4326


def test_csv_with_x_y_takes_the_crs_column_or_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "reg.csv"
    path.write_text("x,y,crs\n1005,2045,EPSG:3035\n", encoding="utf-8")
    xy, crs = read_registry_csv(path)
    assert crs.to_epsg() == 3035 and xy.tolist() == [[1005.0, 2045.0]]
    path.write_text("x,y\n1005,2045\n", encoding="utf-8")
    with pytest.raises(MissingCRSError, match="reg.csv: x,y records need a CRS"):
        read_registry_csv(path)
    assert read_registry_csv(path, crs="EPSG:3035")[1].to_epsg() == 3035


def test_csv_problems_name_the_file_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "reg.csv"
    with pytest.raises(FeedNotFoundError):
        read_registry_csv(path)
    path.write_text("lon,lat\n10.5,47.2\n,47.3\n10.7,abc\n", encoding="utf-8")
    with pytest.raises(FeedFormatError, match=r"2 record\(s\) have a missing or non-numeric "
                       r"lon/lat \(lines 3, 4\)"):
        read_registry_csv(path)
    path.write_text("lon,lat\n47.2,210.5\n", encoding="utf-8")
    with pytest.raises(FeedFormatError, match="must be degrees"):
        read_registry_csv(path)
    path.write_text("easting,northing\n1,2\n", encoding="utf-8")
    with pytest.raises(FeedFormatError, match=r"needs columns lon,lat or x,y.*'easting'"):
        read_registry_csv(path)


def test_loading_reprojects_lon_lat_records_onto_the_grid(tmp_path: Path) -> None:
    # EPSG:3035 maps 10 E 52 N to its false origin (4,321,000, 3,210,000): the centre of
    # the middle cell of this 3 x 3 grid of 1 km cells.
    grid = Grid.from_bounds((4_319_500.0, 3_208_500.0, 4_322_500.0, 3_211_500.0), (3, 3),
                            "EPSG:3035")
    path = tmp_path / "reg.csv"
    path.write_text("lon,lat\n10,52\n10,52\n", encoding="utf-8")
    counts = load_registry_counts(path, grid).counts.filled()
    np.testing.assert_array_equal(counts, [[0, 0, 0], [0, 2, 0], [0, 0, 0]])
