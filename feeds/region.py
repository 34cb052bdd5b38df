"""Load a region pack (exposure layers) from its TOML manifest.

A region pack is a folder (or any set of files) named by a small TOML manifest. Paths are
relative to the manifest (absolute paths work too). Only ``[region]`` and ``[population]``
are required::

    [region]
    name = "Sample valley"
    crs = "EPSG:3035"            # optional default CRS for layers whose file has none
    min_public_count = 5         # privacy: counts below are suppressed in public outputs
    access_threshold_min = 60    # travel time to care beyond which people are cut off

    [population]
    path = "population.tif"      # any raster GDAL reads
    kind = "counts"              # people per cell, or "density": people per km2, converted
    band = 1                     #   to counts with the TRUE cell areas (Grid.cell_areas_m2)
    crs = "EPSG:4326"            # only if the file lacks one
    max_density_km2 = 100000     # optional: the kind check's limit (see below)

    [zones]
    path = "zones.gpkg"          # any vector format GDAL reads (pyogrio)
    layer = "zones"              # optional
    id = "zone_id"               # id column (read as text)
    name = "name"                # optional name column (default: the id)
    crs = "EPSG:26916"           # only if the file lacks one (a shapefile without .prj)

    [groups.older]               # also groups.disability, groups.electricity_dependent
    rate_column = "older_rate"   # per-zone share in the zones file, or one of:
    rate_unit = "share"          #   rate_table = "rates.csv" (columns zone_id,rate)
                                 #   rate_raster = "older.tif" (on the population grid)
                                 # "share" is 0..1, "percent" is 0..100
    registry = "registry.csv"    # individual records (lon,lat or x,y), counted per cell
    registry_crs = "EPSG:2056"   #   only for x,y records without a crs column

    [facilities]
    path = "facilities.gpkg"
    layer = "facilities"         # optional
    id = "facility_id"           # optional (default facility_id, generated if absent)
    type = "type"                # hospital, care_home, shelter or school
    name = "name"                # optional
    crs = "EPSG:4326"            # only if the file lacks one
    [facilities.type_map]        # optional: the file's own words for the types
    "nursing home" = "care_home"

    [friction]
    path = "friction.tif"        # cost of crossing one metre of the cell
    units = "min/m"              # or "s/m" (converted to min/m)

The loader checks everything and raises a :class:`~feeds.errors.FeedError` naming the
manifest, the section and field, and what was expected: missing files and columns (listing
those that exist), rates out of range, layers without a CRS, duplicate zone ids, unknown
facility types, zones that miss the population raster. Zones and facilities are reprojected
to the population CRS; invalid zone polygons are repaired with ``make_valid`` and reported
with a :class:`~geo.errors.GeometryRepairedWarning`.

Population kind check: declaring counts as a density (or the reverse) scales every value by
the cell area in km2, so the mistake shows as an implausible density wherever cells are far
from 1 km2. The loader computes the population-weighted mean density implied by the declared
kind (people per km2, each cell weighted by its people) and raises
:class:`~geo.errors.LayerKindError` above ``max_density_km2`` (default 100,000: the densest
city districts on Earth average below that). With cells near 1 km2 the two readings differ
little, and the check cannot tell them apart.

The ``[groups.<name>]`` sections are read by :mod:`feeds.region_groups`; the manifest checks
and the raster and vector readers both loaders share live in :mod:`feeds.region_layers`.
"""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from feeds.errors import FeedNotFoundError, ManifestError
from feeds.region_groups import load_groups
from feeds.region_layers import Manifest, read_raster, read_vector, require_column
from geo.errors import GeometryRepairedWarning, LayerKindError
from geo.grid import Grid
from geo.raster import Raster
from geo.region import DEFAULT_MIN_PUBLIC_COUNT, RegionPack
from geo.transformers import transformer
from geo.types import FacilityType

MAX_PLAUSIBLE_DENSITY_KM2 = 100_000.0
"""Default limit of the population-weighted mean density (people/km2) the kind check allows."""

_FRICTION_TO_MIN_PER_M = {"min/m": 1.0, "s/m": 1.0 / 60.0}


