"""Shared pieces of the hazard readers: options, checksums, kind guessing, no-data, times.

Every reader in ``feeds/`` takes a path and a :class:`ReadOptions` and returns one
:class:`geo.hazard.HazardGrid`. The helpers here keep the readers consistent: the same
checksum for idempotent ingest, the same rules for no-data, the same guess of the hazard
kind from a variable's name, units or CF ``standard_name``.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS

from feeds.errors import FeedFormatError, FeedNotFoundError, SelectionError
from geo.grid import Grid
from geo.types import BBox, HazardKind, Nature

Reduction = Literal["max", "mean", "min", "exceedance"]
REDUCTIONS: tuple[str, ...] = ("max", "mean", "min", "exceedance")

# Axis positions may wobble off a straight line by float32 rounding or lossy packing
# (``least_significant_digit``: the WISC footprints store latitudes to 0.001 deg on a 0.04 deg
# grid); beyond this share of a cell the axis is irregular.
REGULAR_TOLERANCE_CELLS = 0.05
# Streamed in blocks of this size so a multi-GB GRIB never sits in memory for hashing.
_CHECKSUM_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What to read from a hazard file and how to interpret it.

    Attributes:
        kind: hazard kind; ``None`` guesses it from the variable name, units or standard name.
        units: units to report, overriding the file's (for files that declare none or wrong ones).
        nature: observed or forecast; ``None`` lets the reader decide (ShakeMap and GeoTIFF:
            observed; GRIB: forecast unless its ``dataType`` is an analysis; NetCDF: forecast
            when it has an ensemble dimension or a forecast reference time).
        variable: variable, field or band to read (GeoTIFF: ``"band=N"`` or a band description).
        time: a time to select: ISO string or ``datetime`` (exact match) or an integer index.
        member: an ensemble member to select: ``int`` is a position, ``str`` a coordinate value.
        reduce: reduce the member dimension instead (``"exceedance"`` needs ``threshold``).
        threshold: for ``reduce="exceedance"``: the share of members ``>= threshold`` is returned,
            in units ``"1"``.
        filter_keys: GRIB keys that pick one hypercube (``{"typeOfLevel": "surface"}``).
        nodata: a sentinel value to treat as no-data, overriding a wrong declared one.
        bbox: ``(minx, miny, maxx, maxy)`` in the file's CRS for a windowed read (GeoTIFF).
        crs: the CRS to use when the file carries none (``"EPSG:4326"``).
    """

    kind: HazardKind | None = None
    units: str | None = None
    nature: Nature | None = None
    variable: str | None = None
    time: str | datetime | int | None = None
    member: int | str | None = None
    reduce: Reduction | None = None
    threshold: float | None = None
    filter_keys: Mapping[str, object] | None = None
    nodata: float | None = None
    bbox: BBox | None = None
    crs: str | None = None

    def __post_init__(self) -> None:
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if self.reduce == "exceedance" and self.threshold is None:
            raise ValueError("reduce='exceedance' needs a threshold")
        if self.reduce is not None and self.member is not None:
            raise ValueError("give either member (select one) or reduce (over all), not both")
        if self.bbox is not None:
            minx, miny, maxx, maxy = self.bbox
            if not (minx < maxx and miny < maxy):
                raise ValueError(
                    f"bbox must be (minx, miny, maxx, maxy) with min < max, got {self.bbox}"
                )


