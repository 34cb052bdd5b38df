"""Read a USGS ShakeMap ``grid.xml`` (or ``grid.xml.gz``) field into a HazardGrid.

The XML header (event, grid specification, field list) is parsed with a hardened lxml
parser: no entity expansion, no network, no DTD, no huge trees; a document type declaration
is refused outright. The whitespace table in ``<grid_data>`` is cut out of the bytes and
parsed with numpy, so a large grid never becomes one huge XML text node. Points are cell
centres listed row by row from the north-west corner.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from lxml import etree
from pyproj import CRS

from feeds.base import ReadOptions, apply_nodata, file_checksum, require_file, to_utc
from feeds.errors import FeedCorruptError, FeedFormatError, UnknownVariableError
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.types import HazardKind, Nature

_FIELD_KINDS = {"MMI": HazardKind.SHAKING_MMI, "PGA": HazardKind.SHAKING_PGA,
                "PGV": HazardKind.SHAKING_PGV}
_UNITS = {"pctg": "%g", "cms": "cm/s", "intensity": "MMI", "g": "g", "ms": "m/s"}
_SPEC_KEYS = ("lon_min", "lat_min", "lon_max", "lat_max", "nlon", "nlat")
# The positions in the LON/LAT columns may be rounded to 1e-4 deg in the text; allow this
# share of a cell before calling the row order inconsistent.
_POSITION_TOLERANCE_CELLS = 0.05


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                           load_dtd=False, dtd_validation=False)


def read_shakemap(path: str | Path, options: ReadOptions | None = None) -> HazardGrid:
    """Read one field of a ShakeMap grid.xml as a :class:`HazardGrid`.

    Args:
        path: ``grid.xml`` or ``grid.xml.gz`` (gzip is recognised by its magic bytes).
        options: ``variable`` names the field (``"MMI"`` by default; ``"PGA"``, ``"PGV"``,
            ``"PSA03"``... case-insensitive); ``kind`` and ``units`` override the defaults.

    Returns:
        The field on an EPSG:4326 grid whose cells are centred on the ShakeMap points;
        ``nature`` observed, ``event_id``, ``issued_at`` (process time) and ``valid_at``
        (event origin time) from the header.

    Raises:
        FeedNotFoundError: no such file.
        FeedFormatError: not a ShakeMap grid, or a DOCTYPE/entity declaration.
        FeedCorruptError: truncated gzip or XML, or a data table of the wrong size.
        UnknownVariableError: no such field (the message lists the fields).
    """
    options = options or ReadOptions()
    src_path = require_file(path)
    checksum = file_checksum(src_path)
    raw = _read_bytes(src_path)
    root, table = _split(src_path, raw)
    spec, fields, event = _header(src_path, root)
    name = (options.variable or "MMI").upper()
    if name not in fields:
        raise UnknownVariableError(
            src_path, f"field {options.variable or 'MMI'!r} not found; fields: {list(fields)}"
        )
    nlon, nlat = int(spec["nlon"]), int(spec["nlat"])
    columns = _table(src_path, table, nlat * nlon, len(fields))
    index = list(fields).index(name)
    values = columns[:, index].reshape(nlat, nlon)
    lon_min, lon_max = float(spec["lon_min"]), float(spec["lon_max"])
    lat_min, lat_max = float(spec["lat_min"]), float(spec["lat_max"])
    dx = (lon_max - lon_min) / (nlon - 1) if nlon > 1 else float(spec["nominal_lon_spacing"])
    dy = (lat_max - lat_min) / (nlat - 1) if nlat > 1 else float(spec["nominal_lat_spacing"])
    values = _north_up(src_path, values, columns, list(fields), (nlat, nlon), (lat_max, lon_min),
                       (dy, dx))
    values = apply_nodata(values, None, options.nodata)
    transform = Affine(dx, 0.0, lon_min - dx / 2.0, 0.0, -dy, lat_max + dy / 2.0)
    grid = Grid((nlat, nlon), transform, CRS("EPSG:4326"))
    xs, ys = grid.xy_centres()
    raw_units = fields[name]
    units = options.units or _UNITS.get(raw_units.lower(), raw_units) or "unknown"
    kind = HazardKind(options.kind) if options.kind else _FIELD_KINDS.get(name, HazardKind.OTHER)
    attrs = {k: v for k, v in event.items() if k in ("magnitude", "depth", "lat", "lon",
                                                    "event_description")}
    attrs.update({"shakemap_version": root.get("shakemap_version", ""),
                  "map_status": root.get("map_status", ""), "field_units": raw_units})
    return HazardGrid(
        data=xr.DataArray(values, dims=("y", "x"), coords={"y": ys, "x": xs}),
        grid=grid, kind=kind, units=units, nature=options.nature or Nature.OBSERVED,
        source=str(src_path), checksum=checksum, variable=name,
        issued_at=to_utc(root.get("process_timestamp")),
        valid_at=to_utc(event.get("event_timestamp")),
        event_id=root.get("event_id") or root.get("shakemap_id") or event.get("event_id"),
        attrs=attrs,
    )


def _read_bytes(path: Path) -> bytes:
    """File bytes, gunzipped when the file starts with the gzip magic."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise FeedCorruptError(path, f"gzip stream is truncated or damaged: {exc}") from exc
    return data


