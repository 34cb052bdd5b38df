"""Deterministic builder of a realistic sample region and its hazard feeds.

``build_sample_region(out_dir, seed=7, size=400)`` writes a fictional river valley of
``size`` x ``size`` cells of 100 m in EPSG:3035 (ETRS89-LAEA, equal-area), centred near
10.9 E 47.65 N, as a region pack (see :mod:`feeds.region` for the manifest format):

- ``population.tif``: people per cell (float32), a city on the river, 3-5 towns and rural
  spread, water cells 0. The total is drawn in 280k-360k for ``size=400`` and scales with
  the area for other sizes, so densities (people/km2) do not depend on ``size``.
- ``zones.gpkg``: ~250 Voronoi zones (``zone_id`` ``Z001``...), names, and per-zone shares
  ``disab_rate`` (0.10-0.25; WHO/Eurostat average ~0.16), ``older_rate`` (aged 65+,
  0.12-0.30, higher rurally) and ``elec_dep_rate`` (0.002-0.01).
- ``facilities.gpkg``: 3-5 hospitals, ~15 care homes, ~20 shelters, ~40 schools.
- ``friction.tif``: minutes per metre: main roads 75 km/h, town streets 30 km/h, tracks
  20 km/h, off-road 5 km/h, the river nearly impassable except at its 3-4 bridges.
- ``registry.csv``: ~300 individual records (``record_id,lon,lat,need``) of
  electricity-dependent people, the source of that group in the manifest (agencies hold
  such lists: home oxygen, dialysis, ventilators); disability and older come from rates.
- ``region.toml``: the manifest.
- ``feeds/``: hazard files over the region in every supported format (see
  :mod:`feeds.sample.hazards`).

The same seed gives byte-identical files: GDAL creation options are fixed, the GeoPackage
timestamp is pinned (``OGR_CURRENT_DATE``) and the NetCDF has no history attribute.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from scipy.ndimage import distance_transform_edt

from feeds.sample import hazards
from feeds.sample.hazards import SampleHazardFile
from feeds.sample.terrain import (
    OFFROAD_MIN_PER_M,
    RIVER_MIN_PER_M,
    ROAD_MIN_PER_M,
    STREET_MIN_PER_M,
    TRACK_MIN_PER_M,
    URBAN_PEOPLE_PER_CELL,
    cells_to_xy,
    draw_friction,
    rasterise_river,
    river_centreline,
)
from geo.grid import Grid
from geo.types import FacilityType

__all__ = [
    "CELL_M", "CENTRE_X_M", "CENTRE_Y_M", "FACILITIES_REF", "GPKG_TIMESTAMP", "LAYER_FILES",
    "POPULATION_RANGE_REF", "REFERENCE_SIZE_CELLS", "REGION_CRS", "REGISTRY_RECORDS_REF",
    "ZONES_REF", "SampleHazardFile", "SampleRegion", "build_sample_region",
    # The friction speeds, drawn in feeds.sample.terrain, stay importable from here.
    "OFFROAD_MIN_PER_M", "RIVER_MIN_PER_M", "ROAD_MIN_PER_M", "STREET_MIN_PER_M",
    "TRACK_MIN_PER_M", "URBAN_PEOPLE_PER_CELL",
]

REGION_CRS = "EPSG:3035"
CELL_M = 100.0
CENTRE_X_M = 4_388_000.0  # EPSG:3035 easting of ~10.9 E 47.65 N (a fictional Alpine valley)
CENTRE_Y_M = 2_727_000.0
REFERENCE_SIZE_CELLS = 400
"""Lengths and counts below are for this size; other sizes scale them (see module doc)."""
POPULATION_RANGE_REF = (280_000.0, 360_000.0)
ZONES_REF = 250
FACILITIES_REF = {FacilityType.CARE_HOME: 15, FacilityType.SHELTER: 20, FacilityType.SCHOOL: 40}
REGISTRY_RECORDS_REF = 300


LAYER_FILES = ("population.tif", "zones.gpkg", "facilities.gpkg", "friction.tif",
               "registry.csv", "region.toml")
"""The region pack's files, beside the ``feeds/`` folder of hazard files."""

GPKG_TIMESTAMP = "2024-05-01T00:00:00.000Z"
"""Pinned ``last_change`` of the GeoPackages, so that builds are byte-identical."""

