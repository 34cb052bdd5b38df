"""Accessibility: travel time to the nearest facility, and how a hazard lengthens it.

Travel time is a least-cost distance over the friction raster (minutes per metre) with
scikit-image's :class:`~skimage.graph.MCP_Geometric`: a move between the centres of two
8-connected cells costs its length in metres times the mean friction of the two cells, so
an orthogonal step over 100 m cells at 0.01 min/m costs 1 minute and a diagonal step
sqrt(2) minutes. Diagonal moves may pass between two impassable cells that touch only at a
corner, as in MCP itself.

Under a hazard, cells under the footprint become impassable. Blocking cells only removes
paths, so a cell whose baseline shortest path avoids every blocked cell keeps its baseline
time exactly. :func:`access_under_hazard` therefore

1. marks as *dirty* the blocked cells and all their descendants in the baseline's
   shortest-path tree (the predecessors come from MCP's traceback), and
2. recomputes only the dirty cells with a Dijkstra search seeded from their clean
   neighbours' baseline times. A dirty cell's new best path leaves the clean set for the
   last time at some clean cell, whose time is unchanged, so seeding from every clean
   neighbour is exact. Step costs use MCP's own formula in the same order of operations,
   so the result equals a full recompute bit for bit.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from rasterio.warp import Resampling, reproject
from skimage.graph import MCP_Geometric

from geo._access_kernels import dirty_cells, repair_dirty
from geo.errors import CacheFormatError, CRSMismatchError, GridMismatchError, TargetsIgnoredWarning
from geo.grid import Grid, require_same_crs
from geo.raster import Raster
from geo.types import FacilityType

_CACHE_FORMAT = "tocsin.access_baseline.v1"
# The 8-neighbourhood in MCP's own order (skimage.graph.make_offsets(2, True)).
_OFFSETS = np.array(
    [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], dtype=np.int64
)


@dataclass(frozen=True, slots=True, eq=False)
class AccessBaseline:
    """Travel times to the nearest facility of one type with no hazard, and the tree behind.

    Computed once per region pack and facility type (the caller caches it, on disk with
    :meth:`to_bytes`); :func:`access_under_hazard` reuses it to recompute only what a
    footprint can change.

    Attributes:
        grid: the friction surface's grid; all arrays below are on it.
        facility_type: which facilities the times lead to.
        target_cells: ``(n, 2)`` int64 ``(row, col)`` of the facilities used as targets.
        times_min: minutes to the nearest target per cell, ``inf`` where unreachable.
        cost_min_per_m: the friction used, ``inf`` where impassable.
        predecessor: flat (row-major) index of each cell's predecessor on its shortest
            path, ``-1`` for targets and unreachable cells.
    """

    grid: Grid
    facility_type: str
    target_cells: np.ndarray
    times_min: np.ndarray
    cost_min_per_m: np.ndarray
    predecessor: np.ndarray

    def to_bytes(self) -> bytes:
        """Serialise to an ``.npz`` byte string (no pickle) for an on-disk cache."""
        meta = {
            "format": _CACHE_FORMAT,
            "facility_type": self.facility_type,
            "shape": list(self.grid.shape),
            "transform": list(self.grid.transform)[:6],
            "crs": self.grid.crs.to_wkt(),
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            target_cells=self.target_cells,
            times_min=self.times_min,
            cost_min_per_m=self.cost_min_per_m,
            predecessor=self.predecessor,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AccessBaseline:
        """Rebuild a baseline written by :meth:`to_bytes`.

        Raises:
            CacheFormatError: the bytes are not a baseline of this format version.
        """
        from affine import Affine

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
            if meta.get("format") != _CACHE_FORMAT:
                raise CacheFormatError(
                    f"access baseline cache has format {meta.get('format')!r}, "
                    f"expected {_CACHE_FORMAT!r}; recompute it"
                )
            grid = Grid(tuple(meta["shape"]), Affine(*meta["transform"]), meta["crs"])
            baseline = cls(
                grid=grid,
                facility_type=str(meta["facility_type"]),
                target_cells=arrays["target_cells"],
                times_min=arrays["times_min"],
                cost_min_per_m=arrays["cost_min_per_m"],
                predecessor=arrays["predecessor"],
            )
        except CacheFormatError:
            raise
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise CacheFormatError(
                f"access baseline cache is unreadable ({type(exc).__name__}: {exc}); recompute it"
            ) from exc
        for name in ("times_min", "cost_min_per_m", "predecessor"):
            if getattr(baseline, name).shape != grid.shape:
                raise CacheFormatError(
                    f"access baseline cache array {name} has shape "
                    f"{getattr(baseline, name).shape}, expected {grid.shape}; recompute it"
                )
        return baseline


def travel_time_min(
    friction: Raster, target_xy: np.ndarray, *, impassable: np.ndarray | None = None
) -> np.ndarray:
    """Minutes from every cell to the nearest target over a friction surface.

    Args:
        friction: minutes per metre per cell, on a projected, north-up grid; masked or NaN
            cells are impassable.
        target_xy: ``(n, 2)`` target coordinates ``(x, y)`` in the friction CRS.
        impassable: optional boolean mask on the friction grid of extra impassable cells.

    Returns:
        float64 array on the friction grid: minutes to the nearest target, ``inf`` where no
        target can be reached. Targets outside the grid or on impassable cells are ignored
        with a :class:`~geo.errors.TargetsIgnoredWarning` that counts them.

    Raises:
        CRSMismatchError: the friction grid is geographic (its cells are not metres).
        GridMismatchError: ``impassable`` is not on the friction grid, or the grid is rotated.
        ValueError: negative friction, or ``target_xy`` not of shape ``(n, 2)``.
    """
    cost = _cost_array(friction, impassable)
    targets = _target_cells(friction.grid, cost, target_xy, what="targets")
    times, _ = _run_mcp(cost, targets, _sampling_m(friction.grid))
    return times


def compute_access_baseline(
    friction: Raster, facilities: gpd.GeoDataFrame, facility_type: FacilityType | str
) -> AccessBaseline:
    """Travel times to the nearest facility of one type, with the shortest-path tree.

    Args:
        friction: minutes per metre per cell (see :func:`travel_time_min`).
        facilities: facilities with a ``type`` column and point geometries (other
            geometries use a point inside them), in the friction CRS.
        facility_type: which facilities are targets (e.g. ``"hospital"``).

    Returns:
        The baseline; cells with no reachable facility have ``inf`` minutes.

    Raises:
        CRSMismatchError: facilities and friction are in different CRSs.
        ValueError: ``facilities`` has no ``type`` column, or ``facility_type`` is unknown.
    """
    kind = FacilityType(facility_type).value
    if "type" not in facilities.columns:
        raise ValueError(
            f"facilities need a 'type' column ({', '.join(t.value for t in FacilityType)}); "
            f"got columns {list(facilities.columns)}"
        )
    require_same_crs(facilities.crs, friction.grid.crs, "facilities", "friction surface")
    chosen = facilities[facilities["type"].astype(str) == kind]
    geoms = chosen.geometry.values
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    points = shapely.point_on_surface(geoms)
    xy = shapely.get_coordinates(points).reshape(-1, 2)
    if len(xy) == 0:
        warnings.warn(
            f"no facility of type {kind!r}: every cell is unreachable",
            TargetsIgnoredWarning,
            stacklevel=2,
        )
    cost = _cost_array(friction, None)
    targets = _target_cells(friction.grid, cost, xy, what=f"{kind} facilities")
    times, predecessor = _run_mcp(cost, targets, _sampling_m(friction.grid), tree=True)
    return AccessBaseline(friction.grid, kind, targets, times, cost, predecessor)


def access_under_hazard(baseline: AccessBaseline, impassable: np.ndarray) -> np.ndarray:
    """Travel times with the hazard's cells made impassable, recomputing only what changes.

    Args:
        baseline: from :func:`compute_access_baseline`.
        impassable: boolean mask on the baseline's grid (e.g. the footprint rasterised).

    Returns:
        float64 minutes on the baseline grid, equal to a full recompute with those cells
        impassable: ``inf`` on blocked cells and where every facility is cut off.

    Raises:
        GridMismatchError: ``impassable`` does not have the baseline grid's shape.
    """
    blocked = _checked_mask(impassable, baseline.grid, "impassable")
    if not blocked.any():
        return baseline.times_min.copy()
    height, width = baseline.grid.shape
    lengths = _offset_lengths(_sampling_m(baseline.grid))
    dirty = dirty_cells(baseline.predecessor.ravel(), blocked.ravel())
    out = repair_dirty(
        baseline.times_min.ravel(),
        baseline.cost_min_per_m.ravel(),
        dirty,
        blocked.ravel(),
        height,
        width,
        _OFFSETS[:, 0].copy(),
        _OFFSETS[:, 1].copy(),
        lengths,
    )
    return out.reshape(height, width)


def newly_cut_off(
    baseline_min: np.ndarray, hazard_min: np.ndarray, threshold_min: float
) -> np.ndarray:
    """Cells within the threshold at baseline but beyond it under the hazard.

    These are the people beyond the access threshold *only because of* the hazard:
    ``baseline <= threshold < hazard``. NaN (no data) is never cut off.

    Raises:
        ValueError: the arrays differ in shape.
    """
    baseline_min = np.asarray(baseline_min)
    hazard_min = np.asarray(hazard_min)
    if baseline_min.shape != hazard_min.shape:
        raise ValueError(
            f"baseline times have shape {baseline_min.shape} but hazard times have shape "
            f"{hazard_min.shape}; they must be on the same grid"
        )
    return (baseline_min <= threshold_min) & (hazard_min > threshold_min)


def times_on_grid(times_min: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Travel times sampled (nearest cell) onto another grid, e.g. the population grid.

    Args:
        times_min: minutes on ``src`` (``inf`` = unreachable is kept as ``inf``).
        src: the grid of ``times_min`` (the friction grid).
        dst: the grid to sample onto; it may differ in resolution and CRS.

    Returns:
        float64 minutes on ``dst``; NaN where ``dst`` cells fall outside ``src``.
    """
    times = np.asarray(times_min, dtype=np.float64)
    if times.shape != src.shape:
        raise GridMismatchError(
            f"travel times have shape {times.shape}, but their grid has shape {src.shape}"
        )
    if src.same_as(dst):
        return times.copy()
    out = np.full(dst.shape, np.nan)
    reproject(
        source=times,
        destination=out,
        src_transform=src.transform,
        src_crs=src.crs,
        src_nodata=np.nan,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        dst_nodata=np.nan,
        resampling=Resampling.nearest,
    )
    return out