def load_region_pack(manifest_path: Path) -> RegionPack:
    """Load and check every layer named by a region-pack manifest.

    Args:
        manifest_path: the TOML manifest (see the module docstring for its format).

    Returns:
        The region pack: population as counts, zones and facilities in the population CRS,
        group layers, friction in minutes per metre.

    Raises:
        FeedNotFoundError: the manifest itself is missing.
        ManifestError: a section, field, file, column or value is wrong (the message says which).
        MissingCRSError: a layer has no CRS and the manifest gives none.
        geo.errors.LayerKindError: the population is not the declared kind (counts/density).
    """
    path = Path(manifest_path)
    if not path.is_file():
        raise FeedNotFoundError(path, "region-pack manifest not found")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(path, f"is not valid TOML: {exc}") from exc
    m = Manifest(path, doc)
    unknown = sorted(set(doc) - {"region", "population", "zones", "groups", "facilities",
                                 "friction"})
    if unknown:
        raise ManifestError(path, f"unknown section(s) {unknown}")
    region = m.section("region", required=True) or {}
    name = m.text(region, "region", "name", required=True)
    default_crs = m.crs(region, "region")
    min_count = m.number(region, "region", "min_public_count", DEFAULT_MIN_PUBLIC_COUNT)
    if min_count != int(min_count):
        raise m.error("region", f"min_public_count must be a whole number, got {min_count}")
    population = _load_population(m, default_crs)
    zones, zone_table = _load_zones(m, default_crs, population.grid)
    return RegionPack(
        name=str(name),
        population=population,
        zones=zones,
        groups=load_groups(m, default_crs, population.grid, zones, zone_table),
        facilities=_load_facilities(m, default_crs, population.grid),
        friction=_load_friction(m, default_crs),
        min_public_count=int(min_count),
        access_threshold_min=m.number(region, "region", "access_threshold_min", 60.0),
        source=str(path),
    )

def subscription_context(manifest_path: Path
                         ) -> tuple[tuple[float, float, float, float], set[str] | None]:
    """What a subscription is checked against: the pack's lon/lat bounds and its zone ids.

    Zone ids are None when the pack has no zones. Used by ``tocsin subscribe add`` and by
    the API (``TOCSIN_REGION``), so both accept and refuse the same subscriptions.
    """
    pack = load_region_pack(manifest_path)
    grid = pack.population.grid
    bounds = transformer(grid.crs, "EPSG:4326").transform_bounds(*grid.bounds)
    zones = set(pack.zones["zone_id"]) if pack.zones is not None else None
    return bounds, zones


def _load_population(m: Manifest, default_crs: CRS | None) -> Raster:
    """Population as people per cell; densities are converted with the true cell areas."""
    table = m.section("population", required=True) or {}
    kind = m.text(table, "population", "kind", "counts")
    if kind not in ("counts", "density"):
        raise m.error("population", f"kind must be 'counts' or 'density', got {kind!r}")
    limit = m.number(table, "population", "max_density_km2", MAX_PLAUSIBLE_DENSITY_KM2,
                     minimum=1.0)
    raster = read_raster(m, table, "population", default_crs)
    if raster.data.count() == 0:
        raise m.error("population", f"{raster.name} holds no valid cell (all no-data)")
    low = float(raster.data.min())
    if low < 0:
        raise m.error("population", f"{raster.name} has negative values (lowest {low}); "
                      "people per cell or per km2 cannot be negative")
    area_km2 = raster.grid.cell_areas_m2() / 1e6
    if kind == "density":
        counts, density = raster.data * area_km2, raster.data
    else:
        counts, density = raster.data, raster.data / area_km2
    _check_kind(m, raster.name, str(kind), counts, density, limit)
    return Raster(counts, raster.grid, units="people", name=raster.name)


def _check_kind(m: Manifest, name: str, kind: str, counts: np.ma.MaskedArray,
                density: np.ma.MaskedArray, limit_km2: float) -> None:
    """Raise LayerKindError when the declared kind implies an implausible density."""
    total = float(counts.sum())
    if total <= 0:
        return
    weighted_km2 = float((counts * density).sum() / total)
    if weighted_km2 <= limit_km2:
        return
    other = "density" if kind == "counts" else "counts"
    raise LayerKindError(
        f"{m.path}: [population] {name} is declared kind = {kind!r}, which implies a "
        f"population-weighted mean density of {weighted_km2:,.0f} people/km2 (limit "
        f"{limit_km2:,.0f}); the values look like {other}: set kind = {other!r} (or raise "
        "max_density_km2 if the place really is that dense)"
    )