_PREFIXES = [
    "Alt", "Berg", "Birk", "Brunn", "Eich", "Erl", "Fels", "Fisch", "Gold", "Gras", "Hag",
    "Hasel", "Hoch", "Holz", "Kalt", "Kirch", "Lang", "Linden", "Moos", "Muehl", "Neu",
    "Ober", "Ried", "Rosen", "Sand", "Schön", "Stein", "Sonn", "Tann", "Unter", "Weiden",
    "Wies", "Wolf",
]
_SUFFIXES = [
    "au", "bach", "berg", "brunn", "dorf", "feld", "hausen", "heim", "hof", "ingen",
    "kirchen", "reuth", "stadt", "tal", "wald", "weiler",
]
_QUARTERS = [
    "Centre", "Old Town", "Riverside", "North", "South", "East", "West", "Station",
    "Market", "Mill", "Park", "Hill", "Meadow", "Bridge", "Castle", "Harbour",
]
_NEEDS = ["home oxygen", "home dialysis", "ventilator", "powered wheelchair", "stair lift",
          "feeding pump"]


@dataclass(frozen=True, slots=True)
class SampleRegion:
    """What :func:`build_sample_region` wrote.

    Attributes:
        root: the output folder.
        manifest: the region pack manifest (``region.toml``).
        hazards: the hazard feed files, flood runs in issue order first.
        seed: the seed used.
        size: cells a side.
        population_total: people in ``population.tif`` (float32 sum).
    """

    root: Path
    manifest: Path
    hazards: tuple[SampleHazardFile, ...]
    seed: int
    size: int
    population_total: float

    def files(self) -> list[Path]:
        """Every file written, sorted (layers, manifest and hazard feeds)."""
        return sorted([*(self.root / name for name in LAYER_FILES),
                       *(h.path for h in self.hazards)])


@dataclass(frozen=True, slots=True)
class _Place:
    """A settlement: centre in cell coordinates, spread and share of the urban people."""

    name: str
    row: float
    col: float
    sigma_cells: float
    weight: float


class _Names:
    """Unique, deterministic place names drawn from syllables (numbered once all are used)."""

    def __init__(self, rng: np.random.Generator) -> None:
        pairs = [p + s for p in _PREFIXES for s in _SUFFIXES]
        self._pool = [pairs[i] for i in rng.permutation(len(pairs))]
        self._used = 0

    def next(self) -> str:
        """The next unused name."""
        rounds, index = divmod(self._used, len(self._pool))
        self._used += 1
        return self._pool[index] + (f" {rounds + 1}" if rounds else "")


def build_sample_region(out_dir: Path, *, seed: int = 7, size: int = 400) -> SampleRegion:
    """Write the deterministic sample region pack and its hazard feeds into ``out_dir``.

    Args:
        out_dir: folder to write into (created if missing; files of the pack are replaced).
        seed: the random seed; the same seed gives byte-identical files.
        size: cells a side (100 m cells); 400 gives a 40 km square.

    Returns:
        The manifest and hazard files written.

    Raises:
        ValueError: ``size`` is below 20 cells (too small to hold a valley and towns).
    """
    if size < 20:
        raise ValueError(f"sample region size must be at least 20 cells, got {size}")
    out_dir = Path(out_dir)
    (out_dir / "feeds").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scale = size / REFERENCE_SIZE_CELLS
    half_m = size * CELL_M / 2
    grid = Grid.from_bounds(
        (CENTRE_X_M - half_m, CENTRE_Y_M - half_m, CENTRE_X_M + half_m, CENTRE_Y_M + half_m),
        (size, size),
        REGION_CRS,
    )
    names = _Names(rng)
    river_row = river_centreline(rng, size)
    river = rasterise_river(grid, river_row, CELL_M)
    river_distance_m = distance_transform_edt(~river) * CELL_M
    city, towns = _place_settlements(rng, names, size, scale, river_row)
    population = _population(rng, grid, scale, [city, *towns], river, river_distance_m)
    friction = draw_friction(rng, grid, scale, river_row, river, population, [city, *towns])
    hazards.write_geotiff(out_dir / "population.tif", population, grid, units="people",
                          description="population")
    hazards.write_geotiff(out_dir / "friction.tif", friction, grid, units="min/m",
                          description="friction")
    zones, zone_index = _zones(rng, names, grid, scale, population, [city, *towns])
    facilities = _facilities(rng, grid, scale, population, river, zones, zone_index,
                             [city, *towns])
    _write_gpkg(zones, out_dir / "zones.gpkg", "zones")
    _write_gpkg(facilities, out_dir / "facilities.gpkg", "facilities")
    _write_registry(rng, grid, scale, population, out_dir / "registry.csv")
    manifest = out_dir / "region.toml"
    manifest.write_text(_MANIFEST, encoding="utf-8")
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    city_lonlat = to_lonlat.transform(*cells_to_xy(grid, city.row, city.col))
    big_town = max(towns, key=lambda t: t.weight)
    town_lonlat = to_lonlat.transform(*cells_to_xy(grid, big_town.row, big_town.col))
    hazard_files = hazards.write_sample_hazards(
        out_dir / "feeds", grid, river_distance_m, rng=rng, scale=scale,
        city_lonlat=(float(city_lonlat[0]), float(city_lonlat[1])),
        town_lonlat=(float(town_lonlat[0]), float(town_lonlat[1])))
    return SampleRegion(out_dir, manifest, hazard_files, seed, size,
                        float(population.sum(dtype="float64")))


