"""Exposure by zone and severity class: the fused kernel and the tables built from it.

:func:`accumulate` is the hot loop of every overlay. In one pass over the population grid
it adds every layer's value (people, people of each vulnerable group) into a
``(layer, zone, class)`` table, reading the pre-rasterised zone index (``int16``), the class
index (``uint8``) and the layers (``float32``): seven bytes a cell for one layer, no
temporaries. Rows are split into blocks handled in parallel, each with its own accumulator
(no atomics, no false sharing), summed at the end. ``NaN`` layer cells count as 0.

Sums are ``float64``: summing 10^8 float32 cells in float32 would lose whole people.
The last zone row is "outside every zone" (zone index ``-1``), so the table's grand total is
always the grid total.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numba
import numpy as np
import pandas as pd
from numba import njit, prange

from geo.classes import SeverityClasses
from geo.errors import GeoError, GridMismatchError, MissingZoneRateError
from geo.grid import Grid
from geo.region import GroupLayer
from geo.sampling import ClassShares
from geo.types import FacilityType
from geo.zones import OUTSIDE_ZONE_ID, ZoneRaster

# Fast-math without "nnan"/"ninf": NaN checks must survive; reassociation lets LLVM
# vectorise the run sums.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_CHUNKS_PER_THREAD = 4  # row blocks per thread, for load balance
_ACCUMULATOR_BUDGET_BYTES = 64 * 2**20  # per-block tables together stay below this

OUTSIDE_ZONE_NAME = "outside every zone"
ALL_ZONE_ID = "all"
"""Zone id of the single row per class when there are no zones."""


def accumulate(
    zone_index: np.ndarray,
    class_index: np.ndarray | ClassShares,
    layers: Sequence[np.ndarray],
    n_zones: int,
    n_classes: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Sum every layer by zone and severity class in one parallel pass.

    Args:
        zone_index: integer (``int16``/``int32``) zone of every cell, ``-1`` outside.
        class_index: ``uint8`` class of every cell (0..``n_classes``), or a
            :class:`~geo.sampling.ClassShares` (index or fractional shares).
        layers: 2-D ``float32``/``float64`` arrays of the same shape; ``NaN`` counts as 0.
        n_zones: number of zones (valid zone indices are ``0..n_zones-1``).
        n_classes: number of classes above class 0.
        out: an accumulator from an earlier call to add into (windowed operation); shape
            ``(len(layers), n_zones + 1, n_classes + 1)``, ``float64``.

    Returns:
        ``float64`` sums, shape ``(len(layers), n_zones + 1, n_classes + 1)``; row
        ``n_zones`` is outside every zone. ``out`` itself when given.

    Raises:
        GridMismatchError: arrays of different shapes, or ``out`` of the wrong shape.
        GeoError: a zone index ``>= n_zones`` or a class index ``> n_classes``.
    """
    if isinstance(class_index, ClassShares):
        if class_index.shares is not None:
            return accumulate_shares(
                zone_index, class_index.shares, layers, n_zones, n_classes, out
            )
        assert class_index.index is not None
        class_index = class_index.index
    zone_index, stack = _check_inputs(zone_index, class_index.shape, layers)
    cls = np.ascontiguousarray(class_index)
    if cls.dtype != np.uint8:
        cls = _as_uint8_classes(cls, n_classes)
    out = _check_out(out, len(stack), n_zones, n_classes)
    if stack:
        bad = sum_by_zone_class(zone_index, cls, stack, n_zones, n_classes, out)
        _raise_on_bad(bad, zone_index, cls, n_zones, n_classes)
    return out


