"""Read one GRIB1/GRIB2 variable into a HazardGrid (cfgrib for the cube, eccodes for keys).

A GRIB file is a sequence of messages that may hold many variables, levels, step types and
even grids. The file is first scanned message by message with eccodes: this detects a
truncated or damaged file before anything is built (cfgrib would skip a bad message and
return the rest), lists what is there for error messages, and finds the one hypercube the
caller asked for. That hypercube is then opened with cfgrib through ``filter_by_keys``, so
messages on different grids are never stacked. Regular lat/lon grids become EPSG:4326 with
longitudes rolled to -180..180; Lambert conformal, Mercator and polar stereographic grids get
their CRS from the GRIB keys, and the transform is checked against the last grid point.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS, Transformer

from feeds.base import (
    ReadOptions,
    apply_nodata,
    file_checksum,
    grid_from_axes,
    reader_kind,
    require_file,
    select_time_and_member,
    to_utc,
)
from feeds.errors import FeedCorruptError, FeedFormatError, SelectionError, UnknownVariableError
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.types import Nature

# Keys whose values must be unique in one hypercube (cfgrib would fail or stack them).
_CUBE_KEYS = ("shortName", "typeOfLevel", "stepType", "gridType", "Ni", "Nj")
_SCAN_KEYS = (*_CUBE_KEYS, "cfVarName", "level", "dataType", "edition")
_GEOGRAPHY_KEYS = (
    "gridType", "Ni", "Nj", "Nx", "Ny", "latitudeOfFirstGridPointInDegrees",
    "longitudeOfFirstGridPointInDegrees", "latitudeOfLastGridPointInDegrees",
    "longitudeOfLastGridPointInDegrees", "LaDInDegrees", "LoVInDegrees", "Latin1InDegrees",
    "Latin2InDegrees", "DxInMetres", "DyInMetres", "DiInMetres", "DjInMetres",
    "orientationOfTheGridInDegrees", "iScansNegatively", "jScansPositively",
    "jPointsAreConsecutive", "shapeOfTheEarth", "earthIsOblate", "radius",
    "earthMajorAxisInMetres", "earthMinorAxisInMetres", "projectionCentreFlag",
)
_ANALYSIS_TYPES = {"an", "oi", "ia", "4v", "ea"}
# The projected first grid point plus (N-1) steps must land within this many cells of the
# projected last grid point, or the CRS built from the keys is wrong.
_GRID_CHECK_TOLERANCE_CELLS = 1.0
# shapeOfTheEarth codes with a fixed ellipsoid (WMO code table 3.2).
_EARTH_ELLIPSOIDS = {2: "+a=6378160 +b=6356775", 4: "+ellps=GRS80", 5: "+ellps=WGS84",
                     9: "+ellps=airy"}


def read_grib(path: str | Path, options: ReadOptions | None = None) -> HazardGrid:
    """Read one variable of a GRIB1 or GRIB2 file as a :class:`HazardGrid`.

    Args:
        path: the GRIB file.
        options: ``variable`` is the GRIB short name (``"gust"``, ``"tp"``) or cfgrib's name
            (``"t2m"``); ``filter_keys`` narrows to one hypercube
            (``{"typeOfLevel": "surface", "stepType": "instant"}``, ``{"Ni": 72}``); ``time``
            and ``member`` select, ``reduce`` reduces over members (``number``).

    Returns:
        The variable as float64, ``NaN`` where the GRIB bitmap says missing.

    Raises:
        FeedNotFoundError: no such file.
        FeedFormatError: not GRIB, or a grid type that is not supported.
        FeedCorruptError: a truncated or damaged message.
        UnknownVariableError: no message has that short name (the message lists those there).
        SelectionError: the selection matches several hypercubes (the message names the
            filter keys that would separate them) or none.
    """
    options = options or ReadOptions()
    src_path = require_file(path)
    checksum = file_checksum(src_path)
    messages = scan_messages(src_path)
    chosen = _choose_messages(src_path, messages, options)
    first = chosen[0]
    filter_by_keys = {k: first[k] for k in ("shortName", "typeOfLevel", "stepType")}
    filter_by_keys.update(dict(options.filter_keys or {}))
    da = _open_cube(src_path, filter_by_keys)
    da, valid_at, new_units = select_time_and_member(da, src_path, options)
    for dim in [d for d in da.dims if da.sizes[d] == 1 and d not in _spatial_dims(da)]:
        da = da.isel({dim: 0})
    values, grid, attrs = _georeference(da, src_path, first)
    lead = tuple(str(d) for d in da.dims[: da.ndim - (1 if "values" in da.dims else 2)])
    xs, ys = grid.xy_centres()
    coords = {d: da[d].values for d in lead if d in da.coords}
    data = xr.DataArray(values, dims=(*lead, "y", "x"), coords={**coords, "y": ys, "x": xs})
    units = options.units or new_units or str(da.attrs.get("units", "")) or "unknown"
    issued_at = to_utc(da["time"].values) if "time" in da.coords and da["time"].ndim == 0 else None
    nature = options.nature or (
        Nature.OBSERVED if first.get("dataType") in _ANALYSIS_TYPES else Nature.FORECAST
    )
    attrs.update({"filter_keys": repr(filter_by_keys), "gridType": str(first["gridType"]),
                  "edition": str(first.get("edition"))})
    return HazardGrid(
        data=data, grid=grid, kind=reader_kind(options, first["shortName"], units),
        units=units, nature=nature, source=str(src_path), checksum=checksum,
        variable=str(first["shortName"]), issued_at=issued_at, valid_at=valid_at, attrs=attrs,
    )


def scan_messages(path: Path) -> list[dict[str, object]]:
    """The keys of every message in a GRIB file, read with eccodes.

    Raises:
        FeedFormatError: the file holds no GRIB message.
        FeedCorruptError: a message is truncated or damaged (eccodes refuses it).
    """
    import eccodes

    messages: list[dict[str, object]] = []
    with open(path, "rb") as fh:
        while True:
            try:
                handle = eccodes.codes_grib_new_from_file(fh)
            except eccodes.GribInternalError as exc:
                raise FeedCorruptError(
                    path, f"GRIB message {len(messages) + 1} is truncated or damaged: {exc}"
                ) from exc
            if handle is None:
                break
            try:
                messages.append(_message_keys(eccodes, handle))
            except eccodes.GribInternalError as exc:
                raise FeedCorruptError(
                    path, f"GRIB message {len(messages) + 1} cannot be decoded: {exc}"
                ) from exc
            finally:
                eccodes.codes_release(handle)
    if not messages:
        raise FeedFormatError(path, "no GRIB message found (not a GRIB file)")
    return messages


def _message_keys(eccodes: object, handle: object) -> dict[str, object]:
    keys: dict[str, object] = {}
    for key in (*_SCAN_KEYS, *_GEOGRAPHY_KEYS):
        if key not in keys and eccodes.codes_is_defined(handle, key):  # type: ignore[attr-defined]
            keys[key] = eccodes.codes_get(handle, key)  # type: ignore[attr-defined]
    if "Ni" not in keys and "Nx" in keys:  # Lambert grids call them Nx/Ny
        keys["Ni"], keys["Nj"] = keys["Nx"], keys.get("Ny")
    return keys


def _matches(message: dict[str, object], wanted: dict[str, object]) -> bool:
    return all(str(message.get(k)) == str(v) for k, v in wanted.items())


def _choose_messages(
    path: Path, messages: list[dict[str, object]], options: ReadOptions
) -> list[dict[str, object]]:
    """Messages of the one hypercube selected by ``variable`` and ``filter_keys``."""
    names = sorted({str(m.get("shortName")) for m in messages})
    chosen = messages
    if options.variable is not None:
        wanted_name = options.variable
        chosen = [m for m in messages if wanted_name in (m.get("shortName"), m.get("cfVarName"))]
        if not chosen:
            raise UnknownVariableError(
                path, f"variable {options.variable!r} not found; short names in the file: {names}"
            )
    wanted = dict(options.filter_keys or {})
    narrowed = [m for m in chosen if _matches(m, wanted)]
    if not narrowed:
        present = {k: sorted({str(m.get(k)) for m in chosen}) for k in wanted}
        raise SelectionError(path, f"no message matches filter_keys {wanted}; values present: "
                             f"{present}")
    ambiguous = {k: sorted({str(m.get(k)) for m in narrowed}) for k in _CUBE_KEYS}
    ambiguous = {k: v for k, v in ambiguous.items() if len(v) > 1}
    if ambiguous:
        if "shortName" in ambiguous and options.variable is None:
            raise SelectionError(path, f"several variables in the file; give variable=one of "
                                 f"{ambiguous['shortName']}")
        hint = "; ".join(f"{k}: {v}" for k, v in ambiguous.items())
        raise SelectionError(
            path, f"{len(narrowed)} messages form several hypercubes; add filter_keys to pick "
            f"one ({hint}), e.g. filter_keys={{{next(iter(ambiguous))!r}: "
            f"{next(iter(ambiguous.values()))[0]!r}}}"
        )
    return narrowed


def _open_cube(path: Path, filter_by_keys: dict[str, object]) -> xr.DataArray:
    """Open the selected hypercube with cfgrib and load its one variable."""
    kwargs = {"indexpath": "", "errors": "raise", "filter_by_keys": filter_by_keys}
    try:
        with xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs,
                             decode_timedelta=True) as ds:
            names = list(ds.data_vars)
            if len(names) != 1:
                raise SelectionError(path, f"filter_keys {filter_by_keys} give variables {names}")
            return ds[names[0]].load()
    except (SelectionError, FeedFormatError):
        raise
    except Exception as exc:  # noqa: BLE001 - cfgrib/eccodes raise many unrelated types
        raise FeedCorruptError(path, f"cfgrib cannot build {filter_by_keys}: {exc}") from exc


def _spatial_dims(da: xr.DataArray) -> tuple[str, ...]:
    dims = tuple(str(d) for d in da.dims)
    if "values" in dims:
        return ("values",)
    return dims[-2:]


def _georeference(
    da: xr.DataArray, path: Path, keys: dict[str, object]
) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """North-up values and grid of the cube, by GRIB grid type."""
    grid_type = str(keys["gridType"])
    raw = np.asarray(da.values)
    values = apply_nodata(raw, da.attrs.get("GRIB_missingValue"))
    if grid_type in ("regular_ll", "regular_gg"):
        return grid_from_axes(values, da["latitude"].values, da["longitude"].values,
                              CRS("EPSG:4326"), path, geographic=True)
    if grid_type not in ("lambert", "mercator", "polar_stereographic"):
        raise FeedFormatError(path, f"GRIB gridType {grid_type!r} is not supported (regular_ll, "
                              "regular_gg, lambert, mercator, polar_stereographic are)")
    ni, nj = int(keys["Ni"]), int(keys["Nj"])  # type: ignore[call-overload]
    values = values.reshape(*values.shape[: values.ndim - _n_spatial(da)], nj, ni)
    crs = _projected_crs(path, keys)
    dx = float(keys.get("DxInMetres", keys.get("DiInMetres", 0.0)))  # type: ignore[arg-type]
    dy = float(keys.get("DyInMetres", keys.get("DjInMetres", 0.0)))  # type: ignore[arg-type]
    if not dx > 0 or not dy > 0:
        raise FeedFormatError(path, f"GRIB {grid_type} grid without a positive Dx/Dy: {dx}, {dy}")
    to_xy = Transformer.from_crs(CRS("EPSG:4326").geodetic_crs, crs, always_xy=True)
    lat0, lon0 = float(keys["latitudeOfFirstGridPointInDegrees"]), float(
        keys["longitudeOfFirstGridPointInDegrees"])  # type: ignore[arg-type]
    x0, y0 = to_xy.transform(lon0, lat0)
    step_x = -dx if keys.get("iScansNegatively") else dx
    step_y = dy if keys.get("jScansPositively") else -dy
    _check_last_point(path, da, keys, to_xy, (x0 + (ni - 1) * step_x, y0 + (nj - 1) * step_y),
                      (dx, dy))
    if step_y > 0:  # first row is the southern one: flip to north-up
        values, y_top = values[..., ::-1, :], y0 + (nj - 1) * dy
    else:
        y_top = y0
    if step_x < 0:
        values, x_left = values[..., ::-1], x0 - (ni - 1) * dx
    else:
        x_left = x0
    transform = Affine(dx, 0.0, x_left - dx / 2.0, 0.0, -dy, y_top + dy / 2.0)
    grid = Grid((nj, ni), transform, crs)
    return np.ascontiguousarray(values), grid, {"crs_from": "GRIB grid definition keys"}


def _n_spatial(da: xr.DataArray) -> int:
    return 1 if "values" in da.dims else 2


def _earth(path: Path, keys: dict[str, object]) -> str:
    """PROJ earth-shape parameters from shapeOfTheEarth / radius keys."""
    shape = keys.get("shapeOfTheEarth")
    if shape in _EARTH_ELLIPSOIDS:
        return _EARTH_ELLIPSOIDS[int(shape)]  # type: ignore[arg-type]
    major, minor = keys.get("earthMajorAxisInMetres"), keys.get("earthMinorAxisInMetres")
    if keys.get("earthIsOblate") and major and minor:
        return f"+a={major} +b={minor}"
    radius = keys.get("radius")
    if radius and float(radius) > 0:  # type: ignore[arg-type]
        return f"+R={float(radius):.1f}"  # type: ignore[arg-type]
    raise FeedFormatError(path, f"GRIB earth shape {shape!r} is not understood")


def _lon180(lon: float) -> float:
    return ((float(lon) + 180.0) % 360.0) - 180.0


def _projected_crs(path: Path, keys: dict[str, object]) -> CRS:
    """The CRS of a Lambert conformal, Mercator or polar stereographic GRIB grid."""
    earth = _earth(path, keys)
    grid_type = keys["gridType"]
    if grid_type == "lambert":
        lon_0 = _lon180(keys["LoVInDegrees"])  # type: ignore[arg-type]
        proj = (f"+proj=lcc +lat_1={keys['Latin1InDegrees']} +lat_2={keys['Latin2InDegrees']} "
                f"+lat_0={keys['LaDInDegrees']} +lon_0={lon_0}")
    elif grid_type == "mercator":
        first = float(keys["longitudeOfFirstGridPointInDegrees"])  # type: ignore[arg-type]
        last = float(keys["longitudeOfLastGridPointInDegrees"])  # type: ignore[arg-type]
        if last < first:  # the grid runs east across the antimeridian
            last += 360.0
        # Central meridian mid-grid, so a grid crossing the antimeridian stays contiguous.
        proj = f"+proj=merc +lat_ts={keys['LaDInDegrees']} +lon_0={_lon180((first + last) / 2)}"
    else:
        south = int(keys.get("projectionCentreFlag", 0)) & 128  # type: ignore[call-overload]
        lon_0 = _lon180(keys["orientationOfTheGridInDegrees"])  # type: ignore[arg-type]
        proj = (f"+proj=stere +lat_0={-90 if south else 90} +lat_ts={keys['LaDInDegrees']} "
                f"+lon_0={lon_0}")
    try:
        return CRS.from_proj4(f"{proj} +x_0=0 +y_0=0 {earth} +units=m +no_defs +type=crs")
    except Exception as exc:  # noqa: BLE001 - pyproj's CRSError
        raise FeedFormatError(
            path, f"cannot build a CRS from the GRIB keys ({proj}): {exc}"
        ) from exc


def _check_last_point(
    path: Path, da: xr.DataArray, keys: dict[str, object], to_xy: Transformer,
    expected_xy: tuple[float, float], cell: tuple[float, float],
) -> None:
    """Raise FeedFormatError unless the last grid point projects where the transform says."""
    # eccodes' own coordinates of the last point come first: the declared last-point keys
    # are rounded and, in NDFD Mercator files, a cell off the grid eccodes (and GDAL) build.
    if "latitude" in da.coords and da["latitude"].ndim >= 1 and da["latitude"].size > 1:
        lat1 = float(da["latitude"].values.ravel()[-1])
        lon1 = float(da["longitude"].values.ravel()[-1])
    elif "latitudeOfLastGridPointInDegrees" in keys:
        lat1 = float(keys["latitudeOfLastGridPointInDegrees"])  # type: ignore[arg-type]
        lon1 = float(keys["longitudeOfLastGridPointInDegrees"])  # type: ignore[arg-type]
    else:
        return  # nothing to check against
    x1, y1 = to_xy.transform(lon1, lat1)
    off = max(abs(x1 - expected_xy[0]) / cell[0], abs(y1 - expected_xy[1]) / cell[1])
    if not math.isfinite(off) or off > _GRID_CHECK_TOLERANCE_CELLS:
        raise FeedFormatError(
            path, f"GRIB {keys['gridType']} grid keys are inconsistent: the last grid point "
            f"({lat1:.4f}, {lon1:.4f}) lies {off:.1f} cells from where Dx/Dy put it"
        )
