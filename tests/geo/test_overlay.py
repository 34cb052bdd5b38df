"""The whole overlay on a 5 x 5 region whose every figure is worked out by hand.

Population: 10 people in each of the 25 cells of 100 m (250 people). Zones: ``W`` is
columns 0-1 (10 cells, disability rate 0.1), ``E`` is columns 2-4 (15 cells, rate 0.2).
Flood depth: column 3 is 0.3 m (class 1, "0.15 to 0.5 m"), column 4 is 2.0 m (class 3,
"1.5 m and above"), elsewhere 0 m (class 0). A hospital stands in the centre cell (2, 2), a
shelter in cell (2, 4). Friction is 0.01 min/m: one minute per orthogonal 100 m step.
With a 3-minute access threshold every cell is within reach at baseline (the farthest,
column 0 corners, is 2 sqrt(2) = 2.83 min away); once column 4 (class 3, at or above the
0.5 m impassable depth) blocks travel, its 5 cells (50 people, 10 with disabilities) are
cut off from the hospital, and nobody else is (column 3 stays passable).
"""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from shapely.geometry import Point, box

from geo.errors import EmptyHazardError, NoOverlapError
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.overlay import OverlayCache, OverlayOptions, UnitsMismatchError, run_overlay
from geo.raster import Raster
from geo.region import GroupLayer, RegionPack
from geo.types import Group

GRID = Grid.from_bounds((0, 0, 500, 500), (5, 5), "EPSG:3035")


def _region(threshold_min: float = 3.0) -> RegionPack:
    zones = gpd.GeoDataFrame(
        {"zone_id": ["W", "E"], "name": ["West", "East"]},
        geometry=[box(0, 0, 200, 500), box(200, 0, 500, 500)], crs="EPSG:3035",
    )
    facilities = gpd.GeoDataFrame(
        {"facility_id": ["h1", "s1"], "name": ["Centre hospital", "East shelter"],
         "type": ["hospital", "shelter"]},
        geometry=[Point(250, 250), Point(450, 250)], crs="EPSG:3035",
    )
    return RegionPack(
        name="tiny",
        population=Raster(np.ma.masked_array(np.full((5, 5), 10.0)), GRID, "people"),
        zones=zones,
        groups={Group.DISABILITY: GroupLayer(
            Group.DISABILITY, rate_by_zone=pd.Series({"W": 0.1, "E": 0.2}))},
        facilities=facilities,
        friction=Raster(np.ma.masked_array(np.full((5, 5), 0.01)), GRID, "min/m"),
        access_threshold_min=threshold_min,
    )


def _flood(values: np.ndarray, grid: Grid = GRID, units: str = "m") -> HazardGrid:
    return HazardGrid(
        data=xr.DataArray(values, dims=("y", "x")), grid=grid, kind="flood_depth", units=units,
        nature="forecast", source="flood.tif", checksum="sha256:00",
    )


def _depths() -> np.ndarray:
    depth = np.zeros((5, 5))
    depth[:, 3] = 0.3
    depth[:, 4] = 2.0
    return depth


def _row(frame: pd.DataFrame, zone: str, k: int) -> pd.Series:
    return frame[(frame["zone_id"] == zone) & (frame["class"] == k)].iloc[0]


def test_people_and_groups_are_counted_by_zone_and_class_as_worked_out_by_hand() -> None:
    result = run_overlay(_flood(_depths()), _region())
    exp = result.exposure
    assert _row(exp, "W", 0)["population"] == pytest.approx(100)
    assert _row(exp, "E", 0)["population"] == pytest.approx(50)
    assert _row(exp, "E", 1)["population"] == pytest.approx(50)
    assert _row(exp, "E", 3)["population"] == pytest.approx(50)
    assert _row(exp, "E", 3)["disability"] == pytest.approx(10)
    assert _row(exp, "W", 0)["disability"] == pytest.approx(10)
    assert exp["population"].sum() == pytest.approx(250)
    assert result.totals.set_index("class").loc[2, "population"] == pytest.approx(0)


