"""Read a CF NetCDF variable into a HazardGrid.

Three spatial layouts are understood:

* 1-D latitude/longitude axes (EPSG:4326, or the datum of a ``latitude_longitude`` grid
  mapping); longitudes in 0..360 are rolled to -180..180 when the grid stays contiguous;
* 1-D projected ``x``/``y`` axes with a CF ``grid_mapping`` (CRS via ``pyproj.CRS.from_cf``);
* 2-D latitude/longitude coordinates (curvilinear or rotated-pole grids such as COSMO-E):
  used as is when they form a regular lat/lon grid, otherwise resampled by nearest neighbour
  onto a regular lat/lon grid at their median spacing (``attrs["resampled"]`` says so).

Rows always run north to south (transform ``e < 0``). Time and ensemble-member dimensions are
selected or reduced as ``ReadOptions`` asks, and kept when no selection is given.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS
from scipy.spatial import cKDTree

from feeds.base import (
    REGULAR_TOLERANCE_CELLS,
    ReadOptions,
    apply_nodata,
    file_checksum,
    find_dim,
    grid_from_axes,
    reader_kind,
    require_file,
    select_time_and_member,
    to_utc,
)
from feeds.errors import (
    FeedCorruptError,
    FeedError,
    FeedFormatError,
    MissingCRSError,
    SelectionError,
    UnknownVariableError,
)
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.types import HazardKind, Nature

# A resampled cell farther than this many cells from every source point has no data.
_RESAMPLE_MAX_DISTANCE_CELLS = 1.5
_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF")
_LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
_LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}


def read_netcdf(path: str | Path, options: ReadOptions | None = None) -> HazardGrid:
    """Read one variable of a CF NetCDF file as a :class:`HazardGrid`.

    Args:
        path: a NetCDF-3 or NetCDF-4/HDF5 file.
        options: ``variable`` names the variable (optional when exactly one data variable has
            two spatial dimensions); ``time`` and ``member`` select, ``reduce``/``threshold``
            reduce the members; ``crs`` supplies a CRS for x/y axes without a grid mapping.

    Returns:
        The variable as float64 with ``NaN`` no-data; dims ``(..., "y", "x")``.

    Raises:
        FeedNotFoundError: no such file.
        FeedFormatError: not NetCDF, or no spatial axes that can be georeferenced.
        FeedCorruptError: NetCDF header but unreadable contents.
        UnknownVariableError: the variable is not there (the message lists data variables).
        SelectionError: variable ambiguous, or time/member not found.
        MissingCRSError: projected axes with no grid mapping and no ``options.crs``.
    """
    options = options or ReadOptions()
    src_path = require_file(path)
    checksum = file_checksum(src_path)
    try:
        with _open_dataset(src_path) as ds:
            return _read_dataset(ds, src_path, options, checksum)
    except FeedError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
        raise FeedCorruptError(src_path, f"cannot read NetCDF contents: {exc}") from exc


def _open_dataset(path: Path) -> xr.Dataset:
    """Open with netCDF4, falling back to h5netcdf; classify failures."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head.startswith(_NETCDF_MAGIC):
        raise FeedFormatError(path, f"not a NetCDF file (starts with {head!r})")
    errors: list[str] = []
    for engine in ("netcdf4", "h5netcdf"):
        try:
            return xr.open_dataset(path, engine=engine, decode_timedelta=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, ImportError) as exc:
            errors.append(f"{engine}: {exc}")
    raise FeedCorruptError(path, "NetCDF header found but the file cannot be opened (" +
                           "; ".join(errors) + ")")