def _place_settlements(
    rng: np.random.Generator, names: _Names, size: int, scale: float, river_row: np.ndarray
) -> tuple[_Place, list[_Place]]:
    """The city (north bank, by the river) and 3-5 towns on either bank."""
    def row_at(col: float, side: int, off_cells: float) -> float:
        base = float(river_row[int(round(col * 2))])
        return float(np.clip(base + side * off_cells, 0.06 * size, 0.94 * size))

    city_col = size * rng.uniform(0.45, 0.55)
    city = _Place(names.next(), row_at(city_col, -1, max(3.0, 8 * scale)), city_col,
                  max(1.5, 16 * scale), 1.0)
    n_towns = int(rng.integers(3, 6))
    fracs = np.sort(rng.choice([0.1, 0.27, 0.5, 0.73, 0.9], size=n_towns, replace=False))
    sides = rng.choice([-1, 1], size=n_towns)
    sides[fracs == 0.5] = 1  # a town opposite the city, never on top of it
    if np.all(sides == sides[0]):
        sides[0] = -sides[0]
    towns = []
    for i, (frac, side) in enumerate(zip(fracs, sides, strict=True)):
        # The first town sits by the river (the floods reach it); the others anywhere.
        off = rng.uniform(6, 10) if i == 0 else rng.uniform(8, 45)
        col = float(np.clip(size * (frac + rng.uniform(-0.03, 0.03)), 2, size - 3))
        towns.append(_Place(names.next(), row_at(col, int(side), max(3.0, off * scale)), col,
                            max(1.0, rng.uniform(5, 9) * scale), rng.uniform(0.5, 1.5)))
    return city, towns


def _gaussian(shape: tuple[int, int], place: _Place) -> np.ndarray:
    """Unit-sum 2-D gaussian around a place."""
    rows = np.arange(shape[0])[:, None] + 0.5
    cols = np.arange(shape[1])[None, :] + 0.5
    g = np.exp(-0.5 * (((rows - place.row) ** 2 + (cols - place.col) ** 2)
                       / place.sigma_cells ** 2))
    return g / g.sum()


def _population(
    rng: np.random.Generator,
    grid: Grid,
    scale: float,
    places: list[_Place],
    river: np.ndarray,
    river_distance_m: np.ndarray,
) -> np.ndarray:
    """People per cell: half in the city, a third in towns, the rest rural; water empty."""
    total = rng.uniform(*POPULATION_RANGE_REF) * scale * scale
    city, towns = places[0], places[1:]
    town_weights = np.array([t.weight for t in towns])
    urban = 0.50 * total * _gaussian(grid.shape, city)
    for town, w in zip(towns, town_weights / town_weights.sum(), strict=True):
        urban += 0.33 * total * w * _gaussian(grid.shape, town)
    urban *= rng.lognormal(0.0, 0.3, size=grid.shape)
    # Rural people live mostly on the valley floor, fewer up the slopes.
    rural = rng.lognormal(0.0, 0.9, size=grid.shape) * (
        0.3 + np.exp(-river_distance_m / (8000.0 * scale)))
    rural *= 0.17 * total / rural.sum()
    people = urban + rural
    people[river] = 0.0
    people *= total / people.sum()
    return people.astype("float32")


