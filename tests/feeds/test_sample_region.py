"""The deterministic sample region: reproducible bytes, plausible layers, hazards over people.

The hazard files are checked with rasterio, xarray, eccodes and lxml directly (the hazard
readers are tested elsewhere).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from lxml import etree
from pyproj import Transformer
from scipy import ndimage

from feeds.region import load_region_pack
from feeds.sample import SampleRegion, build_sample_region
from feeds.sample import region as sample
from geo.types import FacilityType, Group, HazardKind

SHAKEMAP_NS = "{http://earthquake.usgs.gov/eqcenter/shakemap}"


def _digests(region: SampleRegion) -> dict[str, str]:
    return {
        str(p.relative_to(region.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in region.files()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return build_sample_region(tmp_path_factory.mktemp("sample") / "valley")


@pytest.fixture(scope="module")
def population(built: SampleRegion) -> tuple[np.ndarray, rasterio.Affine, dict]:
    with rasterio.open(built.root / "population.tif") as src:
        return src.read(1), src.transform, src.profile


@pytest.fixture(scope="module")
def friction(built: SampleRegion) -> np.ndarray:
    with rasterio.open(built.root / "friction.tif") as src:
        return src.read(1)


@pytest.fixture(scope="module")
def populated_lonlat(built: SampleRegion, population) -> np.ndarray:
    """Lon/lat of the cells with more than 1000 people/km2 (10 people per 100 m cell)."""
    values, transform, _ = population
    rows, cols = np.nonzero(values > 10)
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs(3035, 4326, always_xy=True).transform(xs, ys)
    return np.column_stack([lon, lat])


def test_same_seed_writes_byte_identical_files(built: SampleRegion, tmp_path: Path) -> None:
    again = build_sample_region(tmp_path / "again")
    first, second = _digests(built), _digests(again)
    assert len(first) == 12  # 6 layers + manifest, 6 hazard files
    assert first == second


def test_different_seed_changes_every_data_file(built: SampleRegion, tmp_path: Path) -> None:
    other = _digests(build_sample_region(tmp_path / "other", seed=8))
    changed = {name for name, digest in _digests(built).items() if other[name] != digest}
    assert changed == set(other) - {"region.toml"}  # the manifest is the same text


def test_population_total_is_within_the_stated_range_and_reported(built, population) -> None:
    values, _, profile = population
    total = float(values.sum(dtype="float64"))
    assert 280_000 <= total <= 360_000
    assert total == pytest.approx(built.population_total, rel=1e-9)
    assert values.min() >= 0


def test_population_is_a_tiled_deflate_float32_raster_of_100m_cells_in_laea(population) -> None:
    _, transform, profile = population
    assert profile["dtype"] == "float32"
    assert profile["crs"].to_epsg() == 3035
    assert (transform.a, transform.e) == (100.0, -100.0)
    assert (profile["width"], profile["height"]) == (400, 400)
    assert profile["tiled"] and profile["compress"] == "deflate"


def test_water_cells_are_empty_and_the_city_is_dense(population, friction) -> None:
    values, _, _ = population
    river = friction == np.float32(sample.RIVER_MIN_PER_M)
    assert river.sum() > 400 * 2  # ~2-3 cells wide across 400 columns
    assert values[river].sum() == 0
    # A city: some 100 m cells above 5,000 people/km2, none above the loader's 100,000 limit.
    assert values.max() > 50
    assert values.max() < 1000


def test_smaller_sample_scales_people_with_area(tmp_path: Path) -> None:
    small = build_sample_region(tmp_path / "small", size=40)
    # (40/400)^2 of the reference range 280k-360k.
    assert 2_800 <= small.population_total <= 3_600
    with pytest.raises(ValueError, match="at least 20 cells"):
        build_sample_region(tmp_path / "tiny", size=10)


def test_zones_have_unique_ids_names_and_rates_in_real_world_ranges(built) -> None:
    zones = gpd.read_file(built.root / "zones.gpkg", layer="zones")
    assert 200 <= len(zones) <= 300
    assert zones["zone_id"].is_unique and zones["zone_id"].iloc[0] == "Z001"
    assert zones["name"].notna().all()
    assert zones["disab_rate"].between(0.10, 0.25).all()
    assert 0.13 <= zones["disab_rate"].mean() <= 0.19  # WHO/Eurostat ~16 %
    assert zones["older_rate"].between(0.12, 0.30).all()
    assert zones["elec_dep_rate"].between(0.002, 0.01).all()
    # Voronoi zones clipped to the region tile it: 40 km x 40 km, no gap, no overlap.
    assert zones.area.sum() == pytest.approx(1600e6, rel=1e-9)
    assert shapely.union_all(zones.geometry.values).area == pytest.approx(1600e6, rel=1e-9)


def test_older_people_are_a_larger_share_in_rural_zones(built, population) -> None:
    values, transform, _ = population
    zones = gpd.read_file(built.root / "zones.gpkg", layer="zones")
    index = rasterio.features.rasterize(
        [(g, i + 1) for i, g in enumerate(zones.geometry)], out_shape=values.shape,
        transform=transform)
    people = np.bincount(index.ravel(), weights=values.ravel(), minlength=len(zones) + 1)[1:]
    density_km2 = people / (zones.area.to_numpy() / 1e6)
    dense = zones["older_rate"][density_km2 > 1000].mean()
    sparse = zones["older_rate"][density_km2 < 100].mean()
    assert sparse > dense + 0.03


def test_facilities_have_the_stated_counts_ids_and_lie_on_land(built, friction) -> None:
    facilities = gpd.read_file(built.root / "facilities.gpkg", layer="facilities")
    counts = facilities["type"].value_counts().to_dict()
    assert 3 <= counts["hospital"] <= 5
    assert (counts["care_home"], counts["shelter"], counts["school"]) == (15, 20, 40)
    assert set(facilities["type"]) <= {t.value for t in FacilityType}
    assert facilities["facility_id"].is_unique
    with rasterio.open(built.root / "friction.tif") as src:
        rows, cols = rasterio.transform.rowcol(src.transform, facilities.geometry.x,
                                               facilities.geometry.y)
    on_river = friction[np.asarray(rows), np.asarray(cols)] == np.float32(sample.RIVER_MIN_PER_M)
    assert not on_river[facilities["type"] != "hospital"].any()


def test_friction_has_roads_tracks_streets_and_a_river_crossed_at_3_or_4_bridges(
    friction,
) -> None:
    speeds = {np.float32(v) for v in (sample.ROAD_MIN_PER_M, sample.STREET_MIN_PER_M,
                                      sample.TRACK_MIN_PER_M, sample.OFFROAD_MIN_PER_M,
                                      sample.RIVER_MIN_PER_M)}
    assert set(np.unique(friction)) == speeds
    # The river runs west to east, so every column holds river cells except at a bridge,
    # where the crossing road replaced them.
    river = friction == np.float32(sample.RIVER_MIN_PER_M)
    bridge_columns = ~river.any(axis=0)
    _, bridges = ndimage.label(bridge_columns)
    assert 3 <= bridges <= 4
    # Over those bridges, every land cell reaches every other one (4-neighbour moves).
    _, land_parts = ndimage.label(~river)
    assert land_parts == 1


def test_registry_holds_about_300_records_inside_the_region_mostly_in_towns(
    built, population
) -> None:
    values, transform, _ = population
    with (built.root / "registry.csv").open(encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 300
    assert set(records[0]) == {"record_id", "lon", "lat", "need"}
    lon = np.array([float(r["lon"]) for r in records])
    lat = np.array([float(r["lat"]) for r in records])
    xs, ys = Transformer.from_crs(4326, 3035, always_xy=True).transform(lon, lat)
    rows, cols = rasterio.transform.rowcol(transform, xs, ys)
    rows, cols = np.asarray(rows), np.asarray(cols)
    assert ((rows >= 0) & (rows < 400) & (cols >= 0) & (cols < 400)).all()
    assert np.mean(values[rows, cols] > 10) > 0.8  # > 1000 people/km2: towns, not fields


def test_manifest_loads_as_a_region_pack(built) -> None:
    pack = load_region_pack(built.manifest)
    assert pack.name == "Sample valley"
    assert float(pack.population.data.sum()) == pytest.approx(built.population_total, rel=1e-6)
    assert set(pack.groups) == set(Group)
    assert pack.groups[Group.ELECTRICITY_DEPENDENT].is_registry
    assert float(pack.groups[Group.ELECTRICITY_DEPENDENT].registry_counts.data.sum()) == 300
    assert pack.groups[Group.OLDER].rate_by_zone.index.tolist()[:2] == ["Z001", "Z002"]
    assert pack.friction.units == "min/m" and pack.friction.grid.same_as(pack.population.grid)
    assert pack.min_public_count == 5 and pack.access_threshold_min == 60.0


def test_hazard_list_names_every_format_in_order(built) -> None:
    formats = [(h.path.name, h.kind, h.format) for h in built.hazards]
    assert formats == [
        ("flood_depth_run1.tif", HazardKind.FLOOD_DEPTH, "geotiff"),
        ("flood_depth_run2.tif", HazardKind.FLOOD_DEPTH, "geotiff"),
        ("flood_depth_run3.tif", HazardKind.FLOOD_DEPTH, "geotiff"),
        ("rain_forecast.nc", HazardKind.RAINFALL, "netcdf"),
        ("wind_gust.grib2", HazardKind.WIND_GUST, "grib2"),
        ("shakemap_grid.xml", HazardKind.SHAKING_MMI, "shakemap"),
    ]
    issued = [h.issued_at for h in built.hazards[:3]]
    assert issued == sorted(issued) and all(t.tzinfo is not None for t in issued)


def _flood(built: SampleRegion, run: int) -> tuple[np.ma.MaskedArray, rasterio.DatasetReader]:
    with rasterio.open(built.root / "feeds" / f"flood_depth_run{run}.tif") as src:
        return src.read(1, masked=True), src


def test_flood_runs_are_tagged_cog_like_geotiffs(built) -> None:
    for run, stamp in ((1, "2024:05:14 06:00:00"), (2, "2024:05:14 18:00:00"),
                       (3, "2024:05:16 06:00:00")):
        with rasterio.open(built.root / "feeds" / f"flood_depth_run{run}.tif") as src:
            assert src.crs.to_epsg() == 3035 and src.nodata == -9999
            assert src.profile["tiled"] and src.profile["compress"] == "deflate"
            assert src.overviews(1) == [2, 4]
            assert src.tags()["TIFFTAG_DATETIME"] == stamp
            assert src.tags()["TOCSIN_EVENT_ID"] == "SAMPLE-FLOOD-2024-05"
            assert src.units == ("m",)


def test_flood_run_2_is_larger_than_run_1_and_run_3_recedes(built, population, friction):
    people, _, _ = population
    land = friction != np.float32(sample.RIVER_MIN_PER_M)
    wet = {}
    exposed = {}
    for run in (1, 2, 3):
        depth, _ = _flood(built, run)
        assert 0 < depth.count() < depth.size  # nodata outside the model domain
        assert float(depth.max()) < 6.0
        flooded = (depth > 0.1).filled(False) & land
        wet[run] = int(flooded.sum())
        exposed[run] = float(people[flooded].sum())
    assert wet[2] > 1.5 * wet[1]
    assert wet[3] < 0.05 * wet[2]  # water back in the channel, barely over the banks
    assert exposed[1] > 1_000  # the overlay finds people under runs 1 and 2
    assert exposed[2] > 2 * exposed[1]
    assert exposed[3] < 0.02 * exposed[2]


def _nearest(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest axis point (axis regular, ascending or descending)."""
    step = axis[1] - axis[0]
    return np.clip(np.round((values - axis[0]) / step).astype(int), 0, axis.size - 1)


