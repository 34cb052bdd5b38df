"""Uploaded hazard rasters: streamed to disk under a name of ours, their type checked by content.

The client's file name never becomes a path. What a file is, is decided by its first bytes
(GeoTIFF and BigTIFF byte orders, NetCDF classic and HDF5, GRIB) or, for a ShakeMap
``grid.xml`` (plain or gzipped), by its root element, parsed with :mod:`defusedxml` so a DTD
or an entity is refused before it can expand. Anything else is answered 415.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import BinaryIO
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

from api.errors import ApiError, FieldProblem

CHUNK_BYTES = 1 << 20
_HEAD_BYTES = 4096
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF, then BigTIFF
_NETCDF = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_HDF5 = b"\x89HDF\r\n\x1a\n"
_WMO_HEADER = re.compile(rb"^[\x01\r\n\x20-\x7e]*$")  # a bulletin heading before GRIB
ACCEPTED = "GeoTIFF/COG, BigTIFF, NetCDF (classic or NetCDF-4/HDF5), GRIB, ShakeMap grid.xml"


def refuse(status: int, field: str, message: str) -> ApiError:
    """An error answer naming the field (``field: message`` in ``detail`` and ``errors``)."""
    return ApiError(status, f"{field}: {message}",
                    errors=[FieldProblem(field=field, message=message)])


def save_upload(source: BinaryIO, folder: Path, *, max_bytes: int,
                field: str = "hazard") -> tuple[Path, int]:
    """Copy an upload into ``folder`` chunk by chunk, check its type; its path and size.

    Raises:
        ApiError: 413 over ``max_bytes``, 422 when empty, 415 when not a hazard raster; each
            naming ``field``. The partial file is removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / "upload.part"
    size = 0
    try:
        with part.open("wb") as out:
            while chunk := source.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise refuse(413, field, f"the file is over the limit of {max_bytes} bytes")
                out.write(chunk)
        if size == 0:
            raise refuse(422, field, "the file is empty")
        final = folder / hazard_file_name(part, field=field)
        part.replace(final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return final, size


def hazard_file_name(path: Path, *, field: str = "hazard") -> str:
    """The name (of ours) the file gets for its content: ``hazard.tif``, ``grid.xml``...

    Raises:
        ApiError: 415 naming ``field`` when the content is none of the accepted formats.
    """
    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    if head[:4] in _TIFF:
        return "hazard.tif"
    if head[:4] in _NETCDF or head[:8] == _HDF5:
        return "hazard.nc"
    grib_at = head.find(b"GRIB", 0, 256)
    if grib_at == 0 or (grib_at > 0 and _WMO_HEADER.match(head[:grib_at])):
        return "hazard.grib2"
    if head[:2] == b"\x1f\x8b":
        if _gzipped_shakemap(path):
            return "grid.xml.gz"
    elif _looks_like_xml(head) and _shakemap_root(path):
        return "grid.xml"
    raise refuse(415, field, f"not a hazard raster this API accepts (starts with "
                             f"{head[:8]!r}); send one of: {ACCEPTED}")


def _looks_like_xml(head: bytes) -> bool:
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")


def _root_is_shakemap(stream: BinaryIO) -> bool:
    """Whether the first element of the XML stream is ``shakemap_grid`` (DTDs refused)."""
    try:
        for _event, element in safe_xml.iterparse(stream, events=("start",), forbid_dtd=True):
            return str(element.tag).rsplit("}", 1)[-1] == "shakemap_grid"
    except (ParseError, DefusedXmlException, UnicodeError, ValueError):
        return False
    return False


def _shakemap_root(path: Path) -> bool:
    with path.open("rb") as fh:
        return _root_is_shakemap(fh)


def _gzipped_shakemap(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as fh:
            if not _looks_like_xml(fh.read(_HEAD_BYTES)):
                return False
            fh.seek(0)
            return _root_is_shakemap(fh)  # type: ignore[arg-type]
    except (OSError, EOFError, zlib.error):
        return False