def _load_zones(m: Manifest, default_crs: CRS | None,
                grid: Grid) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Zones (zone_id, name, geometry) in the population CRS, plus the raw table for rates."""
    table = m.section("zones")
    if table is None:
        return None, None
    raw = read_vector(m, table, "zones", default_crs)
    id_col = str(m.text(table, "zones", "id", required=True))
    ids = require_column(m, raw, "zones", "id", id_col)
    if ids.isna().any():
        raise m.error("zones", f"id column {id_col!r} is empty in {int(ids.isna().sum())} row(s)")
    ids = ids.map(_id_text)
    dupes = sorted(set(ids[ids.duplicated()]))
    if dupes:
        raise m.error("zones", f"zone ids must be unique; {id_col!r} repeats {dupes[:20]}")
    name_col = m.text(table, "zones", "name")
    names = (ids if name_col is None
             else require_column(m, raw, "zones", "name", name_col).astype(str))
    geoms = _repaired_polygons(m, raw.geometry.to_numpy(), ids.to_numpy())
    zones = gpd.GeoDataFrame({"zone_id": ids.to_numpy(), "name": names.to_numpy()},
                             geometry=geoms, crs=raw.crs).to_crs(grid.crs)
    if not zones.intersects(shapely.box(*grid.bounds)).any():
        raise m.error("zones", f"no zone overlaps the population raster: zones cover "
                      f"{tuple(round(v, 3) for v in zones.total_bounds)}, the raster "
                      f"{tuple(round(v, 3) for v in grid.bounds)} (both in "
                      f"{grid.crs.to_string()}); is a CRS wrong?")
    raw = raw.assign(zone_id=ids.to_numpy())
    return zones, raw


def _id_text(value: object) -> str:
    """An id as text; whole floats (from numeric columns) lose their '.0'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _repaired_polygons(m: Manifest, geoms: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Repair invalid polygons with make_valid (keeping the polygonal part), and warn."""
    invalid = ~shapely.is_valid(geoms)
    if not invalid.any():
        return geoms
    fixed = geoms.copy()
    fixed[invalid] = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
    listed = [str(i) for i in ids[invalid][:20]]
    warnings.warn(
        f"{m.path}: [zones] repaired {int(invalid.sum())} invalid geometr"
        f"{'y' if invalid.sum() == 1 else 'ies'} with make_valid: zone ids {listed}",
        GeometryRepairedWarning,
        stacklevel=4,
    )
    return fixed


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a repaired geometry (make_valid may add lines or points)."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _load_facilities(m: Manifest, default_crs: CRS | None,
                     grid: Grid) -> gpd.GeoDataFrame | None:
    """Facilities (facility_id, name, type, geometry) as points in the population CRS."""
    table = m.section("facilities")
    if table is None:
        return None
    raw = read_vector(m, table, "facilities", default_crs)
    type_col = str(m.text(table, "facilities", "type", "type"))
    type_map = table.get("type_map", {})
    if not isinstance(type_map, dict):
        raise m.error("facilities", "type_map must be a table of 'file value' = 'type'")
    allowed = [t.value for t in FacilityType]
    words = require_column(m, raw, "facilities", "type", type_col).astype(str).str.strip()
    mapped = words.map(lambda w: type_map.get(w, w).strip().lower().replace(" ", "_")
                       .replace("-", "_"))
    unknown = sorted(set(words[~mapped.isin(allowed)]))
    if unknown:
        raise m.error("facilities", f"type column {type_col!r} has unknown value(s) "
                      f"{unknown[:20]}; allowed: {allowed} (map others with [facilities."
                      "type_map])")
    id_col = str(m.text(table, "facilities", "id", "facility_id"))
    if id_col in raw.columns or "id" in table:
        ids = require_column(m, raw, "facilities", "id", id_col).map(_id_text)
    else:
        ids = pd.Series([f"F{i + 1:04d}" for i in range(len(raw))])
    name_col = str(m.text(table, "facilities", "name", "name"))
    if name_col in raw.columns or "name" in table:
        names = require_column(m, raw, "facilities", "name", name_col).astype(str)
    else:
        names = ids
    # Buildings drawn as polygons count at a point inside them.
    points = [g if g.geom_type == "Point" else g.representative_point()
              for g in raw.geometry]
    return gpd.GeoDataFrame(
        {"facility_id": ids.to_numpy(), "name": names.to_numpy(), "type": mapped.to_numpy()},
        geometry=points, crs=raw.crs,
    ).to_crs(grid.crs)


def _load_friction(m: Manifest, default_crs: CRS | None) -> Raster | None:
    """Friction in minutes per metre, on its own grid; values must be positive."""
    table = m.section("friction")
    if table is None:
        return None
    units = m.text(table, "friction", "units", "min/m")
    if units not in _FRICTION_TO_MIN_PER_M:
        raise m.error("friction", f"units must be one of {sorted(_FRICTION_TO_MIN_PER_M)}, "
                      f"got {units!r}")
    raster = read_raster(m, table, "friction", default_crs)
    if raster.data.count() and float(raster.data.min()) <= 0:
        raise m.error("friction", f"{raster.name}: friction must be positive (time to cross a "
                      f"metre), lowest value {float(raster.data.min())}")
    data = raster.data * _FRICTION_TO_MIN_PER_M[str(units)]
    return Raster(data, raster.grid, units="min/m", name=raster.name)
