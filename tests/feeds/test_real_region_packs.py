"""Real layers load as region packs: manifests written in tmp_path point at the real files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Geod
from rasterio.features import rasterize

from feeds.errors import MissingCRSError
from feeds.region import load_region_pack
from geo.types import Group

pytestmark = pytest.mark.realdata

SWISS_DENSITY = "raster/population/population-density_median.tif"
COUNTRIES = "boundaries/naturalearth_lowres/naturalearth_lowres.shp"
GEORGIA = "boundaries/georgia_counties_1990/G_utm.shp"


def _row_areas_km2(transform: rasterio.Affine, height: int) -> np.ndarray:
    """Cell area of each row on WGS84, cells traced with parallels densified every 1/20 cell."""
    geod = Geod(ellps="WGS84")
    xres, yres = transform.a, -transform.e
    lons = np.r_[np.linspace(0, xres, 21), np.linspace(xres, 0, 21)]
    areas = np.empty(height)
    for row in range(height):
        north = transform.f - row * yres
        lats = np.r_[np.full(21, north - yres), np.full(21, north)]
        areas[row] = abs(geod.polygon_area_perimeter(lons, lats)[0]) / 1e6
    return areas


@pytest.fixture(scope="module")
def swiss_pack(real_data: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("swiss")
    with rasterio.open(real_data / SWISS_DENSITY) as src:
        box = shapely.box(*src.bounds)
    countries = gpd.read_file(real_data / COUNTRIES)
    clipped = countries[countries.intersects(box)].clip(box)
    clipped[["iso_a3", "name", "geometry"]].to_file(folder / "countries.gpkg")
    manifest = folder / "region.toml"
    manifest.write_text(
        f'[region]\nname = "Swiss plateau"\n\n[population]\npath = '
        f'"{(real_data / SWISS_DENSITY).as_posix()}"\nkind = "density"\n\n'
        '[zones]\npath = "countries.gpkg"\nid = "iso_a3"\nname = "name"\n',
        encoding="utf-8",
    )
    return load_region_pack(manifest)


def test_swiss_density_becomes_counts_matching_an_independent_area_computation(
    swiss_pack, real_data: Path
) -> None:
    with rasterio.open(real_data / SWISS_DENSITY) as src:
        density = src.read(1, masked=True).astype("float64")
        transform = src.transform
    assert density.shape == (166, 372)
    expected = float((density * _row_areas_km2(transform, 166)[:, None]).sum())
    total = float(swiss_pack.population.data.sum())
    assert total == pytest.approx(expected, rel=1e-5)
    # The crop spans 6.7-9.7 E, 46.5-47.9 N: the Swiss plateau with Basel, Zurich, Bern,
    # and bits of France and Germany; Switzerland as a whole has 8.6 million people.
    assert 5e6 < total < 1.2e7


def test_swiss_zones_are_the_clipped_countries_and_switzerland_holds_most_people(
    swiss_pack,
) -> None:
    zones = swiss_pack.zones
    assert sorted(zones["zone_id"]) == ["AUT", "CHE", "DEU", "FRA"]
    assert zones.crs.to_epsg() == 4326
    grid = swiss_pack.population.grid
    index = rasterize([(g, i + 1) for i, g in enumerate(zones.geometry)], out_shape=grid.shape,
                      transform=grid.transform)
    people = np.bincount(index.ravel(), weights=swiss_pack.population.filled().ravel(),
                         minlength=len(zones) + 1)
    by_zone = dict(zip(zones["zone_id"], people[1:], strict=True))
    assert by_zone["CHE"] > 0.5 * sum(by_zone.values())
    assert 3e6 < by_zone["CHE"] < 8.6e6  # the crop misses Geneva, Ticino, the Alps' east


@pytest.fixture(scope="module")
def georgia(real_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Counties, and a 5 km population raster spreading each county's people evenly."""
    folder = tmp_path_factory.mktemp("georgia")
    counties = gpd.read_file(real_data / GEORGIA)
    assert counties.crs is None  # the trap: no .prj
    west, south, east, north = counties.total_bounds
    west, south = np.floor(west / 5000) * 5000, np.floor(south / 5000) * 5000
    width, height = int(np.ceil((east - west) / 5000)), int(np.ceil((north - south) / 5000))
    transform = rasterio.Affine(5000.0, 0.0, west, 0.0, -5000.0, south + height * 5000)
    index = rasterize([(g, i + 1) for i, g in enumerate(counties.geometry)],
                      out_shape=(height, width), transform=transform, dtype="int32")
    cells = np.bincount(index.ravel(), minlength=len(counties) + 1)[1:]
    assert cells.min() >= 1  # the smallest county (314 km2) still holds whole 5 km cells
    per_cell = np.r_[0.0, counties["TotPop90"].to_numpy() / cells]
    population = per_cell[index].astype("float32")
    with rasterio.open(folder / "population.tif", "w", driver="GTiff", width=width,
                       height=height, count=1, dtype="float32", crs="EPSG:26916",
                       transform=transform) as dst:
        dst.write(population, 1)
    body = (f'[region]\nname = "Georgia 1990"\n\n[population]\npath = "population.tif"\n\n'
            f'[zones]\npath = "{(real_data / GEORGIA).as_posix()}"\nid = "AreaKey"\n'
            '{crs}\n[groups.older]\nrate_column = "PctEld"\nrate_unit = "percent"\n')
    without = folder / "without_crs.toml"
    without.write_text(body.format(crs=""), encoding="utf-8")
    with_crs = folder / "region.toml"
    with_crs.write_text(body.format(crs='crs = "EPSG:26916"'), encoding="utf-8")
    return counties, without, with_crs


def test_georgia_counties_without_prj_need_the_crs_from_the_manifest(georgia) -> None:
    _, without, _ = georgia
    with pytest.raises(MissingCRSError, match=r"G_utm.shp: has no CRS; set crs in \[zones\]"):
        load_region_pack(without)


def test_georgia_county_totals_round_trip_through_the_region_pack(georgia) -> None:
    counties, _, manifest = georgia
    pack = load_region_pack(manifest)
    zones = pack.zones
    assert len(zones) == 159 and zones.crs.to_epsg() == 26916
    assert zones["zone_id"].iloc[0] == str(counties["AreaKey"].iloc[0])  # text ids
    grid = pack.population.grid
    index = rasterize([(g, i + 1) for i, g in enumerate(zones.geometry)], out_shape=grid.shape,
                      transform=grid.transform, dtype="int32")
    people = np.bincount(index.ravel(), weights=pack.population.filled().ravel(),
                         minlength=len(zones) + 1)[1:]
    np.testing.assert_allclose(people, counties["TotPop90"].to_numpy(), rtol=1e-5)
    assert float(pack.population.data.sum()) == pytest.approx(6_478_216, rel=1e-6)


def test_georgia_percent_elderly_becomes_the_older_share(georgia) -> None:
    counties, _, manifest = georgia
    rates = load_region_pack(manifest).groups[Group.OLDER].rate_by_zone
    expected = dict(zip(counties["AreaKey"].astype(str), counties["PctEld"] / 100, strict=True))
    assert rates.to_dict() == pytest.approx(expected)
    assert 0.0146 == pytest.approx(rates.min()) and 0.2296 == pytest.approx(rates.max())