def file_checksum(path: str | Path) -> str:
    """The ``sha256:<hex>`` digest of a file's bytes, read in 1 MiB blocks.

    Args:
        path: the file.

    Returns:
        ``"sha256:"`` followed by the hex digest, the key of idempotent ingest.

    Raises:
        FeedNotFoundError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_CHECKSUM_BLOCK_BYTES), b""):
                digest.update(block)
    except OSError as exc:
        raise FeedNotFoundError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    return "sha256:" + digest.hexdigest()


def require_file(path: str | Path) -> Path:
    """Return ``path`` as a :class:`Path`, raising :class:`FeedNotFoundError` if it is no file."""
    p = Path(path)
    if not p.exists():
        raise FeedNotFoundError(p, "no such file")
    if not p.is_file():
        raise FeedNotFoundError(p, "not a regular file")
    return p


# Ordered: the first rule whose pattern matches the lower-cased name wins. Patterns are
# anchored on word-ish boundaries so 'tp' does not match 'temp' and 'depth' wins over 'flood'.
_NAME_RULES: tuple[tuple[str, HazardKind], ...] = (
    (r"(^|_)(gust|fg10|i10fg|10fg|vmax(_10m)?|max_wind_gust|wind_speed_of_gust)($|_)",
     HazardKind.WIND_GUST),
    (r"gust", HazardKind.WIND_GUST),
    (r"(^|_)(mmi|intensity)($|_)", HazardKind.SHAKING_MMI),
    (r"(^|_)pga($|_)", HazardKind.SHAKING_PGA),
    (r"(^|_)pgv($|_)", HazardKind.SHAKING_PGV),
    (r"(^|_)(tp|precip\w*|rain\w*|pr|apcp|acpcp|cp|cpr|prate|cprat|precipitation_\w+)($|_)",
     HazardKind.RAINFALL),
    (r"(depth|inundation|flood)", HazardKind.FLOOD_DEPTH),
    (r"(^|_)(swh|shww|waveh|htsgw|sea_surface_wave_significant_height|wave\w*)($|_)",
     HazardKind.WAVE_HEIGHT),
    (r"(^|_)(2t|t2m|tmax|air_temperature|tas|tasmax|heat\w*)($|_)", HazardKind.HEAT),
    (r"(^|_)(fire|frp|burn\w*)($|_)", HazardKind.FIRE),
)


def guess_kind(
    name: str | None, units: str | None = None, standard_name: str | None = None
) -> HazardKind:
    """Guess the hazard kind of a variable from its name, CF standard name or units.

    The guess is deliberately conservative: anything not recognised is
    :attr:`HazardKind.OTHER`, and the caller can always pass ``ReadOptions.kind``.

    Args:
        name: variable, field or band name (``"gust"``, ``"tp"``, ``"MMI"``...).
        units: the variable's units, used only when the names say nothing.
        standard_name: the CF ``standard_name`` attribute, if any.

    Returns:
        The guessed :class:`HazardKind`.
    """
    for candidate in (standard_name, name):
        if not candidate:
            continue
        text = candidate.strip().lower()
        for pattern, kind in _NAME_RULES:
            if re.search(pattern, text):
                return kind
    unit = (units or "").strip().lower()
    if unit in {"mmi", "intensity"}:
        return HazardKind.SHAKING_MMI
    return HazardKind.OTHER


def apply_nodata(
    values: np.ndarray, declared: float | None = None, sentinel: float | None = None
) -> np.ndarray:
    """Return ``values`` as float64 with ``NaN`` wherever there is no data.

    No-data cells are those equal to the declared no-data value of the file, those equal to
    the caller's ``sentinel`` (which wins when the declared value is wrong, e.g. a grid whose
    header says 1.7e38 while its empty cells hold -9999), and every non-finite cell.

    Args:
        values: raw values of any numeric dtype (a masked array's mask is honoured).
        declared: the no-data value the file declares, if any.
        sentinel: an extra value to treat as no-data, if any.

    Returns:
        A new float64 array.
    """
    mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
    out = np.array(np.ma.getdata(values), dtype="float64", copy=True)
    for marker in (declared, sentinel):
        if marker is None or (isinstance(marker, float) and math.isnan(marker)):
            continue
        # Compare in the source dtype's precision: a float32 file's 1.7e38 is not exactly
        # representable in float64.
        raw = np.ma.getdata(values)
        if np.issubdtype(raw.dtype, np.floating):
            out[raw == raw.dtype.type(marker)] = np.nan
        else:
            out[out == float(marker)] = np.nan
    if mask is not None:
        out[mask] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def to_utc(value: object) -> datetime | None:
    """Parse a time (``datetime``, ``numpy.datetime64``, ISO string) to an aware UTC datetime.

    Strings may end in ``Z`` or ``UTC`` (ShakeMap writes ``1989-10-18T00:04:15UTC``). Naive
    values are taken as UTC, the convention of every format read here. Unparseable values
    give ``None``: a missing time is better than a wrong one, and callers report it.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        seconds = value.astype("datetime64[us]").astype("int64") / 1e6
        return datetime.fromtimestamp(seconds, tz=UTC)
    text = str(value).strip()
    text = re.sub(r"\s*(UTC|GMT|Z)$", "+00:00", text)
    for candidate in (text, text.replace(":", "", 0)):
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return to_utc(parsed)
    match = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
    if match:  # TIFFTAG_DATETIME: "YYYY:MM:DD HH:MM:SS"
        return datetime(*(int(g) for g in match.groups()), tzinfo=UTC)
    return None


def select_index(
    path: str | Path, dim: str, labels: list[str], wanted: int | str | datetime, what: str
) -> int:
    """Position of ``wanted`` along ``dim``: an int is a position, anything else an exact label.

    Raises:
        SelectionError: out of range, or no label matches; the message lists what exists.
    """
    if isinstance(wanted, bool):
        raise SelectionError(path, f"{what} must be an index, a value or a time, not a bool")
    if isinstance(wanted, int | np.integer):
        n = len(labels)
        if not -n <= int(wanted) < n:
            raise SelectionError(
                path, f"{what} index {wanted} is out of range for {dim!r} of length {n}"
            )
        return int(wanted) % n
    if isinstance(wanted, datetime) or what == "time":
        target = to_utc(wanted)
        parsed = [to_utc(label) for label in labels]
        for i, value in enumerate(parsed):
            if target is not None and value == target:
                return i
    else:
        for i, label in enumerate(labels):
            if label == str(wanted):
                return i
    shown = ", ".join(labels[:30]) + (" ..." if len(labels) > 30 else "")
    raise SelectionError(path, f"{what} {wanted!s} not found along {dim!r}; available: {shown}")


def reader_kind(options: ReadOptions, name: str | None, units: str | None,
                standard_name: str | None = None) -> HazardKind:
    """The kind given in ``options``, else the one guessed from the variable."""
    return HazardKind(options.kind) if options.kind else guess_kind(name, units, standard_name)


_MEMBER_DIM = re.compile(
    r"^(member|members|number|realization|realisation|ensemble|ensemble_member|ens|eps|mem|"
    r"epsd(_\d+)?)$",
    re.IGNORECASE,
)
_TIME_DIM = re.compile(r"^(time(_\d+)?|valid_time|t)$", re.IGNORECASE)


def find_dim(dims: tuple[str, ...], kind: Literal["member", "time"]) -> str | None:
    """The first dimension name that looks like an ensemble-member or a time dimension."""
    pattern = _MEMBER_DIM if kind == "member" else _TIME_DIM
    return next((d for d in dims if pattern.match(d)), None)


def _labels(da: xr.DataArray, dim: str) -> list[str]:
    if dim not in da.coords:
        return [str(i) for i in range(da.sizes[dim])]
    values = da[dim].values
    if np.issubdtype(values.dtype, np.datetime64):
        return [str(np.datetime_as_string(v, unit="s")) for v in values]
    return [str(v.item() if hasattr(v, "item") else v) for v in values]


def select_time_and_member(
    da: xr.DataArray, path: str | Path, options: ReadOptions
) -> tuple[xr.DataArray, datetime | None, str | None]:
    """Apply the time and member selection (or member reduction) of ``options`` to ``da``.

    Dimensions with no selection are kept, so the caller can select later. A time or member
    selection on a file without such a dimension is an error, not silently ignored.

    Returns:
        The selected values, the selected valid time (if one time was chosen or the time is a
        scalar coordinate) and the new units when the reduction changed them (``"1"`` for
        exceedance), else ``None``.

    Raises:
        SelectionError: the dimension is absent, or the time, member or index is not there.
    """
    dims = tuple(str(d) for d in da.dims)
    valid_at: datetime | None = None
    time_dim = find_dim(dims, "time")
    if options.time is not None:
        if time_dim is None:
            raise SelectionError(path, f"a time was asked for but the variable has dims {dims}")
        idx = select_index(path, time_dim, _labels(da, time_dim), options.time, "time")
        da = da.isel({time_dim: idx})
    elif time_dim is None or da.sizes.get(time_dim) == 1:
        if time_dim is not None:
            da = da.isel({time_dim: 0})
    for name in ("valid_time", "time"):
        if name in da.coords and da[name].ndim == 0:
            valid_at = to_utc(da[name].values)
            break
    member_dim = find_dim(tuple(str(d) for d in da.dims), "member")
    new_units: str | None = None
    if options.member is not None or options.reduce is not None:
        if member_dim is None:
            raise SelectionError(
                path, f"an ensemble member or reduction was asked for but the variable has "
                f"dims {tuple(str(d) for d in da.dims)} and no member dimension"
            )
        if options.member is not None:
            idx = select_index(path, member_dim, _labels(da, member_dim), options.member, "member")
            da = da.isel({member_dim: idx})
        else:
            da, new_units = reduce_members(da, member_dim, options)
    return da, valid_at, new_units


def reduce_members(
    da: xr.DataArray, member_dim: str, options: ReadOptions
) -> tuple[xr.DataArray, str | None]:
    """Reduce the member dimension by max, mean, min, or exceedance share (units ``"1"``)."""
    if options.reduce == "exceedance":
        valid = da.notnull()
        hits = (da >= float(options.threshold)).where(valid)  # type: ignore[arg-type]
        n_valid = valid.sum(member_dim)
        share = hits.sum(member_dim, skipna=True) / n_valid.where(n_valid > 0)
        return share.astype("float64"), "1"
    reducer = {"max": da.max, "mean": da.mean, "min": da.min}[str(options.reduce)]
    with warnings.catch_warnings():
        # Cells where every member is NaN reduce to NaN, which is what we want.
        warnings.simplefilter("ignore", RuntimeWarning)
        return reducer(member_dim, skipna=True, keep_attrs=True), None


def regular_step(coords: np.ndarray, path: Path, what: str) -> float:
    """The constant step of a 1-D axis; raises :class:`FeedFormatError` for irregular axes."""
    if coords.size < 2:
        raise FeedFormatError(path, f"{what} axis needs at least two points to infer a cell size")
    step = float(coords[-1] - coords[0]) / (coords.size - 1)
    off_line = np.abs(coords - (coords[0] + step * np.arange(coords.size)))
    if step == 0 or off_line.max() > abs(step) * REGULAR_TOLERANCE_CELLS:
        steps = np.diff(coords)
        raise FeedFormatError(path, f"{what} axis is not evenly spaced (steps {steps.min():g} to "
                              f"{steps.max():g}); irregular axes are not supported")
    return step


def grid_from_axes(
    values: np.ndarray, ys: np.ndarray, xs: np.ndarray, crs: CRS, path: Path, *, geographic: bool
) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """Grid of 1-D cell-centre axes: rows flipped north to south, longitudes rolled to -180..180.

    Longitudes above 180 are wrapped and the columns rolled when the result is still one
    evenly spaced axis (a global grid); a regional grid crossing the antimeridian keeps its
    0..360 longitudes (``attrs["longitudes"]`` says which).

    Args:
        values: data with the two axes last.
        ys: row-centre coordinates.
        xs: column-centre coordinates.
        crs: the axes' CRS.
        path: the source, for messages.
        geographic: True when ``xs`` are longitudes.

    Returns:
        The reordered values, their north-up grid and notes for ``HazardGrid.attrs``.

    Raises:
        FeedFormatError: an axis is not evenly spaced.
    """
    ys = np.asarray(ys, dtype="float64")
    xs = np.asarray(xs, dtype="float64")
    attrs: dict[str, str] = {}
    if geographic and xs.max() > 180.0:
        wrapped = ((xs + 180.0) % 360.0) - 180.0
        order = np.argsort(wrapped, kind="stable")
        candidate = wrapped[order]
        try:
            regular_step(candidate, path, "longitude")
        except FeedFormatError:
            attrs["longitudes"] = "kept in 0..360: the grid crosses the antimeridian"
        else:
            xs, values = candidate, values[..., order]
            attrs["longitudes"] = "rolled from 0..360 to -180..180"
    dy = regular_step(ys, path, "y/latitude")
    dx = regular_step(xs, path, "x/longitude")
    if dy > 0:  # south-to-north rows: flip so the transform's e is negative
        ys, values, dy = ys[::-1], values[..., ::-1, :], -dy
    if dx < 0:
        xs, values, dx = xs[::-1], values[..., ::-1], -dx
    transform = Affine(dx, 0.0, xs[0] - dx / 2.0, 0.0, dy, ys[0] - dy / 2.0)
    grid = Grid(values.shape[-2:], transform, crs)
    return np.ascontiguousarray(values), grid, attrs
