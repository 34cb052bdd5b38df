"""Vulnerable-group layers of a region pack: rates per zone or per cell, and registries.

Reads the ``[groups.<name>]`` sections of a region-pack manifest (see :mod:`feeds.region`
for the format) into :class:`geo.region.GroupLayer` objects: shares from a zones column, a
``zone_id,rate`` CSV or a raster on the population grid (``share`` 0..1 or ``percent``
0..100, range-checked), and individual registry records counted per population cell. Split
out of :mod:`feeds.region` to keep that module small; the manifest checks and readers come
from :mod:`feeds.region_layers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS

from feeds.errors import FeedError, ManifestError
from feeds.region_layers import SECTION_KEYS, Manifest, read_raster, require_column
from feeds.registry import load_registry_counts
from geo.grid import Grid
from geo.raster import Raster
from geo.region import GroupLayer
from geo.types import Group

_RATE_SCALE = {"share": 1.0, "percent": 100.0}


def load_groups(m: Manifest, default_crs: CRS | None, grid: Grid,
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
        table = m.checked(groups[key], where, SECTION_KEYS["group"])
        out[Group(key)] = _load_group(m, where, Group(key), table, default_crs, grid, zones,
                                      zone_table)
    return out


def _load_group(m: Manifest, where: str, group: Group, table: Mapping[str, Any],
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
        raster = read_raster(m, {"path": table["rate_raster"], "band": table.get("band", 1)},
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


def _zone_rates(m: Manifest, where: str, table: Mapping[str, Any], source: str, unit: str,
                zone_table: gpd.GeoDataFrame) -> pd.Series:
    """Per-zone shares (0..1) from a zones column or a zone_id,rate CSV."""
    if source == "rate_column":
        column = str(m.text(table, where, "rate_column", required=True))
        values = _numbers(m, where, require_column(m, zone_table, where, "rate_column", column),
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


def _numbers(m: Manifest, where: str, raw: pd.Series, ids: pd.Series) -> np.ndarray:
    """Rates as floats: empty cells become NaN (a gap the overlay reports), text is refused."""
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.notna().to_numpy() & values.isna().to_numpy()
    if text.any():
        raise m.error(where, f"rates must be numbers; got {raw[text].tolist()[:10]} for zones "
                      f"{ids[text].astype(str).tolist()[:10]}")
    return values.to_numpy(dtype="float64")


def _check_rates(m: Manifest, where: str, field: str, values: np.ndarray, unit: str,
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