def _cost_array(friction: Raster, impassable: np.ndarray | None) -> np.ndarray:
    """Friction as float64 with ``inf`` on no-data and impassable cells."""
    name = friction.name or "friction"
    values = np.ma.filled(friction.data.astype(np.float64), np.inf)
    negative = values < 0
    if negative.any():
        raise ValueError(
            f"friction surface {name} has {int(negative.sum())} negative cells "
            f"(min {values[negative].min()} min/m); friction must be >= 0 minutes per metre"
        )
    cost = np.where(np.isnan(values), np.inf, values)
    if impassable is not None:
        cost[_checked_mask(impassable, friction.grid, "impassable")] = np.inf
    return cost


def _checked_mask(mask: np.ndarray, grid: Grid, what: str) -> np.ndarray:
    """A boolean mask of the grid's shape."""
    array = np.asarray(mask)
    if array.shape != grid.shape:
        raise GridMismatchError(f"{what} has shape {array.shape}, expected {grid.shape}")
    if array.dtype != bool:
        raise ValueError(f"{what} must be a boolean mask, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def _sampling_m(grid: Grid) -> tuple[float, float]:
    """Cell size ``(row spacing, column spacing)`` in metres, for MCP's ``sampling``."""
    if grid.crs.is_geographic:
        raise CRSMismatchError(
            f"the friction surface is in the geographic CRS {grid.crs.to_string()}, whose "
            "cells are not metres; reproject it to a projected CRS (e.g. its UTM zone) first"
        )
    if not grid.is_rectilinear:
        raise GridMismatchError("travel times need a north-up friction grid without rotation")
    unit = grid.crs.axis_info[0].unit_conversion_factor if grid.crs.axis_info else 1.0
    xres, yres = grid.res
    return (yres * unit, xres * unit)


def _offset_lengths(sampling_m: tuple[float, float]) -> np.ndarray:
    """Step lengths of :data:`_OFFSETS`, computed exactly as MCP computes them."""
    sampling = np.array(sampling_m, dtype=np.float64)
    return np.sqrt(np.sum((sampling * _OFFSETS.astype(np.int8)) ** 2, axis=1)).astype(np.float64)


def _target_cells(grid: Grid, cost: np.ndarray, target_xy: np.ndarray, what: str) -> np.ndarray:
    """``(row, col)`` of the targets inside the grid and on passable cells (deduplicated)."""
    xy = np.asarray(target_xy, dtype=np.float64)
    if xy.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"target coordinates must have shape (n, 2), got {xy.shape}")
    cols, rows = ~grid.transform @ (xy[:, 0], xy[:, 1])
    cols, rows = np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64)
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    passable = np.zeros(len(xy), dtype=bool)
    passable[inside] = np.isfinite(cost[rows[inside], cols[inside]])
    if not passable.all():
        outside = int((~inside).sum())
        blocked = int((inside & ~passable).sum())
        warnings.warn(
            f"{outside + blocked} of {len(xy)} {what} ignored: {outside} outside the friction "
            f"grid, {blocked} on impassable or no-data cells",
            TargetsIgnoredWarning,
            stacklevel=3,
        )
    cells = np.column_stack([rows[passable], cols[passable]])
    return np.unique(cells, axis=0) if len(cells) else cells.reshape(0, 2)


def _run_mcp(
    cost: np.ndarray, targets: np.ndarray, sampling_m: tuple[float, float], *, tree: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Least-cost times from the targets; with ``tree``, each cell's flat predecessor index."""
    height, width = cost.shape
    predecessor = np.full(cost.shape, -1, dtype=np.int64)
    if len(targets) == 0:
        return np.full(cost.shape, np.inf), predecessor
    mcp = MCP_Geometric(cost, fully_connected=True, sampling=sampling_m)
    if not np.array_equal(np.asarray(mcp.offsets, dtype=np.int64), _OFFSETS):
        raise AssertionError("skimage's neighbourhood order changed; update _OFFSETS")
    times, traceback = mcp.find_costs([tuple(t) for t in targets.tolist()])
    times = np.ascontiguousarray(times, dtype=np.float64)
    if tree:
        reached = traceback >= 0
        rows, cols = np.nonzero(reached)
        steps = _OFFSETS[traceback[reached]]
        predecessor[reached] = (rows - steps[:, 0]) * width + (cols - steps[:, 1])
    return times, predecessor
