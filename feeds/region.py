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
"""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.errors
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from feeds.errors import (
    FeedError,
    FeedFormatError,
    FeedNotFoundError,
    ManifestError,
    MissingCRSError,
)
from feeds.registry import load_registry_counts
from geo.errors import GeometryRepairedWarning, LayerKindError
from geo.grid import Grid
from geo.raster import Raster
from geo.region import DEFAULT_MIN_PUBLIC_COUNT, GroupLayer, RegionPack
from geo.types import FacilityType, Group

MAX_PLAUSIBLE_DENSITY_KM2 = 100_000.0
"""Default limit of the population-weighted mean density (people/km2) the kind check allows."""

_SECTION_KEYS: dict[str, set[str]] = {
    "region": {"name", "crs", "min_public_count", "access_threshold_min"},
    "population": {"path", "kind", "band", "crs", "max_density_km2"},
    "zones": {"path", "layer", "id", "name", "crs"},
    "group": {"rate_column", "rate_table", "rate_raster", "rate_unit", "band", "registry",
              "registry_crs"},
    "facilities": {"path", "layer", "id", "type", "name", "crs", "type_map"},
    "friction": {"path", "band", "units", "crs"},
}
_FRICTION_TO_MIN_PER_M = {"min/m": 1.0, "s/m": 1.0 / 60.0}
_RATE_SCALE = {"share": 1.0, "percent": 100.0}


class _Manifest:
    """The parsed manifest with helpers that name it in every error."""

    def __init__(self, path: Path, doc: Mapping[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self.folder = path.parent

    def error(self, where: str, reason: str) -> ManifestError:
        return ManifestError(self.path, f"[{where}] {reason}")

    def section(self, name: str, *, required: bool = False) -> dict[str, Any] | None:
        table = self.doc.get(name)
        if table is None:
            if required:
                raise self.error(name, "section is missing; it is required")
            return None
        return self.checked(table, name, _SECTION_KEYS[name])

    def checked(self, table: object, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.error(where, f"must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        return table

    def text(self, table: Mapping[str, Any], where: str, key: str, default: str | None = None,
             *, required: bool = False) -> str | None:
        value = table.get(key, default)
        if value is None:
            if required:
                raise self.error(where, f"field {key!r} is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"field {key!r} must be a non-empty string, got {value!r}")
        return value

    def number(self, table: Mapping[str, Any], where: str, key: str, default: float,
               *, minimum: float = 0.0) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(where, f"field {key!r} must be a number >= {minimum}, got {value!r}")
        return float(value)

    def file(self, table: Mapping[str, Any], where: str, key: str = "path") -> Path:
        rel = self.text(table, where, key, required=True)
        found = (self.folder / str(rel)).resolve()
        if not found.is_file():
            raise self.error(where, f"{key} = {rel!r}: file not found (looked for {found})")
        return found

    def crs(self, table: Mapping[str, Any], where: str, key: str = "crs") -> CRS | None:
        value = table.get(key)
        if value is None:
            return None
        try:
            return CRS.from_user_input(value)
        except CRSError as exc:
            raise self.error(where, f"{key} = {value!r} is not a CRS pyproj knows: {exc}") from exc


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
    m = _Manifest(path, doc)
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
        groups=_load_groups(m, default_crs, population.grid, zones, zone_table),
        facilities=_load_facilities(m, default_crs, population.grid),
        friction=_load_friction(m, default_crs),
        min_public_count=int(min_count),
        access_threshold_min=m.number(region, "region", "access_threshold_min", 60.0),
        source=str(path),
    )


def _read_raster(m: _Manifest, table: Mapping[str, Any], where: str,
                 default_crs: CRS | None) -> Raster:
    """Read one band (masked where no-data or NaN) with its grid; the CRS is checked."""
    path = m.file(table, where)
    band = table.get("band", 1)
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise m.error(where, f"band must be a whole number from 1, got {band!r}")
    declared = m.crs(table, where)
    try:
        with rasterio.Env(), rasterio.open(path) as src_dst:
            if band > src_dst.count:
                raise m.error(where, f"band = {band}, but {path.name} has {src_dst.count} band(s)")
            data = src_dst.read(band, masked=True)
            file_crs, transform = src_dst.crs, src_dst.transform
    except rasterio.errors.RasterioIOError as exc:
        raise FeedFormatError(path, f"cannot be read as a raster (named in [{where}] of "
                              f"{m.path}): {exc}") from exc
    crs = _pick_crs(m, where, path, CRS.from_user_input(file_crs) if file_crs else None,
                    declared, default_crs)
    data = np.ma.masked_invalid(data.astype("float64"))
    return Raster(data, Grid(data.shape, transform, crs), name=path.name)


def _pick_crs(m: _Manifest, where: str, path: Path, file_crs: CRS | None,
              declared: CRS | None, default_crs: CRS | None) -> CRS:
    """The file's CRS; else the section's; else [region] crs; else MissingCRSError."""
    if file_crs is not None:
        if declared is not None and declared != file_crs:
            raise m.error(where, f"crs = {declared.to_string()!r}, but {path.name} declares "
                          f"{file_crs.to_string()}; remove crs from the manifest (it is only "
                          "for files without one) or fix the file")
        return file_crs
    if declared is not None:
        return declared
    if default_crs is not None:
        return default_crs
    raise MissingCRSError(path, f"has no CRS; set crs in [{where}] (or in [region]) of {m.path}")


def _load_population(m: _Manifest, default_crs: CRS | None) -> Raster:
    """Population as people per cell; densities are converted with the true cell areas."""
    table = m.section("population", required=True) or {}
    kind = m.text(table, "population", "kind", "counts")
    if kind not in ("counts", "density"):
        raise m.error("population", f"kind must be 'counts' or 'density', got {kind!r}")
    limit = m.number(table, "population", "max_density_km2", MAX_PLAUSIBLE_DENSITY_KM2,
                     minimum=1.0)
    raster = _read_raster(m, table, "population", default_crs)
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


def _check_kind(m: _Manifest, name: str, kind: str, counts: np.ma.MaskedArray,
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


def _read_vector(m: _Manifest, table: Mapping[str, Any], where: str,
                 default_crs: CRS | None) -> gpd.GeoDataFrame:
    """Read a vector layer with pyogrio; the CRS is checked, no geometry may be missing."""
    path = m.file(table, where)
    layer = m.text(table, where, "layer")
    try:
        if layer is not None:
            names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
            if layer not in names:
                raise m.error(where, f"layer = {layer!r} is not in {path.name}; it has {names}")
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except pyogrio.errors.DataSourceError as exc:
        raise FeedFormatError(path, f"cannot be read as vector data (named in [{where}] of "
                              f"{m.path}): {exc}") from exc
    file_crs = CRS.from_user_input(frame.crs) if frame.crs is not None else None
    crs = _pick_crs(m, where, path, file_crs, m.crs(table, where), default_crs)
    frame = frame.set_crs(crs, allow_override=True)
    missing = frame.geometry.isna() | frame.geometry.is_empty
    if missing.any():
        raise m.error(where, f"{path.name} has {int(missing.sum())} feature(s) without a "
                      f"geometry (rows {list(np.flatnonzero(missing.to_numpy())[:10])})")
    return frame


def _column(m: _Manifest, frame: pd.DataFrame, where: str, key: str, column: str) -> pd.Series:
    """One column, or a ManifestError listing the columns that exist."""
    if column not in frame.columns:
        existing = [c for c in frame.columns if c != frame.geometry.name]
        raise m.error(where, f"{key} = {column!r}: no such column; the columns are {existing}")
    return frame[column]


def _load_zones(m: _Manifest, default_crs: CRS | None,
                grid: Grid) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Zones (zone_id, name, geometry) in the population CRS, plus the raw table for rates."""
    table = m.section("zones")
    if table is None:
        return None, None
    raw = _read_vector(m, table, "zones", default_crs)
    id_col = str(m.text(table, "zones", "id", required=True))
    ids = _column(m, raw, "zones", "id", id_col)
    if ids.isna().any():
        raise m.error("zones", f"id column {id_col!r} is empty in {int(ids.isna().sum())} row(s)")
    ids = ids.map(_id_text)
    dupes = sorted(set(ids[ids.duplicated()]))
    if dupes:
        raise m.error("zones", f"zone ids must be unique; {id_col!r} repeats {dupes[:20]}")
    name_col = m.text(table, "zones", "name")
    names = ids if name_col is None else _column(m, raw, "zones", "name", name_col).astype(str)
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


