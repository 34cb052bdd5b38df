"""From the overlay to alert inputs, on a 5 x 5 region whose every figure is worked out by hand.

Grid: 5 x 5 cells of 100 m in EPSG:3035 (equal-area: 0.01 km2 a cell). Population: 10 people
in each cell. Zones: ``W`` is columns 0-1 (disability rate 0.1, older 0.3), ``E`` columns 2-4
(disability 0.2, older 0.1). Flood depth: column 3 is 0.3 m (class 1, "0.15 to 0.5 m"),
column 4 is 2.0 m (class 3, "1.5 m and above"), elsewhere 0 (class 0). Facilities: a hospital
in the centre cell (2, 2) (class 0), a school in (2, 3) (class 1), a care home in (2, 4)
(class 3). Friction: one minute per 100 m; access threshold 3 minutes. Column 4 (class 3,
deeper than the 0.5 m impassable depth) blocks travel: its 50 people, 10 of them with
disabilities, are cut off from the hospital.

So, in classes >= 1: 100 people (columns 3-4, all in E), 20 with disabilities, 10 older;
50 people in class 1 and 50 in class 3; area 0.05 km2 in each of classes 1 and 3.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from shapely.geometry import Point, box

from alerts.assess import (
    exposure_in_zones,
    footprint_lonlat,
    max_class_of,
    summarize_exposure,
    summarize_hazard,
)
from alerts.errors import AlertError, SubscriptionError
from alerts.model import ClassExposure, FacilityHit
from geo.classes import default_classes
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.overlay import OverlayResult, run_overlay
from geo.raster import Raster
from geo.region import GroupLayer, RegionPack
from geo.types import Group, HazardKind
from geo.zones import rasterize_zones

GRID = Grid.from_bounds((0, 0, 500, 500), (5, 5), "EPSG:3035")
ISSUED = datetime(2024, 5, 14, 6, tzinfo=UTC)
VALID = datetime(2024, 5, 14, 18, tzinfo=UTC)
ZONES = gpd.GeoDataFrame(
    {"zone_id": ["W", "E"], "name": ["West", "East"]},
    geometry=[box(0, 0, 200, 500), box(200, 0, 500, 500)], crs="EPSG:3035",
)


def _region() -> RegionPack:
    facilities = gpd.GeoDataFrame(
        {"facility_id": ["h1", "s1", "c1"], "name": ["St Mary", "River school", "Oak House"],
         "type": ["hospital", "school", "care_home"]},
        geometry=[Point(250, 250), Point(350, 250), Point(450, 250)], crs="EPSG:3035",
    )
    return RegionPack(
        name="tiny",
        population=Raster(np.ma.masked_array(np.full((5, 5), 10.0)), GRID, "people"),
        zones=ZONES,
        groups={
            Group.DISABILITY: GroupLayer(Group.DISABILITY,
                                         rate_by_zone=pd.Series({"W": 0.1, "E": 0.2})),
            Group.OLDER: GroupLayer(Group.OLDER, rate_by_zone=pd.Series({"W": 0.3, "E": 0.1})),
        },
        facilities=facilities,
        friction=Raster(np.ma.masked_array(np.full((5, 5), 0.01)), GRID, "min/m"),
        access_threshold_min=3.0,
    )


def _hazard(values: np.ndarray, kind: str = "flood_depth", units: str = "m",
            nature: str = "forecast", **changes: object) -> HazardGrid:
    return HazardGrid(
        data=xr.DataArray(values, dims=("y", "x")), grid=GRID, kind=kind, units=units,
        nature=nature, source="flood.tif", checksum="sha256:00", issued_at=ISSUED,
        valid_at=VALID, **changes,
    )


def _depths() -> np.ndarray:
    depth = np.zeros((5, 5))
    depth[:, 3] = 0.3
    depth[:, 4] = 2.0
    return depth


@pytest.fixture(scope="module")
def result() -> OverlayResult:
    return run_overlay(_hazard(_depths()), _region())


# --- summarize_exposure ---------------------------------------------------------------------


def test_people_and_groups_in_classes_1_and_above_are_summed_as_worked_out_by_hand(
    result: OverlayResult,
) -> None:
    summary = summarize_exposure(result)
    assert summary.population == pytest.approx(100.0)
    assert summary.disability == pytest.approx(20.0)
    assert summary.older == pytest.approx(10.0)
    assert summary.electricity_dependent == 0.0  # the region has no such layer
    assert summary.area_km2 == pytest.approx(0.10, rel=1e-6)


def test_people_cut_off_from_the_hospital_are_reported_with_those_with_disabilities(
    result: OverlayResult,
) -> None:
    summary = summarize_exposure(result)
    assert (summary.cut_off_population, summary.cut_off_disability) == pytest.approx((50, 10))


def test_figures_per_class_come_most_severe_last(result: OverlayResult) -> None:
    by_class = summarize_exposure(result).by_class
    assert [c.k for c in by_class] == [1, 2, 3]
    assert by_class[0] == ClassExposure(1, "0.15 to 0.5 m", pytest.approx(50.0),
                                        pytest.approx(10.0), pytest.approx(5.0), 0.0,
                                        pytest.approx(0.05, rel=1e-6))
    assert (by_class[1].population, by_class[1].area_km2) == (0.0, 0.0)
    assert by_class[2].population == pytest.approx(50.0)
    assert by_class[2].area_km2 == pytest.approx(0.05, rel=1e-6)


def test_facilities_in_the_footprint_are_listed_most_severe_first(result: OverlayResult) -> None:
    assert summarize_exposure(result).facilities_hit == (
        FacilityHit("Oak House", "care_home", "1.5 m and above"),
        FacilityHit("River school", "school", "0.15 to 0.5 m"),
    )


def test_from_class_3_counts_only_the_top_class_but_all_the_people_cut_off(
    result: OverlayResult,
) -> None:
    summary = summarize_exposure(result, from_class=3)
    assert summary.population == pytest.approx(50.0)
    assert summary.disability == pytest.approx(10.0)
    assert summary.area_km2 == pytest.approx(0.05, rel=1e-6)
    assert [f.name for f in summary.facilities_hit] == ["Oak House"]
    assert summary.cut_off_population == pytest.approx(50.0)
    assert [c.k for c in summary.by_class] == [3]


@pytest.mark.parametrize("from_class", [0, 4])
def test_a_from_class_outside_the_scale_is_refused(result: OverlayResult,
                                                  from_class: int) -> None:
    with pytest.raises(AlertError, match="from_class must be between 1 and 3"):
        summarize_exposure(result, from_class=from_class)


# --- exposure_in_zones ----------------------------------------------------------------------


def test_a_zone_gets_its_own_figures_not_the_event_total(result: OverlayResult) -> None:
    west = exposure_in_zones(result, ["W"])
    east = exposure_in_zones(result, ["E"])
    assert (west.population, west.cut_off_population) == (0.0, 0.0)
    assert east.population == pytest.approx(100.0)
    assert east.older == pytest.approx(10.0)
    assert east.cut_off_disability == pytest.approx(10.0)


def test_zones_together_add_up_to_the_region_total(result: OverlayResult) -> None:
    both = exposure_in_zones(result, ["W", "E", "E"])
    total = summarize_exposure(result)
    assert both.population == pytest.approx(total.population)
    assert both.disability == pytest.approx(total.disability)
    assert both.cut_off_population == pytest.approx(total.cut_off_population)


def test_without_the_zone_raster_the_area_of_zones_is_unknown_not_zero(
    result: OverlayResult,
) -> None:
    east = exposure_in_zones(result, ["E"])
    assert math.isnan(east.area_km2)
    assert all(math.isnan(c.area_km2) for c in east.by_class)


def test_with_the_zone_raster_the_area_is_that_of_the_zones_cells_in_the_footprint(
    result: OverlayResult,
) -> None:
    zones = rasterize_zones(ZONES, GRID)
    east = exposure_in_zones(result, ["E"], zone_raster=zones)
    west = exposure_in_zones(result, ["W"], zone_raster=zones)
    assert east.area_km2 == pytest.approx(0.10, rel=1e-6)
    assert [c.area_km2 for c in east.by_class] == pytest.approx([0.05, 0.0, 0.05], rel=1e-6)
    assert west.area_km2 == 0.0


def test_a_zone_raster_of_another_grid_is_refused(result: OverlayResult) -> None:
    other = Grid.from_bounds((0, 0, 1000, 1000), (5, 5), "EPSG:3035")
    with pytest.raises(AlertError, match="another grid"):
        exposure_in_zones(result, ["E"], zone_raster=rasterize_zones(ZONES, other))


def test_unknown_zone_codes_are_named_with_some_valid_ones(result: OverlayResult) -> None:
    with pytest.raises(SubscriptionError, match=r"\['X1', 'X2'\].*e\.g\. E, W"):
        exposure_in_zones(result, ["E", "X2", "X1"])
    with pytest.raises(SubscriptionError, match="no zone id"):
        exposure_in_zones(result, [])


# --- summarize_hazard, max_class_of, footprint_lonlat ---------------------------------------


def test_a_forecast_starts_at_its_valid_time_and_carries_its_provenance(
    result: OverlayResult,
) -> None:
    hazard = _hazard(_depths(), event_id="EFAS-2024-17")
    summary = summarize_hazard(hazard, result.classes, max_class_of(result))
    assert (summary.kind, summary.nature, summary.units) == ("flood_depth", "forecast", "m")
    assert (summary.n_classes, summary.max_class, summary.max_class_label) == (
        3, 3, "1.5 m and above")
    assert (summary.issued_at, summary.onset) == (ISSUED, VALID)
    assert summary.exceedance_share is None
    assert (summary.source, summary.checksum, summary.source_event_id) == (
        "flood.tif", "sha256:00", "EFAS-2024-17")


def test_an_observation_starts_at_its_issue_time_or_else_its_valid_time(
    result: OverlayResult,
) -> None:
    observed = _hazard(_depths(), nature="observed")
    assert summarize_hazard(observed, result.classes, 3).onset == ISSUED
    no_issue = HazardGrid(
        data=observed.data, grid=GRID, kind="flood_depth", units="m", nature="observed",
        source="flood.tif", checksum="sha256:00", valid_at=VALID,
    )
    assert summarize_hazard(no_issue, result.classes, 3).onset == VALID


def test_the_highest_class_comes_from_the_cells_of_the_footprint() -> None:
    shallow = _depths()
    shallow[:, 4] = 0.3  # columns 3 and 4 in class 1 only
    assert max_class_of(run_overlay(_hazard(shallow), _region())) == 1


def test_a_class_outside_the_scale_is_refused(result: OverlayResult) -> None:
    with pytest.raises(AlertError, match="max_class must be between 0 and 3"):
        summarize_hazard(_hazard(_depths()), result.classes, 4)


@pytest.mark.parametrize(("units", "scale"), [("1", 1.0), ("%", 100.0)])
def test_an_exceedance_grid_reports_its_highest_share_of_members(units: str,
                                                                 scale: float) -> None:
    shares = np.zeros((5, 5))
    shares[1, 1] = 0.35
    shares[2, 2] = 0.7
    hazard = _hazard(shares * scale, kind="probability", units=units)
    classes = default_classes(HazardKind.PROBABILITY)  # 0.3, 0.6, 0.9
    summary = summarize_hazard(hazard, classes, 2)
    assert summary.exceedance_share == pytest.approx(0.7)
    assert summary.max_class_label == classes.label(2)


def test_shares_beyond_all_members_are_refused() -> None:
    shares = np.full((5, 5), 0.5)
    shares[0, 0] = 1.5
    hazard = _hazard(shares, kind="probability", units="1")
    with pytest.raises(AlertError, match="between 0 and 1"):
        summarize_hazard(hazard, default_classes(HazardKind.PROBABILITY), 3)


def test_the_footprint_in_lon_lat_covers_the_flooded_cells(result: OverlayResult) -> None:
    footprint = footprint_lonlat(result)
    back = gpd.GeoSeries([footprint], crs="EPSG:4326").to_crs("EPSG:3035").iloc[0]
    assert back.area == pytest.approx(2 * 5 * 100 * 100, rel=1e-4)  # columns 3 and 4
    assert back.buffer(-1).within(box(300, 0, 500, 500))
    top = gpd.GeoSeries([footprint_lonlat(result, from_class=3)], crs="EPSG:4326")
    assert top.to_crs("EPSG:3035").iloc[0].area == pytest.approx(5 * 100 * 100, rel=1e-4)