def test_rain_forecast_is_a_cf_ensemble_over_the_populated_valley(built, populated_lonlat):
    with xr.open_dataset(built.root / "feeds" / "rain_forecast.nc") as ds:
        rain = ds["precipitation_amount"]
        assert rain.dims == ("time", "member", "lat", "lon")
        assert rain.shape[:2] == (4, 10)
        assert rain.attrs["units"] == "mm"
        assert ds.attrs["Conventions"] == "CF-1.8" and "history" not in ds.attrs
        assert "forecast_reference_time" in ds.coords
        lats, lons = ds["lat"].values, ds["lon"].values
        lon_people, lat_people = populated_lonlat[:, 0], populated_lonlat[:, 1]
        assert lons.min() < lon_people.min() and lons.max() > lon_people.max()
        assert lats.min() < lat_people.min() and lats.max() > lat_people.max()
        day2_mean = rain.isel(time=1).mean("member").values
        at_people = day2_mean[_nearest(lats, populated_lonlat[:, 1]),
                              _nearest(lons, populated_lonlat[:, 0])]
        assert float(np.median(at_people)) > 40.0
        assert float(rain.min()) >= 0 and float(rain.max()) < 300


def test_wind_gust_grib2_is_a_gust_message_over_the_populated_valley(built, populated_lonlat):
    import eccodes

    with open(built.root / "feeds" / "wind_gust.grib2", "rb") as f:
        gid = eccodes.codes_grib_new_from_file(f)
        try:
            keys = {k: eccodes.codes_get(gid, k) for k in (
                "shortName", "discipline", "parameterCategory", "parameterNumber", "units",
                "dataDate", "dataTime", "Ni", "Nj", "typeOfLevel", "level",
                "iDirectionIncrementInDegrees")}
            lats = eccodes.codes_get_array(gid, "distinctLatitudes")
            lons = eccodes.codes_get_array(gid, "distinctLongitudes")
            values = eccodes.codes_get_values(gid).reshape(keys["Nj"], keys["Ni"])
            north = eccodes.codes_get(gid, "latitudeOfFirstGridPointInDegrees")
        finally:
            eccodes.codes_release(gid)
        assert eccodes.codes_grib_new_from_file(f) is None  # one message
    assert (keys["shortName"], keys["discipline"], keys["parameterCategory"],
            keys["parameterNumber"]) == ("gust", 0, 2, 22)
    assert keys["units"] == "m s**-1" or keys["units"] == "m s-1"
    assert (keys["dataDate"], keys["dataTime"]) == (20240514, 1200)
    assert (keys["typeOfLevel"], keys["level"]) == ("surface", 0)
    assert keys["iDirectionIncrementInDegrees"] == pytest.approx(0.01)
    lats = np.sort(lats)[::-1]
    assert north == pytest.approx(lats[0])  # first row is the northernmost
    at_people = values[_nearest(lats, populated_lonlat[:, 1]), _nearest(np.sort(lons),
                                                                        populated_lonlat[:, 0])]
    assert float(np.median(at_people)) > 25.0
    assert 5.0 < float(values.min()) and float(values.max()) < 50.0