def _repaired_polygons(m: _Manifest, geoms: np.ndarray, ids: np.ndarray) -> np.ndarray:
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


def _load_groups(m: _Manifest, default_crs: CRS | None, grid: Grid,
                 zones: gpd.GeoDataFrame | None,
                 zone_table: gpd.GeoDataFrame | None) -> dict[Group, GroupLayer]:
    """One GroupLayer per ``[groups.<name>]`` section."""
    groups = m.doc.get("groups", {})
    if not isinstance(groups, dict):
        raise m.error("groups", "must be a table of [groups.<name>] sections")
    out: dict[Group, GroupLayer] = {}
    for key in groups:
        where = f"groups.{key}"
        if key not in {g.value for g in Group}:
            raise m.error(where, f"unknown group {key!r}; allowed: {[g.value for g in Group]}")
        table = m.checked(groups[key], where, _SECTION_KEYS["group"])
        out[Group(key)] = _load_group(m, where, Group(key), table, default_crs, grid, zones,
                                      zone_table)
    return out


def _load_group(m: _Manifest, where: str, group: Group, table: Mapping[str, Any],
                default_crs: CRS | None, grid: Grid, zones: gpd.GeoDataFrame | None,
                zone_table: gpd.GeoDataFrame | None) -> GroupLayer:
    """Rates (column, table or raster) and/or a registry for one group."""
    sources = [k for k in ("rate_column", "rate_table", "rate_raster") if k in table]
    if len(sources) > 1:
        raise m.error(where, f"give at most one of rate_column, rate_table, rate_raster; "
                      f"got {sources}")
    if not sources and "registry" not in table:
        raise m.error(where, "needs rate_column, rate_table, rate_raster or registry")
    unit = m.text(table, where, "rate_unit", "share")
    if unit not in _RATE_SCALE:
        raise m.error(where, f"rate_unit must be 'share' (0..1) or 'percent' (0..100), "
                      f"got {unit!r}")
    rate_by_zone = rate_raster = registry = None
    described = []
    if sources and sources[0] != "rate_raster":
        if zones is None or zone_table is None:
            raise m.error(where, f"{sources[0]} gives rates per zone, but there is no [zones]")
        rate_by_zone = _zone_rates(m, where, table, sources[0], str(unit), zone_table)
        described.append(f"{sources[0]} {table[sources[0]]!r} ({unit})")
    elif sources:
        raster = _read_raster(m, {"path": table["rate_raster"], "band": table.get("band", 1)},
                              where, default_crs)
        grid.require_same(raster.grid, f"[{where}] rate_raster {raster.name}")
        _check_rates(m, where, "rate_raster", raster.data.compressed(), str(unit), None)
        rate_raster = Raster(raster.data / _RATE_SCALE[str(unit)], grid, "share", raster.name)
        described.append(f"rate_raster {raster.name!r} ({unit})")
    if "registry" in table:
        path = m.file(table, where, "registry")
        try:
            registry = load_registry_counts(path, grid,
                                            crs=m.crs(table, where, "registry_crs")).counts
        except FeedError as exc:
            raise ManifestError(m.path, f"[{where}] registry: {exc}") from exc
        described.append(f"registry {path.name!r}")
    return GroupLayer(group, rate_by_zone, rate_raster, registry, source="; ".join(described))