def _read_dataset(ds: xr.Dataset, path: Path, options: ReadOptions, checksum: str) -> HazardGrid:
    """Select, georeference and wrap the variable of an open dataset."""
    name = _choose_variable(ds, path, options.variable)
    da = ds[name]
    ydim, xdim = _spatial_dims(ds, da, path)
    had_member = find_dim(tuple(str(d) for d in da.dims), "member") is not None
    da, valid_at, new_units = select_time_and_member(da, path, options)
    for dim in [d for d in da.dims if d not in (ydim, xdim) and da.sizes[d] == 1]:
        da = da.isel({dim: 0})  # a length-1 level or height axis says nothing
    da = da.transpose(..., ydim, xdim).load()
    values = apply_nodata(np.asarray(da.values), None, options.nodata)
    values, grid, attrs = _georeference(ds, da, values, path, (ydim, xdim), options)
    lead = tuple(str(d) for d in da.dims[:-2])
    coords = {d: da[d].values for d in lead if d in da.coords}
    xs, ys = grid.xy_centres()
    data = xr.DataArray(values, dims=(*lead, "y", "x"), coords={**coords, "y": ys, "x": xs})
    units = options.units or new_units or str(da.attrs.get("units", "")) or "unknown"
    if options.reduce == "exceedance":
        kind = HazardKind(options.kind) if options.kind else HazardKind.PROBABILITY
        attrs["threshold"] = f"{options.threshold:g} {da.attrs.get('units', '')}".strip()
    else:
        kind = reader_kind(options, name, units, da.attrs.get("standard_name"))
    if options.reduce:
        attrs["reduced"] = f"{options.reduce} over members"
    issued_at = _issued_at(ds, da)
    nature = options.nature or (Nature.FORECAST if had_member or issued_at else Nature.OBSERVED)
    return HazardGrid(
        data=data, grid=grid, kind=kind, units=units, nature=nature, source=str(path),
        checksum=checksum, variable=name, issued_at=issued_at, valid_at=valid_at,
        event_id=None, attrs=attrs,
    )


def _grid_mapping_names(ds: xr.Dataset) -> set[str]:
    names = {str(v.attrs["grid_mapping"]).split(":")[0].strip()
             for v in ds.variables.values() if "grid_mapping" in v.attrs}
    names |= {str(k) for k, v in ds.variables.items() if "grid_mapping_name" in v.attrs}
    return names


def _choose_variable(ds: xr.Dataset, path: Path, wanted: str | None) -> str:
    """The requested data variable, or the only one with two spatial dimensions."""
    skip = _grid_mapping_names(ds) | {
        str(v.attrs["bounds"]) for v in ds.variables.values() if "bounds" in v.attrs
    }
    data_vars = [str(k) for k in ds.data_vars if str(k) not in skip]
    if wanted is not None:
        if wanted in ds.data_vars and wanted not in skip:
            return wanted
        raise UnknownVariableError(
            path, f"variable {wanted!r} not found; data variables: {sorted(data_vars)}"
        )
    candidates = []
    for name in data_vars:
        da = ds[name]
        if np.issubdtype(da.dtype, np.number) and da.ndim >= 2:
            try:
                _spatial_dims(ds, da, path)
            except FeedError:
                continue
            candidates.append(name)
    if len(candidates) == 1:
        return candidates[0]
    raise SelectionError(
        path, "give variable=...: " + (
            f"several data variables are spatial: {sorted(candidates)}" if candidates
            else f"no data variable has two spatial dimensions; data variables: {data_vars}"
        ),
    )


def _axis_role(ds: xr.Dataset, dim: str) -> str | None:
    """'lat', 'lon', 'y' or 'x' for a dimension, from its coordinate's attributes or name."""
    attrs = ds[dim].attrs if dim in ds.variables else {}
    units = str(attrs.get("units", "")).strip().lower().replace(" ", "_")
    standard = str(attrs.get("standard_name", "")).lower()
    axis = str(attrs.get("axis", "")).upper()
    if standard == "latitude" or units in _LAT_UNITS:
        return "lat"
    if standard == "longitude" or units in _LON_UNITS:
        return "lon"
    if standard in {"projection_y_coordinate", "grid_latitude"} or axis == "Y":
        return "y"
    if standard in {"projection_x_coordinate", "grid_longitude"} or axis == "X":
        return "x"
    lowered = dim.lower()
    if lowered in {"lat", "latitude", "nav_lat"}:
        return "lat"
    if lowered in {"lon", "long", "longitude", "nav_lon"}:
        return "lon"
    if re.fullmatch(r"(y|rlat|northing|south_north|j)(_\d+)?", lowered):
        return "y"
    if re.fullmatch(r"(x|rlon|easting|west_east|i)(_\d+)?", lowered):
        return "x"
    return None