def test_shakemap_grid_has_the_usgs_structure_and_shakes_the_towns(built, populated_lonlat):
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.parse(str(built.root / "feeds" / "shakemap_grid.xml"), parser).getroot()
    assert root.tag == f"{SHAKEMAP_NS}shakemap_grid"
    event = root.find(f"{SHAKEMAP_NS}event")
    assert 6.0 <= float(event.get("magnitude")) <= 6.6
    spec = root.find(f"{SHAKEMAP_NS}grid_specification")
    nlon, nlat = int(spec.get("nlon")), int(spec.get("nlat"))
    fields = [f.get("name") for f in root.findall(f"{SHAKEMAP_NS}grid_field")]
    assert fields[:5] == ["LON", "LAT", "PGA", "PGV", "MMI"]
    data = np.loadtxt(root.find(f"{SHAKEMAP_NS}grid_data").text.strip().splitlines())
    assert data.shape == (nlon * nlat, len(fields))
    lon = data[:, 0].reshape(nlat, nlon)
    lat = data[:, 1].reshape(nlat, nlon)
    assert lat[0, 0] == pytest.approx(float(spec.get("lat_max")))  # rows start in the north
    assert lon[0, 0] == pytest.approx(float(spec.get("lon_min")))
    mmi = data[:, 4].reshape(nlat, nlon)
    assert 1.0 <= mmi.min() and mmi.max() <= 10.0
    at_people = mmi[_nearest(lat[:, 0], populated_lonlat[:, 1]),
                    _nearest(lon[0], populated_lonlat[:, 0])]
    assert float(at_people.max()) >= 7.0  # the town near the epicentre
    assert float(np.median(at_people)) >= 5.0