def _zone_rates(m: _Manifest, where: str, table: Mapping[str, Any], source: str, unit: str,
                zone_table: gpd.GeoDataFrame) -> pd.Series:
    """Per-zone shares (0..1) from a zones column or a zone_id,rate CSV."""
    if source == "rate_column":
        column = str(m.text(table, where, "rate_column", required=True))
        values = _numbers(m, where, _column(m, zone_table, where, "rate_column", column),
                          zone_table["zone_id"])
        rates = pd.Series(values, index=zone_table["zone_id"])
    else:
        path = m.file(table, where, "rate_table")
        try:
            csv = pd.read_csv(path, dtype={"zone_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise m.error(where, f"rate_table {path.name} cannot be read as CSV: {exc}") from exc
        if not {"zone_id", "rate"} <= set(csv.columns):
            raise m.error(where, f"rate_table {path.name} needs columns zone_id,rate; it has "
                          f"{list(csv.columns)}")
        rates = pd.Series(_numbers(m, where, csv["rate"], csv["zone_id"].astype(str)),
                          index=csv["zone_id"].astype(str))
        extra = sorted(set(rates.index) - set(zone_table["zone_id"]))
        missing = sorted(set(zone_table["zone_id"]) - set(rates.index))
        if extra or missing or rates.index.duplicated().any():
            raise m.error(where, f"rate_table {path.name} must give one rate per zone: unknown "
                          f"zone ids {extra[:10]}, zones without a rate {missing[:10]}, repeated "
                          f"{sorted(set(rates.index[rates.index.duplicated()]))[:10]}")
        rates = rates.reindex(zone_table["zone_id"])
    _check_rates(m, where, source, rates.to_numpy(), unit, rates.index.to_numpy())
    out = rates / _RATE_SCALE[unit]
    out.index.name = "zone_id"
    out.name = "rate"
    return out


def _numbers(m: _Manifest, where: str, raw: pd.Series, ids: pd.Series) -> np.ndarray:
    """Rates as floats: empty cells become NaN (a gap the overlay reports), text is refused."""
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.notna().to_numpy() & values.isna().to_numpy()
    if text.any():
        raise m.error(where, f"rates must be numbers; got {raw[text].tolist()[:10]} for zones "
                      f"{ids[text].astype(str).tolist()[:10]}")
    return values.to_numpy(dtype="float64")


def _check_rates(m: _Manifest, where: str, field: str, values: np.ndarray, unit: str,
                 ids: np.ndarray | None) -> None:
    """Rates must lie within 0..1 (share) or 0..100 (percent); NaN (no rate) may pass."""
    top = _RATE_SCALE[unit]
    bad = ~np.isnan(values) & ((values < 0) | (values > top))
    if bad.any():
        at = f" for zones {[str(i) for i in ids[bad][:10]]}" if ids is not None else ""
        shown = [float(v) for v in values[bad][:10]]
        hint = ""
        if unit == "share" and np.nanmax(values) <= 100 and np.nanmedian(values) > 1:
            hint = "; they look like percentages: set rate_unit = \"percent\""
        raise m.error(where, f"{field}: rates must be numbers within 0..{top:g} ({unit}); "
                      f"got {shown}{at}{hint}")


def _load_facilities(m: _Manifest, default_crs: CRS | None,
                     grid: Grid) -> gpd.GeoDataFrame | None:
    """Facilities (facility_id, name, type, geometry) as points in the population CRS."""
    table = m.section("facilities")
    if table is None:
        return None
    raw = _read_vector(m, table, "facilities", default_crs)
    type_col = str(m.text(table, "facilities", "type", "type"))
    type_map = table.get("type_map", {})
    if not isinstance(type_map, dict):
        raise m.error("facilities", "type_map must be a table of 'file value' = 'type'")
    allowed = [t.value for t in FacilityType]
    words = _column(m, raw, "facilities", "type", type_col).astype(str).str.strip()
    mapped = words.map(lambda w: type_map.get(w, w).strip().lower().replace(" ", "_")
                       .replace("-", "_"))
    unknown = sorted(set(words[~mapped.isin(allowed)]))
    if unknown:
        raise m.error("facilities", f"type column {type_col!r} has unknown value(s) "
                      f"{unknown[:20]}; allowed: {allowed} (map others with [facilities."
                      "type_map])")
    id_col = str(m.text(table, "facilities", "id", "facility_id"))
    if id_col in raw.columns or "id" in table:
        ids = _column(m, raw, "facilities", "id", id_col).map(_id_text)
    else:
        ids = pd.Series([f"F{i + 1:04d}" for i in range(len(raw))])
    name_col = str(m.text(table, "facilities", "name", "name"))
    if name_col in raw.columns or "name" in table:
        names = _column(m, raw, "facilities", "name", name_col).astype(str)
    else:
        names = ids
    # Buildings drawn as polygons count at a point inside them.
    points = [g if g.geom_type == "Point" else g.representative_point()
              for g in raw.geometry]
    return gpd.GeoDataFrame(
        {"facility_id": ids.to_numpy(), "name": names.to_numpy(), "type": mapped.to_numpy()},
        geometry=points, crs=raw.crs,
    ).to_crs(grid.crs)


def _load_friction(m: _Manifest, default_crs: CRS | None) -> Raster | None:
    """Friction in minutes per metre, on its own grid; values must be positive."""
    table = m.section("friction")
    if table is None:
        return None
    units = m.text(table, "friction", "units", "min/m")
    if units not in _FRICTION_TO_MIN_PER_M:
        raise m.error("friction", f"units must be one of {sorted(_FRICTION_TO_MIN_PER_M)}, "
                      f"got {units!r}")
    raster = _read_raster(m, table, "friction", default_crs)
    if raster.data.count() and float(raster.data.min()) <= 0:
        raise m.error("friction", f"{raster.name}: friction must be positive (time to cross a "
                      f"metre), lowest value {float(raster.data.min())}")
    data = raster.data * _FRICTION_TO_MIN_PER_M[str(units)]
    return Raster(data, raster.grid, units="min/m", name=raster.name)