def _zones(
    rng: np.random.Generator,
    names: _Names,
    grid: Grid,
    scale: float,
    population: np.ndarray,
    places: list[_Place],
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Voronoi zones of seeded points (denser where people live) with group rates."""
    n_zones = max(8, round(ZONES_REF * scale * scale))
    n_weighted = round(0.6 * n_zones)
    weights = population.ravel().astype("float64") / population.sum(dtype="float64")
    picked = rng.choice(population.size, size=n_weighted, replace=False, p=weights)
    rows = np.r_[picked // grid.width + rng.uniform(0, 1, n_weighted),
                 rng.uniform(0, grid.height, n_zones - n_weighted)]
    cols = np.r_[picked % grid.width + rng.uniform(0, 1, n_weighted),
                 rng.uniform(0, grid.width, n_zones - n_weighted)]
    xs, ys = cells_to_xy(grid, rows, cols)
    order = np.lexsort((np.round(xs), -np.round(ys, -3)))  # north to south in 1 km bands
    seeds = shapely.points(xs[order], ys[order])
    box = shapely.box(*grid.bounds)
    cells = shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=box, ordered=True)
    geoms = shapely.intersection(np.asarray(shapely.get_parts(cells)), box)
    index = rasterize([(g, i + 1) for i, g in enumerate(geoms)], out_shape=grid.shape,
                      transform=grid.transform, dtype="int32")
    people = np.bincount(index.ravel(), weights=population.ravel(), minlength=len(geoms) + 1)
    density_km2 = people[1:] / (shapely.area(geoms) / 1e6)
    rural = 1.0 - np.clip(np.log10(density_km2 + 1.0) / np.log10(3000.0), 0.0, 1.0)
    n = len(geoms)
    older = np.clip(0.13 + 0.13 * rural + rng.normal(0, 0.02, n), 0.12, 0.30)
    disab = np.clip(0.14 + 0.3 * (older - 0.12) + rng.normal(0, 0.025, n), 0.10, 0.25)
    elec = np.clip(0.003 + 0.02 * (older - 0.12) + rng.normal(0, 0.0012, n), 0.002, 0.01)
    zone_names = _zone_names(names, geoms, grid, places)
    zones = gpd.GeoDataFrame(
        {
            "zone_id": [f"Z{i + 1:03d}" for i in range(n)],
            "name": zone_names,
            "disab_rate": np.round(disab, 4),
            "older_rate": np.round(older, 4),
            "elec_dep_rate": np.round(elec, 4),
        },
        geometry=list(geoms),
        crs=grid.crs,
    )
    return zones, index


def _zone_names(names: _Names, geoms: np.ndarray, grid: Grid, places: list[_Place]) -> list[str]:
    """Quarters of the town a zone lies in, or a village name of its own."""
    cx, cy = shapely.get_x(shapely.centroid(geoms)), shapely.get_y(shapely.centroid(geoms))
    used: dict[str, int] = {}
    out = []
    for x, y in zip(cx, cy, strict=True):
        col, row = ~grid.transform @ (x, y)
        near = [p for p in places if np.hypot(p.row - row, p.col - col) < 2.2 * p.sigma_cells]
        if near:
            place = near[0]
            k = used.get(place.name, 0)
            used[place.name] = k + 1
            quarter = _QUARTERS[k] if k < len(_QUARTERS) else str(k + 1)
            out.append(f"{place.name} {quarter}")
        else:
            out.append(names.next())
    return out


def _facilities(
    rng: np.random.Generator,
    grid: Grid,
    scale: float,
    population: np.ndarray,
    river: np.ndarray,
    zones: gpd.GeoDataFrame,
    zone_index: np.ndarray,
    places: list[_Place],
) -> gpd.GeoDataFrame:
    """Hospitals in the city and the largest towns; other facilities where people live."""
    city, towns = places[0], sorted(places[1:], key=lambda p: -p.weight)
    sites = [city, *towns[:3], city, *towns[3:]][: int(rng.integers(3, 6))]
    rows, cols, kinds, labels = [], [], [], []
    for k, site in enumerate(sites):
        r, c = site.row + rng.normal(0, 1.5 * scale), site.col + rng.normal(0, 1.5 * scale)
        rows.append(r)
        cols.append(c)
        kinds.append(FacilityType.HOSPITAL)
        labels.append(f"{site.name} {'General Hospital' if k == 0 else 'Hospital'}")
    land = population.ravel().astype("float64") * ~river.ravel()
    # Care homes follow people; shelters spread wider (power < 1); schools in between.
    spread_power = {FacilityType.CARE_HOME: 1.0, FacilityType.SHELTER: 0.5,
                    FacilityType.SCHOOL: 0.8}
    for kind, ref_count in FACILITIES_REF.items():
        weights = land ** spread_power[kind]
        count = max(1, round(ref_count * scale * scale))
        picked = rng.choice(land.size, size=count, replace=False, p=weights / weights.sum())
        rows.extend(picked // grid.width + rng.uniform(0.1, 0.9, count))
        cols.extend(picked % grid.width + rng.uniform(0.1, 0.9, count))
        kinds.extend([kind] * count)
        labels.extend([None] * count)
    xs, ys = cells_to_xy(grid, np.array(rows), np.array(cols))
    suffix = {FacilityType.CARE_HOME: "Care Home", FacilityType.SHELTER: "Emergency Shelter",
              FacilityType.SCHOOL: "School"}
    prefix = {FacilityType.HOSPITAL: "HOSP", FacilityType.CARE_HOME: "CARE",
              FacilityType.SHELTER: "SHLT", FacilityType.SCHOOL: "SCHL"}
    counters: dict[FacilityType, int] = {}
    ids, final_names = [], []
    for r, c, kind, label in zip(rows, cols, kinds, labels, strict=True):
        counters[kind] = counters.get(kind, 0) + 1
        ids.append(f"{prefix[kind]}{counters[kind]:03d}")
        zone = int(zone_index[min(int(r), grid.height - 1), min(int(c), grid.width - 1)])
        zone_name = zones["name"].iloc[zone - 1] if zone > 0 else "Valley"
        final_names.append(label or f"{zone_name} {suffix[kind]} {counters[kind]}")
    return gpd.GeoDataFrame(
        {"facility_id": ids, "name": final_names, "type": [str(k) for k in kinds]},
        geometry=shapely.points(np.round(xs, 1), np.round(ys, 1)),
        crs=grid.crs,
    )


def _write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    """Write one GeoPackage layer with its timestamp pinned (byte-identical rebuilds)."""
    path.unlink(missing_ok=True)
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    try:
        frame.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def _write_registry(
    rng: np.random.Generator, grid: Grid, scale: float, population: np.ndarray, path: Path
) -> None:
    """Write individual records (WGS84 lon/lat), concentrated in towns."""
    count = max(5, round(REGISTRY_RECORDS_REF * scale * scale))
    weights = population.ravel().astype("float64") ** 1.3
    picked = rng.choice(population.size, size=count, replace=True, p=weights / weights.sum())
    rows = picked // grid.width + rng.uniform(0.05, 0.95, count)
    cols = picked % grid.width + rng.uniform(0.05, 0.95, count)
    xs, ys = cells_to_xy(grid, rows, cols)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    needs = rng.choice(_NEEDS, size=count, p=[0.35, 0.15, 0.1, 0.2, 0.1, 0.1])
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["record_id", "lon", "lat", "need"])
        for i in range(count):
            writer.writerow([f"R{i + 1:04d}", f"{lon[i]:.6f}", f"{lat[i]:.6f}", needs[i]])


_MANIFEST = """\
# Sample region pack written by feeds.sample.build_sample_region (synthetic data).
[region]
name = "Sample valley"
crs = "EPSG:3035"
min_public_count = 5
access_threshold_min = 60

[population]
path = "population.tif"
kind = "counts"

[zones]
path = "zones.gpkg"
layer = "zones"
id = "zone_id"
name = "name"

[groups.disability]
rate_column = "disab_rate"
rate_unit = "share"

[groups.older]
rate_column = "older_rate"
rate_unit = "share"

# Agencies hold registers of people on electricity-dependent care: individual records,
# aggregated to population cells at load time (the locations are dropped).
[groups.electricity_dependent]
registry = "registry.csv"

[facilities]
path = "facilities.gpkg"
layer = "facilities"
id = "facility_id"
type = "type"
name = "name"

[friction]
path = "friction.tif"
units = "min/m"
"""
