"""Exposure by zone and severity class: the fused kernel and the tables built from it.

:func:`accumulate` is the hot loop of every overlay. It adds every layer's value (people,
people of each vulnerable group) into a ``(layer, zone, class)`` table. Zones are fixed per
region pack, so it does not read the zone index cell by cell: it walks the index's runs of
equal zone (:class:`~geo.zones.ZoneRuns`, computed once and cached on the
:class:`~geo.zones.ZoneRaster`), and per run reads only the class index (``uint8``) and the
layers (``float32``): five bytes a cell for one layer, no temporaries. Within a run, one
vectorised pass gives the sums of the first cell's class and its two neighbours and the
run's class range; a class outside those takes one more masked pass over the run, which is
still in L1. Runs are split into blocks handled in parallel, each with its own accumulator
(no atomics, no false sharing), summed at the end. ``NaN`` layer cells count as 0.

Sums are ``float64``: summing 10^8 float32 cells in float32 would lose whole people.
The last zone row is "outside every zone" (zone index ``-1``), so the table's grand total is
always the grid total.

The compiled kernels live in :mod:`geo._exposure_kernels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numba
import numpy as np
import pandas as pd

from geo._exposure_kernels import _sum_index_kernel, _sum_shares_kernel
from geo.classes import SeverityClasses
from geo.errors import GeoError, GridMismatchError, MissingZoneRateError
from geo.grid import Grid
from geo.region import GroupLayer
from geo.sampling import ClassShares
from geo.types import FacilityType
from geo.zones import OUTSIDE_ZONE_ID, ZoneRaster, ZoneRuns, zone_runs

_CHUNKS_PER_THREAD = 4  # blocks of runs per thread, for load balance
_ACCUMULATOR_BUDGET_BYTES = 64 * 2**20  # per-block tables together stay below this

OUTSIDE_ZONE_NAME = "outside every zone"
ALL_ZONE_ID = "all"
"""Zone id of the single row per class when there are no zones."""


def accumulate(
    zone_index: np.ndarray | ZoneRaster,
    class_index: np.ndarray | ClassShares,
    layers: Sequence[np.ndarray],
    n_zones: int,
    n_classes: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Sum every layer by zone and severity class in one parallel pass over the zone runs.

    Args:
        zone_index: the :class:`~geo.zones.ZoneRaster` (its cached runs are used: the fast
            path for repeated overlays), or an integer (``int16``/``int32``) zone of every
            cell, ``-1`` outside (its runs are computed for this call: one extra pass).
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
        GeoError: a zone index ``>= n_zones`` or a class index ``> n_classes``; a zone
            raster with other than ``n_zones`` zones.
    """
    if isinstance(class_index, ClassShares):
        if class_index.shares is not None:
            return accumulate_shares(
                zone_index, class_index.shares, layers, n_zones, n_classes, out
            )
        assert class_index.index is not None
        class_index = class_index.index
    class_index = np.asarray(class_index)
    runs, stack = _check_inputs(zone_index, class_index.shape, layers, n_zones)
    cls = np.ascontiguousarray(class_index)
    if cls.dtype != np.uint8:
        cls = _as_uint8_classes(cls, n_classes)
    out = _check_out(out, len(stack), n_zones, n_classes)
    if stack:
        blocks = _run_blocks(runs, out.size)
        bad = _sum_index_kernel(runs.starts, runs.zones, cls.reshape(-1), stack, n_zones,
                                n_classes, blocks, out)
        _raise_on_bad(int(bad), runs, cls, n_zones, n_classes)
    return out


def accumulate_shares(
    zone_index: np.ndarray | ZoneRaster,
    shares: np.ndarray,
    layers: Sequence[np.ndarray],
    n_zones: int,
    n_classes: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Like :func:`accumulate`, but each cell's value is split between classes by share.

    Args:
        zone_index: the zone raster, or an integer zone of every cell (``-1`` outside).
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
    runs, stack = _check_inputs(zone_index, shares.shape[1:], layers, n_zones)
    out = _check_out(out, len(stack), n_zones, n_classes)
    if stack:
        blocks = _run_blocks(runs, out.size)
        longest = int(np.diff(runs.starts).max(initial=0))
        bad = _sum_shares_kernel(runs.starts, runs.zones, shares.reshape(n_classes, -1), stack,
                                 n_zones, blocks, longest, out)
        _raise_on_bad(int(bad), runs, None, n_zones, n_classes)
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
    zone_index: np.ndarray | ZoneRaster,
    shape: tuple[int, ...],
    layers: Sequence[np.ndarray],
    n_zones: int,
) -> tuple[ZoneRuns, tuple[np.ndarray, ...]]:
    """Runs of the zones and the layers as flat arrays, after checking every shape."""
    if isinstance(zone_index, ZoneRaster) and zone_index.n_zones != n_zones:
        raise GeoError(f"the zone raster has {zone_index.n_zones} zones, not n_zones={n_zones}")
    index = zone_index.index if isinstance(zone_index, ZoneRaster) else np.asarray(zone_index)
    if index.dtype.kind not in "iu":
        raise GeoError(f"zone index must be integers, got {index.dtype}")
    if tuple(index.shape) != tuple(shape):
        raise GridMismatchError(f"zone index has shape {index.shape}, classes have {tuple(shape)}")
    arrays = [np.asarray(layer) for layer in layers]
    for i, arr in enumerate(arrays):
        if arr.shape != index.shape:
            raise GridMismatchError(
                f"layer {i} has shape {arr.shape}, zone index has {index.shape}"
            )
    runs = zone_index.runs if isinstance(zone_index, ZoneRaster) else zone_runs(index)
    # One dtype for all layers, so the kernel takes a homogeneous tuple; float32 unless a
    # layer is float64 (then every layer is read in float64).
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return runs, tuple(np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrays)


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
    bad: int, runs: ZoneRuns, cls: np.ndarray | None, n_zones: int, n_classes: int
) -> None:
    if bad == 0:
        return
    detail = f"zone indices up to {int(runs.zones.max())} for {n_zones} zones"
    if cls is not None:
        detail += f", class indices up to {int(cls.max())} for {n_classes} classes"
    raise GeoError(f"{bad} cells have an index out of range ({detail}); nothing was added")


def _run_blocks(runs: ZoneRuns, table_size: int) -> np.ndarray:
    """First run of each parallel block (plus the end): about equal cells per block.

    A few blocks per thread, fewer when the per-block tables would be large.
    """
    threads = numba.get_num_threads()
    by_budget = max(threads, _ACCUMULATOR_BUDGET_BYTES // max(1, 8 * table_size))
    n_blocks = max(1, min(runs.n_runs, threads * _CHUNKS_PER_THREAD, by_budget))
    n_cells = int(runs.starts[-1])
    targets = (np.arange(n_blocks + 1, dtype=np.int64) * n_cells) // n_blocks
    return np.searchsorted(runs.starts, targets.astype(np.uint64)).astype(np.int64)