def accumulate_shares(
    zone_index: np.ndarray,
    shares: np.ndarray,
    layers: Sequence[np.ndarray],
    n_zones: int,
    n_classes: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Like :func:`accumulate`, but each cell's value is split between classes by share.

    Args:
        zone_index: integer zone of every cell, ``-1`` outside.
        shares: ``float32`` ``(n_classes, H, W)``: share of each cell in classes
            ``1..n_classes``; class 0 receives ``1 - sum``.
        layers: 2-D float arrays of shape ``(H, W)``.
        n_zones: number of zones.
        n_classes: number of classes above class 0.
        out: accumulator to add into, as in :func:`accumulate`.

    Returns:
        ``float64`` sums ``(len(layers), n_zones + 1, n_classes + 1)``.
    """
    shares = np.ascontiguousarray(shares, dtype=np.float32)
    if shares.ndim != 3 or shares.shape[0] != n_classes:
        raise GridMismatchError(
            f"shares must have shape ({n_classes}, H, W) for {n_classes} classes, got "
            f"{shares.shape}"
        )
    zone_index, stack = _check_inputs(zone_index, shares.shape[1:], layers)
    out = _check_out(out, len(stack), n_zones, n_classes)
    if stack:
        bad = sum_by_zone_share(zone_index, shares, stack, n_zones, out)
        _raise_on_bad(bad, zone_index, None, n_zones, n_classes)
    return out


def exposure_frame(
    sums: np.ndarray,
    zone_ids: Sequence[str],
    zone_names: Sequence[str],
    classes: SeverityClasses,
    layer_names: Sequence[str],
) -> pd.DataFrame:
    """The sums as a long table: one row per zone (``outside`` last) and class.

    Args:
        sums: output of :func:`accumulate`, ``(n_layers, n_zones + 1, n_classes + 1)``.
        zone_ids: ids of the ``n_zones`` zones; empty when there are no zones, giving one
            zone ``all`` per class.
        zone_names: their names.
        classes: the severity classes (for labels and bounds).
        layer_names: one column name per layer (``population``, ``disability``...).

    Returns:
        Columns ``zone_id, zone_name, class, label, lower, upper`` and one per layer.
        Class 0 (``below``) is included; the ``outside`` zone only when it holds anything.
    """
    n_layers, n_rows, n_cls = sums.shape
    if len(layer_names) != n_layers:
        raise GeoError(f"{len(layer_names)} layer names for {n_layers} layers")
    if n_cls != classes.count + 1:
        raise GeoError(f"sums have {n_cls} class columns; {classes.count + 1} classes expected")
    ids, names = [str(z) for z in zone_ids], [str(n) for n in zone_names]
    if n_rows != len(ids) + 1:
        raise GeoError(f"sums have {n_rows} zone rows for {len(ids)} zones (plus outside)")
    if not ids:
        # No zones: every cell is in the outside row, which is then the whole area.
        ids, names = [ALL_ZONE_ID], [ALL_ZONE_ID]
    elif np.any(sums[:, -1, :] != 0):
        ids, names = ids + [OUTSIDE_ZONE_ID], names + [OUTSIDE_ZONE_NAME]
    else:
        sums = sums[:, :-1, :]  # nothing outside every zone: no row for it
    n_zone_rows = len(ids)
    ks = np.arange(n_cls)
    frame = pd.DataFrame(
        {
            "zone_id": np.repeat(np.array(ids, dtype=object), n_cls),
            "zone_name": np.repeat(np.array(names, dtype=object), n_cls),
            "class": np.tile(ks, n_zone_rows),
            "label": np.tile(np.array([classes.label(int(k)) for k in ks], dtype=object),
                             n_zone_rows),
            "lower": np.tile([classes.lower(int(k)) for k in ks], n_zone_rows),
            "upper": np.tile([classes.upper(int(k)) for k in ks], n_zone_rows),
        }
    )
    block = sums[:, -n_zone_rows:, :]
    for i, name in enumerate(layer_names):
        frame[name] = block[i].reshape(-1)
    return frame


def totals_by_class(frame: pd.DataFrame) -> pd.DataFrame:
    """Sum an :func:`exposure_frame` over zones: one row per class, in class order."""
    keys = ["class", "label", "lower", "upper"]
    values = [c for c in frame.columns if c not in ("zone_id", "zone_name", *keys)]
    return frame.groupby(keys, as_index=False, sort=True)[values].sum()


def group_counts(population: np.ndarray, zone: ZoneRaster, layer: GroupLayer) -> np.ndarray:
    """People of one vulnerable group per population cell (``float32``).

    Registry counts are used as they are where present (they are better than any rate);
    elsewhere population times the rate raster, else times the zone's rate.

    Args:
        population: people per cell on ``zone.grid``; ``NaN`` is no-data.
        zone: the zones of the population grid.
        layer: the group's rates and/or registry counts.

    Returns:
        ``float32`` array of the population's shape.

    Raises:
        GridMismatchError: a layer raster is on another grid.
        MissingZoneRateError: ``rate_by_zone`` lacks zones holding people (listed).
        GeoError: the layer has no source at all.
    """
    population = np.asarray(population)
    if population.shape != zone.grid.shape:
        raise GridMismatchError(
            f"population has shape {population.shape}, zones grid {zone.grid.shape}"
        )
    if layer.rate_raster is not None:
        zone.grid.require_same(layer.rate_raster.grid, f"{layer.group.value} rate raster")
        rate = layer.rate_raster.filled(np.nan, np.float32)
    elif layer.rate_by_zone is not None:
        rate = _rate_through_zones(population, zone, layer)
    elif layer.registry_counts is None:
        raise GeoError(f"group layer {layer.group.value!r} has no rates and no registry counts")
    else:
        rate = np.zeros(population.shape, dtype=np.float32)
    counts = (population * rate).astype(np.float32, copy=False)
    if layer.registry_counts is not None:
        zone.grid.require_same(layer.registry_counts.grid, f"{layer.group.value} registry")
        registry = layer.registry_counts.data
        present = ~np.ma.getmaskarray(registry) & np.isfinite(np.ma.getdata(registry))
        counts[present] = np.ma.getdata(registry)[present]
    return counts


def _rate_through_zones(
    population: np.ndarray, zone: ZoneRaster, layer: GroupLayer
) -> np.ndarray:
    """Per-cell rate from a per-zone table; ``NaN`` outside every zone (rate unknown)."""
    assert layer.rate_by_zone is not None
    by_id = layer.rate_by_zone.copy()
    by_id.index = by_id.index.astype(str)
    table = np.array(by_id.reindex(list(zone.zone_ids)), dtype=np.float64)
    bad = np.isfinite(table) & ((table < 0) | (table > 1))
    if bad.any():
        listed = [f"{zone.zone_ids[i]}={table[i]:g}" for i in np.flatnonzero(bad)[:10]]
        raise GeoError(f"{layer.group.value} rates must be shares in 0..1; got {listed}")
    missing = np.flatnonzero(~np.isfinite(table))
    if missing.size:
        # A zone without a rate only matters if people live there.
        people = np.bincount(
            zone.index.ravel().astype(np.int64) + 1,
            weights=np.nan_to_num(population, nan=0.0).ravel(),
            minlength=zone.n_zones + 1,
        )[1:]
        lacking = [zone.zone_ids[i] for i in missing if people[i] > 0]
        if lacking:
            raise MissingZoneRateError(
                f"{layer.group.value} rate_by_zone ({layer.source or 'no source'}) has no rate "
                f"for {len(lacking)} zone(s) with people: {lacking[:20]}"
            )
        table[missing] = 0.0
    # Index -1 (outside every zone) picks the appended NaN.
    return np.append(table, np.nan).astype(np.float32)[zone.index]


def facilities_by_zone_class(
    facilities: gpd.GeoDataFrame, grid: Grid, zone: ZoneRaster, class_index: np.ndarray
) -> pd.DataFrame:
    """Facilities counted by zone, class and type, by the population cell each lies in.

    Args:
        facilities: points with a ``type`` column, in ``grid.crs``.
        grid: the population grid.
        zone: zones on ``grid``.
        class_index: ``uint8`` class of every cell of ``grid`` (e.g. the dominant class).

    Returns:
        Columns ``zone_id, class`` and one count column per facility type present; points
        off the grid are class 0 in zone ``outside``, as are points in no zone.
    """
    grid.require_same(zone.grid, "zone raster")
    if facilities.crs is not None and facilities.crs != grid.crs:
        facilities = facilities.to_crs(grid.crs)
    if "type" not in facilities.columns:
        raise GeoError(f"facilities need a 'type' column; columns are {list(facilities.columns)}")
    points = facilities.geometry
    if len(points) and not (points.geom_type == "Point").all():
        points = points.representative_point()
    cols_f, rows_f = (~grid.transform) @ (points.x.to_numpy(), points.y.to_numpy())
    rows = np.floor(rows_f).astype(np.int64)
    cols = np.floor(cols_f).astype(np.int64)
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    zone_of = np.full(len(points), -1, dtype=np.int64)
    cls_of = np.zeros(len(points), dtype=np.int64)
    zone_of[inside] = zone.index[rows[inside], cols[inside]]
    cls_of[inside] = class_index[rows[inside], cols[inside]]
    ids = np.array([*zone.zone_ids, OUTSIDE_ZONE_ID], dtype=object)
    frame = pd.DataFrame(
        {
            "zone_id": ids[np.where(zone_of < 0, len(zone.zone_ids), zone_of)],
            "class": cls_of,
            "type": [FacilityType(t).value for t in facilities["type"]],
        }
    )
    counts = frame.groupby(["zone_id", "class", "type"]).size().unstack("type", fill_value=0)
    counts.columns.name = None
    return counts.reset_index().astype({c: "int64" for c in counts.columns})


def _check_inputs(
    zone_index: np.ndarray, shape: tuple[int, ...], layers: Sequence[np.ndarray]
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    zone_index = np.ascontiguousarray(zone_index)
    if zone_index.dtype.kind not in "iu":
        raise GeoError(f"zone index must be integers, got {zone_index.dtype}")
    if tuple(zone_index.shape) != tuple(shape):
        raise GridMismatchError(
            f"zone index has shape {zone_index.shape}, classes have {tuple(shape)}"
        )
    arrays = [np.asarray(layer) for layer in layers]
    for i, arr in enumerate(arrays):
        if arr.shape != zone_index.shape:
            raise GridMismatchError(
                f"layer {i} has shape {arr.shape}, zone index has {zone_index.shape}"
            )
    # One dtype for all layers, so the kernel takes a homogeneous tuple; float32 unless a
    # layer is float64 (then every layer is read in float64).
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return zone_index, tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)


def _as_uint8_classes(cls: np.ndarray, n_classes: int) -> np.ndarray:
    if cls.dtype.kind not in "iu":
        raise GeoError(f"class index must be integers, got {cls.dtype}")
    if cls.size and (int(cls.min()) < 0 or int(cls.max()) > n_classes):
        raise GeoError(f"class index values must be in 0..{n_classes}")
    return cls.astype(np.uint8)


def _check_out(out: np.ndarray | None, n_layers: int, n_zones: int, n_classes: int) -> np.ndarray:
    shape = (n_layers, n_zones + 1, n_classes + 1)
    if out is None:
        return np.zeros(shape, dtype=np.float64)
    if out.shape != shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise GridMismatchError(
            f"accumulator must be a C-contiguous float64 array of shape {shape}, got "
            f"{out.dtype} {out.shape}"
        )
    return out


def _raise_on_bad(
    bad: int, zone_index: np.ndarray, cls: np.ndarray | None, n_zones: int, n_classes: int
) -> None:
    if bad == 0:
        return
    detail = f"zone indices up to {int(zone_index.max())} for {n_zones} zones"
    if cls is not None:
        detail += f", class indices up to {int(cls.max())} for {n_classes} classes"
    raise GeoError(f"{bad} cells have an index out of range ({detail}); nothing was added")


def _n_chunks(height: int, table_size: int) -> int:
    """Row blocks: a few per thread, fewer when the per-block tables would be large."""
    threads = numba.get_num_threads()
    by_budget = max(threads, _ACCUMULATOR_BUDGET_BYTES // max(1, 8 * table_size))
    return max(1, min(height, threads * _CHUNKS_PER_THREAD, by_budget))


def sum_by_zone_class(
    zone: np.ndarray,
    cls: np.ndarray,
    layers: tuple[np.ndarray, ...],
    n_zones: int,
    n_classes: int,
    out: np.ndarray,
) -> int:
    """Add layer sums by (zone, class) into ``out``; return the count of bad cells (0 = ok)."""
    n_chunks = _n_chunks(zone.shape[0], out.size)
    return int(_sum_index_kernel(zone, cls, layers, n_zones, n_classes, n_chunks, out))


def sum_by_zone_share(
    zone: np.ndarray,
    shares: np.ndarray,
    layers: tuple[np.ndarray, ...],
    n_zones: int,
    out: np.ndarray,
) -> int:
    """Add layer sums split by class shares into ``out``; return the count of bad cells."""
    n_chunks = _n_chunks(zone.shape[0], out.size)
    return int(_sum_shares_kernel(zone, shares, layers, n_zones, n_chunks, out))


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def _sum_index_kernel(zone, cls, layers, n_zones, n_classes, n_chunks, out):  # noqa: C901
    """Per row, find runs of equal (zone, class) and add each run's sum once."""
    height, width = zone.shape
    n_layers = len(layers)
    acc = np.zeros((n_chunks, n_layers, n_zones + 1, n_classes + 1))
    bad = np.zeros(n_chunks, np.int64)
    rows_per = (height + n_chunks - 1) // n_chunks
    for b in prange(n_chunks):
        for r in range(b * rows_per, min(height, (b + 1) * rows_per)):
            zrow = zone[r]
            crow = cls[r]
            j = 0
            while j < width:
                z = zrow[j]
                k = crow[j]
                e = j + 1
                while e < width and zrow[e] == z and crow[e] == k:
                    e += 1
                zi = n_zones if z == -1 else np.int64(z)
                if zi < 0 or zi > n_zones or (z >= n_zones) or k > n_classes:
                    bad[b] += e - j
                else:
                    for li in range(n_layers):
                        lrow = layers[li][r]
                        s = 0.0
                        for i in range(j, e):
                            v = lrow[i]
                            s += v if v == v else 0.0
                        acc[b, li, zi, k] += s
                j = e
    n_bad = bad.sum()
    if n_bad == 0:
        for b in range(n_chunks):
            out += acc[b]
    return n_bad


@njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def _sum_shares_kernel(zone, shares, layers, n_zones, n_chunks, out):
    """Each cell's value split between classes 1..K by share, class 0 taking the rest."""
    n_classes, height, width = shares.shape
    n_layers = len(layers)
    acc = np.zeros((n_chunks, n_layers, n_zones + 1, n_classes + 1))
    bad = np.zeros(n_chunks, np.int64)
    rows_per = (height + n_chunks - 1) // n_chunks
    for b in prange(n_chunks):
        for r in range(b * rows_per, min(height, (b + 1) * rows_per)):
            for j in range(width):
                z = zone[r, j]
                zi = n_zones if z == -1 else np.int64(z)
                if zi < 0 or zi > n_zones or z >= n_zones:
                    bad[b] += 1
                    continue
                rest = 1.0
                for k in range(n_classes):
                    rest -= shares[k, r, j]
                rest = max(rest, 0.0)
                for li in range(n_layers):
                    v = np.float64(layers[li][r, j])
                    if v != v:
                        continue
                    acc[b, li, zi, 0] += v * rest
                    for k in range(n_classes):
                        acc[b, li, zi, k + 1] += v * shares[k, r, j]
    n_bad = bad.sum()
    if n_bad == 0:
        for b in range(n_chunks):
            out += acc[b]
    return n_bad