def _spatial_dims(ds: xr.Dataset, da: xr.DataArray, path: Path) -> tuple[str, str]:
    """The (row, column) dimension names of ``da``."""
    roles = {str(d): _axis_role(ds, str(d)) for d in da.dims}
    ydim = next((d for d, r in roles.items() if r in ("lat", "y")), None)
    xdim = next((d for d, r in roles.items() if r in ("lon", "x")), None)
    if ydim is None or xdim is None:
        raise FeedFormatError(
            path, f"variable {da.name!r} has no latitude/y and longitude/x dimensions: "
            f"dims {tuple(str(d) for d in da.dims)}"
        )
    return ydim, xdim


def _grid_mapping(ds: xr.Dataset, da: xr.DataArray) -> dict[str, object] | None:
    name = str(da.attrs.get("grid_mapping", da.encoding.get("grid_mapping", ""))).split(":")[0]
    if name and name in ds.variables:
        return dict(ds[name].attrs)
    return None


def _georeference(
    ds: xr.Dataset, da: xr.DataArray, values: np.ndarray, path: Path,
    dims: tuple[str, str], options: ReadOptions,
) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """Values (reordered or resampled) and their north-up grid."""
    ydim, xdim = dims
    mapping = _grid_mapping(ds, da)
    mapping_name = str((mapping or {}).get("grid_mapping_name", ""))
    roles = (_axis_role(ds, ydim), _axis_role(ds, xdim))
    if roles == ("lat", "lon"):
        crs = CRS.from_cf(mapping) if mapping_name == "latitude_longitude" else CRS("EPSG:4326")
        return grid_from_axes(values, ds[ydim].values, ds[xdim].values, crs, path, geographic=True)
    lat2d, lon2d = _coords_2d(ds, da, dims)
    if mapping is not None and mapping_name not in ("", "rotated_latitude_longitude"):
        if ydim not in ds.variables or xdim not in ds.variables:
            raise FeedFormatError(path, f"grid mapping {mapping_name!r} but no {ydim}/{xdim} axes")
        try:
            crs = CRS.from_cf(mapping)
        except Exception as exc:  # noqa: BLE001 - pyproj raises several types here
            raise FeedFormatError(
                path, f"grid mapping {mapping_name!r} is not usable: {exc}"
            ) from exc
        return grid_from_axes(values, ds[ydim].values, ds[xdim].values, crs, path, geographic=False)
    if lat2d is not None and lon2d is not None:
        return _curvilinear(values, lat2d, lon2d, path)
    if options.crs is not None and ydim in ds.variables and xdim in ds.variables:
        crs = CRS.from_user_input(options.crs)
        return grid_from_axes(values, ds[ydim].values, ds[xdim].values, crs, path, geographic=False)
    raise MissingCRSError(
        path, f"axes {ydim}/{xdim} have no grid_mapping and no 2-D lat/lon; pass crs"
    )


