"""The region-pack manifest and the layer readers shared by the region-pack loaders.

:func:`feeds.region.load_region_pack` reads population, zones, facilities and friction;
:mod:`feeds.region_groups` reads the vulnerable-group rates and registries. Both need the
same manifest checks (unknown fields, types, files, CRSs) and the same raster and vector
readers, so these live here, apart from either loader, to keep the modules small and free of
import cycles. Every error names the manifest, the section and the field (see
:mod:`feeds.region` for the manifest format).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.errors
from pyproj import CRS
from pyproj.exceptions import CRSError

from feeds.errors import FeedFormatError, ManifestError, MissingCRSError
from geo.grid import Grid
from geo.raster import Raster

SECTION_KEYS: dict[str, set[str]] = {
    "region": {"name", "crs", "min_public_count", "access_threshold_min"},
    "population": {"path", "kind", "band", "crs", "max_density_km2"},
    "zones": {"path", "layer", "id", "name", "crs"},
    "group": {"rate_column", "rate_table", "rate_raster", "rate_unit", "band", "registry",
              "registry_crs"},
    "facilities": {"path", "layer", "id", "type", "name", "crs", "type_map"},
    "friction": {"path", "band", "units", "crs"},
}


class Manifest:
    """The parsed manifest with helpers that name it in every error."""

    def __init__(self, path: Path, doc: Mapping[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self.folder = path.parent

    def error(self, where: str, reason: str) -> ManifestError:
        """A ManifestError naming the manifest and ``[where]``."""
        return ManifestError(self.path, f"[{where}] {reason}")

    def section(self, name: str, *, required: bool = False) -> dict[str, Any] | None:
        """A top-level section with its fields checked, or None if absent and optional."""
        table = self.doc.get(name)
        if table is None:
            if required:
                raise self.error(name, "section is missing; it is required")
            return None
        return self.checked(table, name, SECTION_KEYS[name])

    def checked(self, table: object, where: str, allowed: set[str]) -> dict[str, Any]:
        """A table whose fields are all among ``allowed``."""
        if not isinstance(table, dict):
            raise self.error(where, f"must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(where, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
        return table

    def text(self, table: Mapping[str, Any], where: str, key: str, default: str | None = None,
             *, required: bool = False) -> str | None:
        """A non-empty string field, the default, or None."""
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
        """A number field of at least ``minimum`` (booleans refused)."""
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(where, f"field {key!r} must be a number >= {minimum}, got {value!r}")
        return float(value)

    def file(self, table: Mapping[str, Any], where: str, key: str = "path") -> Path:
        """An existing file named by a field, relative to the manifest."""
        rel = self.text(table, where, key, required=True)
        found = (self.folder / str(rel)).resolve()
        if not found.is_file():
            raise self.error(where, f"{key} = {rel!r}: file not found (looked for {found})")
        return found

    def crs(self, table: Mapping[str, Any], where: str, key: str = "crs") -> CRS | None:
        """A CRS field, or None if absent."""
        value = table.get(key)
        if value is None:
            return None
        try:
            return CRS.from_user_input(value)
        except CRSError as exc:
            raise self.error(where, f"{key} = {value!r} is not a CRS pyproj knows: {exc}") from exc


def read_raster(m: Manifest, table: Mapping[str, Any], where: str,
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


def _pick_crs(m: Manifest, where: str, path: Path, file_crs: CRS | None,
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


def read_vector(m: Manifest, table: Mapping[str, Any], where: str,
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


def require_column(m: Manifest, frame: pd.DataFrame, where: str, key: str,
                   column: str) -> pd.Series:
    """One column, or a ManifestError listing the columns that exist."""
    if column not in frame.columns:
        existing = [c for c in frame.columns if c != frame.geometry.name]
        raise m.error(where, f"{key} = {column!r}: no such column; the columns are {existing}")
    return frame[column]
