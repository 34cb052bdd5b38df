"""One entry point for every hazard file: sniff the format, call its reader.

The format is decided by content first (magic bytes), then by file name, because feeds are
often misnamed (``.bin``, ``.dat``, no extension). Whatever goes wrong surfaces as a
:class:`feeds.errors.FeedError` naming the file, never as a GDAL, eccodes or xarray
exception type, so workers can quarantine bad inputs by exception type.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from feeds.base import ReadOptions, require_file
from feeds.errors import FeedCorruptError, FeedError, FeedFormatError
from feeds.geotiff import read_geotiff
from feeds.grib import read_grib
from feeds.netcdf import read_netcdf
from feeds.shakemap import read_shakemap
from geo.hazard import HazardGrid

Reader = Callable[[Path, ReadOptions], HazardGrid]

FORMATS: Mapping[str, Reader] = MappingProxyType({
    "geotiff": read_geotiff,
    "netcdf": read_netcdf,
    "grib": read_grib,
    "shakemap": read_shakemap,
})
"""Format name -> reader; immutable (build a new mapping to add a format)."""

_SNIFF_BYTES = 4096
_EXTENSIONS: Mapping[str, str] = MappingProxyType({
    ".tif": "geotiff", ".tiff": "geotiff", ".cog": "geotiff", ".grd": "geotiff",
    ".asc": "geotiff", ".img": "geotiff", ".vrt": "geotiff",
    ".nc": "netcdf", ".nc4": "netcdf", ".cdf": "netcdf", ".netcdf": "netcdf", ".h5": "netcdf",
    ".grib": "grib", ".grib1": "grib", ".grib2": "grib", ".grb": "grib", ".grb2": "grib",
    ".xml": "shakemap",
})


def sniff_format(path: str | Path) -> str:
    """The name of the format of ``path`` (a key of :data:`FORMATS`).

    Content decides first: ``GRIB`` within the first 4 KiB (WMO bulletins put a header before
    it), NetCDF classic ``CDF`` or HDF5, TIFF byte orders, ShakeMap XML; gzip files are
    looked into (a gzipped grid.xml is a ShakeMap, anything else goes to GDAL's
    ``/vsigzip/``). The file name decides only when the content says nothing.

    Raises:
        FeedNotFoundError: no such file.
        FeedFormatError: neither content nor name is recognised.
        FeedCorruptError: a gzip file whose stream cannot be opened.
    """
    src_path = require_file(path)
    with open(src_path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(src_path, "rb") as gz:
                inner = gz.read(_SNIFF_BYTES)
        except (EOFError, OSError, zlib.error) as exc:
            raise FeedCorruptError(src_path, f"gzip stream cannot be read: {exc}") from exc
        return "shakemap" if b"<shakemap_grid" in inner else "geotiff"
    by_content = _by_content(head)
    if by_content:
        return by_content
    names = [s.lower() for s in src_path.suffixes]
    if names and names[-1] in _EXTENSIONS:
        return _EXTENSIONS[names[-1]]
    raise FeedFormatError(
        src_path, f"unrecognised hazard file (starts with {head[:8]!r}); expected GRIB, NetCDF, "
        "GeoTIFF or another GDAL raster, or a ShakeMap grid.xml"
    )


def _by_content(head: bytes) -> str | None:
    if head[:4] == b"GRIB":
        return "grib"
    if head[:3] == b"CDF" or head[:4] == b"\x89HDF":
        return "netcdf"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "geotiff"
    if b"<shakemap_grid" in head:
        return "shakemap"
    if head[:4] in (b"DSBB", b"DSRB", b"DSAA"):  # Golden Software grids
        return "geotiff"
    if b"GRIB" in head[:256]:
        return "grib"  # a WMO bulletin header in front of the GRIB message
    return None


def read_hazard(
    path: str | Path, options: ReadOptions | None = None, **overrides: object
) -> HazardGrid:
    """Read any supported hazard file into a :class:`HazardGrid`.

    Args:
        path: the file (GRIB1/2, NetCDF, GeoTIFF/COG or another GDAL raster, ShakeMap XML,
            each possibly gzipped where the reader supports it).
        options: what to read; defaults to :class:`ReadOptions()`.
        **overrides: fields of :class:`ReadOptions` to set on top of ``options``
            (``read_hazard(p, variable="gust")``).

    Returns:
        The hazard grid.

    Raises:
        FeedError: any problem, as its subclass (not found, format, corrupt, unknown
            variable, selection, missing CRS), naming the file.
    """
    opts = options or ReadOptions()
    if overrides:
        try:
            opts = replace(opts, **overrides)  # type: ignore[arg-type]
        except TypeError as exc:
            raise TypeError(f"read_hazard: unknown option in {sorted(overrides)}: {exc}") from exc
    fmt = sniff_format(path)
    reader = FORMATS[fmt]
    try:
        return reader(Path(path), opts)
    except FeedError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL, eccodes and xarray raise many types
        # An exception the reader did not anticipate: the file is unreadable as that format.
        raise FeedCorruptError(path, f"{fmt} reader failed: {type(exc).__name__}: {exc}") from exc