def _coords_2d(
    ds: xr.Dataset, da: xr.DataArray, dims: tuple[str, str]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """2-D latitude and longitude coordinates on ``dims``, if the file has them."""
    lat = lon = None
    names = str(da.encoding.get("coordinates", da.attrs.get("coordinates", ""))).split()
    names += [str(c) for c in da.coords] + [str(c) for c in ds.coords]
    for name in names:
        if name not in ds.variables or ds[name].ndim != 2:
            continue
        coord = ds[name].transpose(*dims) if set(ds[name].dims) == set(dims) else None
        if coord is None:
            continue
        role = _axis_role(ds, name)
        if role == "lat" and lat is None:
            lat = np.asarray(coord.values, dtype="float64")
        elif role == "lon" and lon is None:
            lon = np.asarray(coord.values, dtype="float64")
    return lat, lon


def _curvilinear(
    values: np.ndarray, lat2d: np.ndarray, lon2d: np.ndarray, path: Path
) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """Use 2-D lat/lon directly when regular; else resample nearest-neighbour to lat/lon."""
    lon2d = np.where(lon2d > 180.0, lon2d - 360.0, lon2d)
    lat_step = float(np.median(np.abs(np.diff(lat2d, axis=0)))) if lat2d.shape[0] > 1 else 0.0
    lon_step = float(np.median(np.abs(np.diff(lon2d, axis=1)))) if lon2d.shape[1] > 1 else 0.0
    if lat_step == 0 or lon_step == 0:
        raise FeedFormatError(path, "2-D latitude/longitude coordinates have no spread")
    rows_flat = np.ptp(lat2d, axis=1).max() <= lat_step * REGULAR_TOLERANCE_CELLS
    cols_flat = np.ptp(lon2d, axis=0).max() <= lon_step * REGULAR_TOLERANCE_CELLS
    if rows_flat and cols_flat:
        try:
            out, grid, attrs = grid_from_axes(values, lat2d[:, 0], lon2d[0, :], CRS("EPSG:4326"),
                                        path, geographic=True)
            return out, grid, {**attrs, "coordinates": "2-D lat/lon, regular"}
        except FeedFormatError:
            pass  # rows and columns are straight but unevenly spaced: resample
    west, east = float(np.nanmin(lon2d)), float(np.nanmax(lon2d))
    south, north = float(np.nanmin(lat2d)), float(np.nanmax(lat2d))
    width = int(round((east - west) / lon_step)) + 1
    height = int(round((north - south) / lat_step)) + 1
    transform = Affine(lon_step, 0.0, west - lon_step / 2.0, 0.0, -lat_step, north + lat_step / 2.0)
    grid = Grid((height, width), transform, CRS("EPSG:4326"))
    xs, ys = grid.xy_centres()
    # Distances in degrees of latitude: squeeze longitudes by the cosine of the mid-latitude.
    squeeze = float(np.cos(np.deg2rad((north + south) / 2.0)))
    tree = cKDTree(np.column_stack([lon2d.ravel() * squeeze, lat2d.ravel()]))
    gx, gy = np.meshgrid(xs * squeeze, ys)
    cell = max(lon_step * squeeze, lat_step)
    dist, idx = tree.query(np.column_stack([gx.ravel(), gy.ravel()]), k=1,
                           distance_upper_bound=_RESAMPLE_MAX_DISTANCE_CELLS * cell)
    found = np.isfinite(dist)
    flat = values.reshape(*values.shape[:-2], -1)
    out = np.full((*values.shape[:-2], height * width), np.nan)
    out[..., found] = flat[..., idx[found]]
    attrs = {"resampled": f"nearest neighbour from 2-D lat/lon {lat2d.shape} to a regular "
                          f"{lat_step:.6g} x {lon_step:.6g} deg lat/lon grid"}
    return out.reshape(*values.shape[:-2], height, width), grid, attrs


def _issued_at(ds: xr.Dataset, da: xr.DataArray) -> datetime | None:
    """Forecast reference time from a scalar coordinate or a global attribute."""
    for name in ("forecast_reference_time", "reference_time"):
        if name in da.coords and da[name].ndim == 0:
            return to_utc(da[name].values)
        if name in ds.variables and ds[name].ndim == 0:
            return to_utc(ds[name].values)
        if name in ds.attrs:
            return to_utc(ds.attrs[name])
    return None