def _split(path: Path, raw: bytes) -> tuple[etree._Element, bytes]:
    """The parsed header (root element) and the raw ``grid_data`` table bytes."""
    if re.search(rb"<!(DOCTYPE|ENTITY)", raw[:65536]):
        raise FeedFormatError(path, "XML with a DOCTYPE or ENTITY declaration is refused")
    start = re.search(rb"<(\w+:)?grid_data\b[^>]*>", raw)
    if start is None:
        if b"shakemap_grid" not in raw[:4096]:
            raise FeedFormatError(path, "not a ShakeMap grid.xml (no <shakemap_grid>)")
        raise FeedCorruptError(path, "ShakeMap grid.xml has no <grid_data> table (truncated?)")
    end = re.compile(rb"</(\w+:)?grid_data\s*>").search(raw, start.end())
    if end is None:
        raise FeedCorruptError(path, "ShakeMap <grid_data> is not closed: the file is truncated")
    header = raw[: start.start()] + b"</shakemap_grid>"
    try:
        root = etree.fromstring(header, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise FeedFormatError(path, f"ShakeMap header is not well-formed XML: {exc}") from exc
    if etree.QName(root).localname != "shakemap_grid":
        raise FeedFormatError(path, f"root element is <{etree.QName(root).localname}>, "
                              "not <shakemap_grid>")
    return root, raw[start.end(): end.start()]


def _header(
    path: Path, root: etree._Element
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Grid specification, fields (upper-case name -> units, in column order) and event."""
    spec: dict[str, str] = {}
    numbered: list[tuple[int, str, str]] = []
    event: dict[str, str] = {}
    for element in root:
        if not isinstance(element.tag, str):
            continue
        local = etree.QName(element).localname
        if local == "grid_specification":
            spec = dict(element.attrib)
        elif local == "grid_field":
            try:
                numbered.append((int(element.get("index", "")), element.get("name", "").upper(),
                                 element.get("units", "")))
            except ValueError as exc:
                raise FeedFormatError(path, f"grid_field without an integer index: {exc}") from exc
        elif local == "event":
            event = dict(element.attrib)
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing:
        raise FeedFormatError(path, f"grid_specification lacks {missing}")
    numbered.sort()
    if [i for i, _, _ in numbered] != list(range(1, len(numbered) + 1)):
        raise FeedFormatError(path, f"grid_field indexes are not 1..n: {[i for i, *_ in numbered]}")
    fields = {name: units for _, name, units in numbered}
    if not {"LON", "LAT"} <= fields.keys():
        raise FeedFormatError(path, f"grid fields lack LON/LAT: {list(fields)}")
    return spec, fields, event


def _table(path: Path, table: bytes, n_points: int, n_fields: int) -> np.ndarray:
    """The whitespace table as an ``(n_points, n_fields)`` float array."""
    try:
        flat = np.array(table.split(), dtype="float64")
    except ValueError as exc:
        raise FeedCorruptError(path, f"grid_data holds a non-numeric value: {exc}") from exc
    if flat.size != n_points * n_fields:
        raise FeedCorruptError(
            path, f"grid_data holds {flat.size} numbers; expected {n_points} points x "
            f"{n_fields} fields = {n_points * n_fields}"
        )
    return flat.reshape(n_points, n_fields)


def _north_up(
    path: Path, values: np.ndarray, columns: np.ndarray, names: list[str],
    shape: tuple[int, int], corner: tuple[float, float], step: tuple[float, float],
) -> np.ndarray:
    """Check the LON/LAT columns run west-east, north-south; flip rows listed south first."""
    nlat, nlon = shape
    lats = columns[:, names.index("LAT")].reshape(shape)
    lons = columns[:, names.index("LON")].reshape(shape)
    dy, dx = step
    if nlat > 1 and lats[0, 0] < lats[-1, 0]:
        values, lats, lons = values[::-1], lats[::-1], lons[::-1]
    expected_lat = corner[0] - dy * np.arange(nlat)[:, None]
    expected_lon = corner[1] + dx * np.arange(nlon)[None, :]
    off = max(float(np.abs(lats - expected_lat).max()) / max(dy, 1e-12),
              float(np.abs(lons - expected_lon).max()) / max(dx, 1e-12))
    if off > _POSITION_TOLERANCE_CELLS:
        raise FeedFormatError(
            path, f"grid_data points are not a regular grid from the grid_specification "
            f"(off by {off:.2f} cells)"
        )
    return values
