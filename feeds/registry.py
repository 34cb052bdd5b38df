"""Registries of people who need help to evacuate: read, then aggregate to population cells.

Agencies keep individual records (people on home oxygen, dialysis, ventilators...). The
overlay only ever needs how many such people live in each population cell, so the records
are aggregated as soon as they are read and their locations are dropped: nothing downstream
holds a point. Counts stay sensitive; public outputs suppress small ones with
:func:`geo.privacy.suppress_small_counts`.

A registry CSV has one row per person and either ``lon,lat`` columns (WGS84 degrees, unless
a CRS is given) or ``x,y`` columns with a CRS (given by the caller, or a ``crs`` column that
holds one value for every row). Other columns are ignored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from feeds.errors import FeedFormatError, FeedNotFoundError, MissingCRSError
from geo.grid import Grid, require_same_crs
from geo.raster import Raster


class RecordsOutsideGridWarning(UserWarning):
    """Some registry records fall outside the population grid and are not in any cell."""


@dataclass(frozen=True, slots=True)
class RegistryCounts:
    """Registry records counted per population cell.

    Attributes:
        counts: people per cell (whole numbers, float64), on the population grid.
        total: records given.
        outside: records outside the grid (not in ``counts``); ``total - outside`` are in it.
    """

    counts: Raster
    total: int
    outside: int


def read_registry_csv(path: Path, *, crs: CRS | str | None = None) -> tuple[np.ndarray, CRS]:
    """Read the record locations of a registry CSV.

    Args:
        path: the CSV file.
        crs: CRS of the coordinates; default WGS84 for ``lon,lat``, required for ``x,y``
            unless the file has a ``crs`` column.

    Returns:
        ``(points_xy, crs)``: an ``(n, 2)`` float array and the CRS it is in.

    Raises:
        FeedNotFoundError: the file is missing.
        FeedFormatError: no coordinate columns, or a coordinate is missing or out of range.
        MissingCRSError: ``x,y`` columns and no CRS.
    """
    path = Path(path)
    if not path.is_file():
        raise FeedNotFoundError(path, "registry file not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise FeedFormatError(path, f"cannot be read as CSV: {exc}") from exc
    columns = {c.strip().lower(): c for c in table.columns}
    if "lon" in columns and "lat" in columns:
        xcol, ycol = columns["lon"], columns["lat"]
        found_crs = CRS.from_user_input(crs) if crs is not None else CRS.from_epsg(4326)
    elif "x" in columns and "y" in columns:
        xcol, ycol = columns["x"], columns["y"]
        found_crs = _crs_of_xy(path, table, columns.get("crs"), crs)
    else:
        raise FeedFormatError(
            path, f"needs columns lon,lat or x,y (with a CRS); it has {list(table.columns)}"
        )
    xy = np.column_stack([pd.to_numeric(table[xcol], errors="coerce"),
                          pd.to_numeric(table[ycol], errors="coerce")]).astype("float64")
    bad = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if bad.size:
        rows = ", ".join(str(i + 2) for i in bad[:10])  # +2: header line, 1-based lines
        raise FeedFormatError(
            path, f"{bad.size} record(s) have a missing or non-numeric {xcol}/{ycol} "
            f"(lines {rows}{'...' if bad.size > 10 else ''})"
        )
    if found_crs.is_geographic and (np.abs(xy[:, 0]).max(initial=0) > 180
                                    or np.abs(xy[:, 1]).max(initial=0) > 90):
        raise FeedFormatError(
            path, f"{xcol}/{ycol} must be degrees (lon within +-180, lat within +-90) in "
            f"{found_crs.to_string()}; got lon {xy[:, 0].min()}..{xy[:, 0].max()}, "
            f"lat {xy[:, 1].min()}..{xy[:, 1].max()}"
        )
    return xy, found_crs


def _crs_of_xy(path: Path, table: pd.DataFrame, crs_col: str | None, crs: object) -> CRS:
    """The CRS of x,y records: the caller's, else the file's single ``crs`` value."""
    if crs is not None:
        return CRS.from_user_input(crs)
    if crs_col is None:
        raise MissingCRSError(path, "x,y records need a CRS: add a crs column or give one")
    values = table[crs_col].dropna().astype(str).unique()
    if len(values) != 1:
        raise FeedFormatError(
            path, f"column {crs_col!r} must hold one CRS for every record, found {list(values)}"
        )
    return CRS.from_user_input(values[0])


def aggregate_registry(points_xy: np.ndarray | gpd.GeoDataFrame, grid: Grid) -> RegistryCounts:
    """Count registry records per cell of ``grid``; the locations are not kept.

    A cell holds the points with ``left <= x < right`` and ``bottom < y <= top`` (a
    half-open cell, so a point on a shared edge is counted once). Points outside the grid
    are counted in ``outside`` and reported with a :class:`RecordsOutsideGridWarning`, not
    silently dropped.

    Args:
        points_xy: an ``(n, 2)`` array of ``x, y`` in the grid's CRS, or a GeoDataFrame of
            points whose CRS must equal the grid's.
        grid: the population grid.

    Returns:
        The counts raster (units ``people``), the number of records and how many fell outside.

    Raises:
        geo.errors.CRSMismatchError: a GeoDataFrame in another CRS than the grid.
        FeedFormatError: not an ``(n, 2)`` array, a non-point geometry or a non-finite
            coordinate.
    """
    xy = _as_xy(points_xy, grid)
    height, width = grid.shape
    cols, rows = ~grid.transform @ (xy[:, 0], xy[:, 1])
    cols, rows = np.floor(np.asarray(cols)), np.floor(np.asarray(rows))
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    flat = rows[inside].astype(np.int64) * width + cols[inside].astype(np.int64)
    counts = np.bincount(flat, minlength=height * width).astype("float64").reshape(grid.shape)
    outside = int(xy.shape[0] - inside.sum())
    if outside:
        warnings.warn(
            f"{outside} of {xy.shape[0]} registry record(s) lie outside the population grid "
            f"(bounds {grid.bounds}) and are not counted in any cell",
            RecordsOutsideGridWarning,
            stacklevel=2,
        )
    raster = Raster(np.ma.MaskedArray(counts), grid, units="people", name="registry counts")
    return RegistryCounts(raster, int(xy.shape[0]), outside)


def load_registry_counts(path: Path, grid: Grid, *, crs: CRS | str | None = None
                         ) -> RegistryCounts:
    """Read a registry CSV and count its records per cell of ``grid`` (any CRS is reprojected).

    The record locations live only inside this call; what comes back are counts.

    Args:
        path: the registry CSV (see the module docstring).
        grid: the population grid.
        crs: CRS of the coordinates, when the file does not imply it.

    Returns:
        Counts per cell, with how many records fell outside the grid.
    """
    xy, src_crs = read_registry_csv(path, crs=crs)
    if src_crs != grid.crs:
        x, y = Transformer.from_crs(src_crs, grid.crs, always_xy=True).transform(xy[:, 0],
                                                                                 xy[:, 1])
        xy = np.column_stack([x, y])
    return aggregate_registry(xy, grid)


def _as_xy(points_xy: np.ndarray | gpd.GeoDataFrame, grid: Grid) -> np.ndarray:
    """Coordinates as an ``(n, 2)`` float array in the grid's CRS, checked."""
    if isinstance(points_xy, gpd.GeoDataFrame | gpd.GeoSeries):
        require_same_crs(points_xy.crs, grid.crs, "registry points", "population grid")
        geoms = np.asarray(points_xy.geometry.values)
        not_points = shapely.get_type_id(geoms) != shapely.GeometryType.POINT
        if not_points.any():
            raise FeedFormatError("registry points", f"{int(not_points.sum())} record(s) are "
                                  "not points; a registry holds one point per person")
        xy = shapely.get_coordinates(geoms)
        if xy.shape[0] != len(geoms):
            raise FeedFormatError("registry points", "some records have an empty geometry")
    else:
        xy = np.asarray(points_xy, dtype="float64")
        if xy.ndim != 2 or xy.shape[1] != 2:
            xy = xy.reshape(0, 2) if xy.size == 0 else xy
            if xy.ndim != 2 or xy.shape[1] != 2:
                raise FeedFormatError("registry points",
                                      f"expected an (n, 2) array of x, y, got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise FeedFormatError("registry points",
                              f"{int((~np.isfinite(xy)).any(axis=1).sum())} record(s) have a "
                              "non-finite coordinate")
    return xy
