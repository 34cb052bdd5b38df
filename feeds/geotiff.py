"""Read a GeoTIFF, COG or any other single-file raster GDAL understands into a HazardGrid.

Golden Software grids (``.grd``), ASCII grids, ERDAS Imagine and the like all come through
here; names ending in ``.gz`` are opened through ``/vsigzip/`` so gzipped grids need no
unpacking. Only the full-resolution band is read (overviews are never used, so a COG gives
its true values), optionally through a window around ``options.bbox``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import xarray as xr
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window, from_bounds

from feeds.base import (
    ReadOptions,
    apply_nodata,
    file_checksum,
    reader_kind,
    require_file,
    to_utc,
)
from feeds.errors import (
    FeedCorruptError,
    FeedFormatError,
    MissingCRSError,
    SelectionError,
    UnknownVariableError,
)
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.types import Nature

# Golden Software binary grids (GSBG) declare 1.70141e38 as "blank"; some producers (GAR2015
# flood maps) instead fill empty cells with -9999 and keep the header value. A GSBG grid whose
# declared no-data is that huge blank value and whose minimum is exactly this sentinel gets the
# sentinel treated as no-data automatically (recorded in attrs["nodata_sentinel"]).
GSBG_BLANK_MIN = 1.0e38
GSBG_AUTO_SENTINEL = -9999.0

_TIME_TAGS = (
    "TIFFTAG_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITION_DATE",
    "ACQUISITION_START_TIME", "DATETIME", "datetime",
)
# Producers that say when a run was issued (not only when it is valid) use one of these.
_ISSUED_TAGS = ("TOCSIN_ISSUED_AT", "ISSUED_AT", "ISSUE_TIME", "FORECAST_REFERENCE_TIME",
                "PRODUCTION_TIME")
_NATURE_TAG = "TOCSIN_NATURE"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GZIP_MAGIC = b"\x1f\x8b"
_RASTERIO_ERRORS = (rasterio.errors.RasterioError, CPLE_BaseError, OSError)


def gdal_path(path: Path) -> str:
    """The path GDAL should open: ``/vsigzip/`` in front of gzipped files."""
    text = str(path.resolve())
    if path.name.lower().endswith(".gz"):
        return "/vsigzip/" + text
    return text


def read_geotiff(path: str | Path, options: ReadOptions | None = None) -> HazardGrid:
    """Read one band of a GDAL-readable raster as a :class:`HazardGrid`.

    Args:
        path: a GeoTIFF/COG or any other raster GDAL reads (``.grd``, ``.asc``, ``.gz``...).
        options: ``variable`` picks the band (``"band=N"`` or the band description; band 1 by
            default); ``bbox`` reads a window (in the file's CRS, rounded outward to whole
            cells, clipped to the raster); ``crs`` supplies a missing CRS; ``nodata`` adds a
            no-data sentinel; ``kind``, ``units`` and ``nature`` override the guesses.

    Returns:
        The band as float64 with ``NaN`` for no-data, on the read window's grid.

    Raises:
        FeedNotFoundError: the file does not exist.
        FeedFormatError: GDAL cannot read it, or it has no georeferencing.
        FeedCorruptError: it looks like a raster but is truncated or damaged.
        UnknownVariableError: the band does not exist (the message lists the bands).
        MissingCRSError: the file has no CRS and ``options.crs`` was not given.
        SelectionError: ``bbox`` does not overlap the raster.
    """
    options = options or ReadOptions()
    src_path = require_file(path)
    checksum = file_checksum(src_path)
    with rasterio.Env():
        src_dst = _open(src_path)
        with src_dst:
            return _read_open(src_dst, src_path, options, checksum)


def _open(path: Path) -> rasterio.io.DatasetReader:
    """Open with rasterio, telling a damaged raster from something that is no raster."""
    try:
        with warnings.catch_warnings():
            # An un-georeferenced raster is reported below as a FeedFormatError instead.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(gdal_path(path))
    except _RASTERIO_ERRORS as exc:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head.startswith(_TIFF_MAGIC) or head.startswith(_GZIP_MAGIC):
            raise FeedCorruptError(path, f"raster is damaged or truncated: {exc}") from exc
        raise FeedFormatError(path, f"not a raster format GDAL can read: {exc}") from exc


def _read_open(
    src_dst: rasterio.io.DatasetReader, path: Path, options: ReadOptions, checksum: str
) -> HazardGrid:
    """Read the chosen band of an open dataset (the caller owns the handle)."""
    band, band_name = _choose_band(src_dst, path, options.variable)
    crs = src_dst.crs if src_dst.crs else None
    if crs is None:
        if options.crs is None:
            raise MissingCRSError(
                path, f"{src_dst.driver} raster has no CRS; pass crs (e.g. 'EPSG:4326')"
            )
        crs = options.crs
    if src_dst.transform.is_identity and not src_dst.gcps[0]:
        raise FeedFormatError(path, "raster has no georeferencing (identity transform, no GCPs)")
    window = _window(src_dst, path, options)
    try:
        raw = src_dst.read(band, window=window, masked=True)
    except _RASTERIO_ERRORS as exc:
        raise FeedCorruptError(path, f"cannot read band {band}: {exc}") from exc
    declared = src_dst.nodatavals[band - 1]
    sentinel = options.nodata
    attrs = {"driver": src_dst.driver, "band": str(band)}
    if sentinel is None and _looks_like_gsbg_sentinel(src_dst.driver, declared, raw):
        sentinel = GSBG_AUTO_SENTINEL
        attrs["nodata_sentinel"] = f"{GSBG_AUTO_SENTINEL:g} (auto-detected, GSBG)"
    elif sentinel is not None:
        attrs["nodata_sentinel"] = f"{sentinel:g}"
    values = apply_nodata(raw, declared, sentinel)
    transform = src_dst.transform
    if window is not None:  # not window_transform(): it uses affine's deprecated '*' product
        transform = transform @ Affine.translation(window.col_off, window.row_off)
    grid = Grid(values.shape, transform, crs)
    units = options.units or src_dst.units[band - 1] or src_dst.tags(band).get("units") or ""
    kind = reader_kind(options, band_name or path.stem, units)
    tags = {**src_dst.tags(), **src_dst.tags(band)}
    valid_at = next((to_utc(tags[k]) for k in _TIME_TAGS if k in tags and to_utc(tags[k])), None)
    issued_at = next((to_utc(tags[k]) for k in _ISSUED_TAGS if k in tags and to_utc(tags[k])),
                     None)
    nature = options.nature or (Nature(tags[_NATURE_TAG]) if tags.get(_NATURE_TAG) in
                                {n.value for n in Nature} else Nature.OBSERVED)
    return HazardGrid(
        data=_data_array(values, grid),
        grid=grid,
        kind=kind,
        units=units or "unknown",
        nature=nature,
        source=str(path),
        checksum=checksum,
        variable=band_name or f"band={band}",
        issued_at=issued_at,
        valid_at=valid_at,
        attrs=attrs,
    )


def _choose_band(
    src_dst: rasterio.io.DatasetReader, path: Path, variable: str | None
) -> tuple[int, str | None]:
    """Band index (1-based) and name from ``"band=N"``, a description, or band 1."""
    descriptions = list(src_dst.descriptions)
    if variable is None:
        return 1, descriptions[0]
    text = variable.strip()
    if text.lower().startswith("band="):
        try:
            band = int(text.split("=", 1)[1])
        except ValueError:
            band = 0
        if 1 <= band <= src_dst.count:
            return band, descriptions[band - 1]
    elif text in descriptions:
        return descriptions.index(text) + 1, text
    else:
        lowered = [(d or "").lower() for d in descriptions]
        if text.lower() in lowered:
            idx = lowered.index(text.lower())
            return idx + 1, descriptions[idx]
    named = [d for d in descriptions if d]
    raise UnknownVariableError(
        path,
        f"band {variable!r} not found; the file has {src_dst.count} band(s): "
        f"band=1..band={src_dst.count}" + (f", descriptions {named}" if named else ""),
    )


def _window(src_dst: rasterio.io.DatasetReader, path: Path, options: ReadOptions) -> Window | None:
    """The window covering ``options.bbox``, rounded outward and clipped; None for all."""
    if options.bbox is None:
        return None
    raw = from_bounds(*options.bbox, transform=src_dst.transform)
    col0 = max(0, math.floor(raw.col_off + 1e-9))
    row0 = max(0, math.floor(raw.row_off + 1e-9))
    col1 = min(src_dst.width, math.ceil(raw.col_off + raw.width - 1e-9))
    row1 = min(src_dst.height, math.ceil(raw.row_off + raw.height - 1e-9))
    if col1 <= col0 or row1 <= row0:
        raise SelectionError(
            path, f"bbox {options.bbox} does not overlap the raster bounds {tuple(src_dst.bounds)}"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def _looks_like_gsbg_sentinel(driver: str, declared: float | None, raw: np.ma.MaskedArray) -> bool:
    """True for a GSBG grid declaring the 1.7e38 blank but holding -9999 as its minimum."""
    if driver != "GSBG" or declared is None or not declared > GSBG_BLANK_MIN:
        return False
    valid = raw.compressed()
    return valid.size > 0 and float(valid.min()) == GSBG_AUTO_SENTINEL


def _data_array(values: np.ndarray, grid: Grid) -> xr.DataArray:
    """Wrap 2-D values with ``y``/``x`` cell-centre coordinates where the grid allows."""
    if grid.is_rectilinear:
        xs, ys = grid.xy_centres()
        return xr.DataArray(values, dims=("y", "x"), coords={"y": ys, "x": xs})
    return xr.DataArray(values, dims=("y", "x"))