def test_facilities_are_counted_in_the_class_of_their_cell() -> None:
    result = run_overlay(_flood(_depths()), _region())
    assert _row(result.exposure, "E", 3)["shelter"] == 1
    assert _row(result.exposure, "E", 0)["hospital"] == 1
    assert result.facilities_hit["name"].tolist() == ["East shelter"]
    assert result.facilities_hit["label"].tolist() == ["1.5 m and above"]


def test_only_people_the_hazard_cuts_off_from_care_are_reported() -> None:
    result = run_overlay(_flood(_depths()), _region())
    assert result.impassable_from_class == 2  # 0.5 m, the first class at the blocking depth
    hospital = result.access[result.access["facility_type"] == "hospital"].set_index("zone_id")
    assert hospital.loc["E", "population"] == pytest.approx(50)
    assert hospital.loc["E", "disability"] == pytest.approx(10)
    assert hospital.loc["W", "population"] == pytest.approx(0)
    assert _row(result.exposure, "E", 3)["cut_off_hospital_population"] == pytest.approx(50)
    assert _row(result.exposure, "E", 1)["cut_off_hospital_population"] == pytest.approx(0)


def test_people_already_beyond_the_threshold_are_not_blamed_on_the_hazard() -> None:
    # With a 1.5 min threshold the column-4 corners (2 sqrt 2 min) were already too far.
    result = run_overlay(_flood(_depths()), _region(threshold_min=1.5))
    hospital = result.access[result.access["facility_type"] == "hospital"]
    # Only (1,4), (2,4), (3,4) are within 1.5 min at baseline (2.0 min orthogonal is not).
    assert hospital["population"].sum() == pytest.approx(0)


def test_a_finer_hazard_counts_each_population_cell_by_its_share_in_each_class() -> None:
    fine = Grid.from_bounds((0, 0, 500, 500), (10, 10), "EPSG:3035")
    depth = np.zeros((10, 10))
    depth[0:2, 0] = 1.0  # the west half of population cell (0, 0): class 2
    result = run_overlay(_flood(depth, fine), _region())
    assert _row(result.exposure, "W", 2)["population"] == pytest.approx(5)
    assert _row(result.exposure, "W", 0)["population"] == pytest.approx(95)


def test_footprint_areas_match_the_cells_of_each_class() -> None:
    result = run_overlay(_flood(_depths()), _region())
    areas = result.footprint.set_index("class")["area_km2"]
    assert areas.loc[1] == pytest.approx(0.05)
    assert areas.loc[3] == pytest.approx(0.05)


def test_a_hazard_elsewhere_is_refused_rather_than_counted_as_zero() -> None:
    far = Grid.from_bounds((10_000, 10_000, 10_500, 10_500), (5, 5), "EPSG:3035")
    with pytest.raises(NoOverlapError):
        run_overlay(_flood(_depths(), far), _region())


def test_an_all_no_data_hazard_is_refused() -> None:
    with pytest.raises(EmptyHazardError):
        run_overlay(_flood(np.full((5, 5), np.nan)), _region())


def test_a_hazard_in_other_units_than_the_breaks_is_refused() -> None:
    with pytest.raises(UnitsMismatchError, match="'cm'"):
        run_overlay(_flood(_depths() * 100, units="cm"), _region())


def test_hazards_that_do_not_close_roads_skip_the_access_assessment() -> None:
    gust = HazardGrid(
        data=xr.DataArray(np.full((5, 5), 30.0), dims=("y", "x")), grid=GRID, kind="wind_gust",
        units="m s**-1", nature="forecast", source="gust.grib2", checksum="sha256:00",
    )
    result = run_overlay(gust, _region())
    assert result.impassable_from_class is None
    assert result.access.empty
    assert result.totals.set_index("class").loc[2, "population"] == pytest.approx(250)


def test_the_cache_reuses_zones_and_access_baselines_across_hazards() -> None:
    cache = OverlayCache()
    region = _region()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = run_overlay(_flood(_depths()), region, cache=cache)
        baseline = cache.access_baselines
        second = run_overlay(_flood(_depths()), region, OverlayOptions(), cache)
    assert len(cache.zone_rasters) == 1 and cache.access_baselines is baseline
    pd.testing.assert_frame_equal(first.exposure, second.exposure)
