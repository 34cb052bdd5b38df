"""The hazard sampled onto the population grid, and its severity class per population cell.

Population is never interpolated: people stay in the cells where the population layer put
them, and the hazard is brought to those cells. Two cases:

* the hazard is about as coarse as the population grid, or coarser: it is sampled at each
  population cell (bilinear for continuous fields, nearest for categorical ones) and the
  sample is classified, giving one class per cell (:attr:`ClassShares.index`);
* the hazard is clearly finer (a population cell holds more than
  :data:`FINER_AREA_RATIO` hazard cells): sampling at the cell centre would let one hazard
  cell decide for many, so the hazard is classified on its own grid and each class's 0/1
  indicator is averaged onto the population grid, giving the share of each population
  cell's area in each class (:attr:`ClassShares.shares`). People are then split by share.

Both use GDAL's warper on arrays (:func:`rasterio.warp.reproject`), so any pair of CRSs
works. ``NaN`` is no-data everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import ProjError
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling as RioResampling
from rasterio.warp import reproject

from geo.classes import SeverityClasses, classify
from geo.errors import (
    EmptyHazardError,
    GridMismatchError,
    InvalidOptionError,
    NoOverlapError,
)
from geo.grid import Grid
from geo.types import BBox, Resampling

FINER_AREA_RATIO = 1.5
"""A hazard counts as finer when a population cell is more than this many hazard cells in
area; below it, centre sampling loses little and keeps one class per cell."""

_RESAMPLING = {"bilinear": RioResampling.bilinear, "nearest": RioResampling.nearest}


@dataclass(frozen=True, slots=True)
class ClassShares:
    """Severity class of every population cell: one class each, or shares of the cell.

    Exactly one of ``index`` and ``shares`` is set.

    Attributes:
        index: ``uint8`` (H, W) class of each cell (0 = below the first break or no data).
        shares: ``float32`` (K, H, W): share of each cell's area in classes ``1..K``, among
            the part of the cell the hazard covers with data; class 0 holds the rest
            (``1 - shares.sum(0)``). Kept dense: K is small (3 to 10) and the population
            grid is already held in memory as float32.
        classes: the severity classes used.
    """

    classes: SeverityClasses
    index: np.ndarray | None = None
    shares: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.index is None) == (self.shares is None):
            raise InvalidOptionError("ClassShares needs exactly one of index and shares")
        if self.shares is not None and self.shares.shape[0] != self.classes.count:
            raise GridMismatchError(
                f"shares hold {self.shares.shape[0]} classes but the severity classes have "
                f"{self.classes.count}"
            )

    @classmethod
    def from_index(cls, index: np.ndarray, classes: SeverityClasses) -> ClassShares:
        """Wrap a class index (any integer array with values 0..K) as ``ClassShares``."""
        index = np.asarray(index)
        if index.size and int(index.max()) > classes.count:
            raise InvalidOptionError(
                f"class index holds class {int(index.max())} but there are only "
                f"{classes.count} classes"
            )
        return cls(classes=classes, index=index.astype(np.uint8, copy=False))

    @property
    def is_fractional(self) -> bool:
        """True when cells are split between classes by area share."""
        return self.shares is not None

    @property
    def shape(self) -> tuple[int, int]:
        """Shape (H, W) of the population grid."""
        arr = self.index if self.index is not None else self.shares
        assert arr is not None
        return (int(arr.shape[-2]), int(arr.shape[-1]))

    def dominant_index(self) -> np.ndarray:
        """One class per cell (``uint8``), for maps, footprints and facility look-ups.

        With shares, the class with the largest share, class 0 included. Ties go to the
        higher class: a cell half in danger is shown as in danger, the cautious reading.
        """
        if self.index is not None:
            return self.index
        assert self.shares is not None
        rest = 1.0 - self.shares.sum(axis=0, dtype=np.float32)
        best = rest.copy()
        out = np.zeros(self.shape, dtype=np.uint8)
        for k in range(1, self.classes.count + 1):
            share = self.shares[k - 1]
            # >= so that a later (higher) class wins a tie; tiny float noise is ignored.
            better = share >= best - 1e-6
            out[better] = k
            np.maximum(best, share, out=best)
        return out


def sample_hazard(
    values: np.ndarray,
    src: Grid,
    dst: Grid,
    *,
    resampling: Resampling,
    allow_empty: bool = False,
) -> np.ndarray:
    """Sample a hazard field at the cells of another grid (any CRS).

    Args:
        values: 2-D hazard values on ``src``; ``NaN`` is no-data.
        src: grid of ``values``.
        dst: grid to sample onto (the population grid).
        resampling: ``"bilinear"`` for continuous fields, ``"nearest"`` for categorical.
        allow_empty: return an all-``NaN`` array instead of raising when nothing overlaps
            or no valid value lands on ``dst`` (for optional layers such as friction).

    Returns:
        ``float64`` array of ``dst.shape``, ``NaN`` where there is no data or no overlap.

    Raises:
        NoOverlapError: the two grids do not overlap at all.
        EmptyHazardError: no valid hazard value lands on ``dst``.
        GridMismatchError: ``values`` does not have ``src``'s shape.
    """
    method = _check_resampling(resampling)
    values = _check_values(values, src)
    if not _overlaps(src, dst):
        if allow_empty:
            return np.full(dst.shape, np.nan)
        raise NoOverlapError(_no_overlap_message(src, dst))
    if src.same_as(dst):
        out = values.copy()
    else:
        out = _warp(values, src, dst, method)
    if not allow_empty and not np.isfinite(out).any():
        raise EmptyHazardError(
            f"no valid hazard value falls on the population grid (shape {dst.shape}, "
            f"CRS {dst.crs.to_string()}): the hazard is no-data over the whole area"
        )
    return out


def class_shares(
    values: np.ndarray,
    src: Grid,
    dst: Grid,
    classes: SeverityClasses,
    *,
    resampling: Resampling,
) -> ClassShares:
    """Severity class of every population cell, by share of area when the hazard is finer.

    Args:
        values: 2-D hazard values on ``src``; ``NaN`` is no-data.
        src: grid of ``values``.
        dst: the population grid.
        classes: severity classes to apply.
        resampling: used only when the hazard is not finer than ``dst`` (see module doc).

    Returns:
        :class:`ClassShares` with ``index`` (sampled) or ``shares`` (finer hazard).

    Raises:
        NoOverlapError: the two grids do not overlap at all.
        EmptyHazardError: no valid hazard value lands on ``dst``.
    """
    _check_resampling(resampling)  # refused even where the shares path does not use it
    values = _check_values(values, src)
    if not is_finer(src, dst):
        sampled = sample_hazard(values, src, dst, resampling=resampling)
        return ClassShares(classes=classes, index=classify(sampled, classes.breaks))
    if not _overlaps(src, dst):
        raise NoOverlapError(_no_overlap_message(src, dst))
    return ClassShares(classes=classes, shares=_average_indicators(values, src, dst, classes))


def is_finer(src: Grid, dst: Grid) -> bool:
    """True when a ``dst`` cell covers more than :data:`FINER_AREA_RATIO` ``src`` cells.

    Areas are compared in square metres at each grid's centre cell, so grids in different
    CRSs (degrees against metres) compare correctly.
    """
    return _centre_cell_area_m2(dst) > FINER_AREA_RATIO * _centre_cell_area_m2(src)


def _average_indicators(
    values: np.ndarray, src: Grid, dst: Grid, classes: SeverityClasses
) -> np.ndarray:
    """Share of each ``dst`` cell in classes 1..K: class indicators averaged by area."""
    index = classify(values, classes.breaks)
    nodata = np.isnan(values)
    shares = np.zeros((classes.count, *dst.shape), dtype=np.float32)
    indicator = np.empty(values.shape, dtype=np.float32)
    any_valid = False
    for k in range(1, classes.count + 1):
        np.equal(index, k, out=indicator, casting="unsafe")
        # No-data sub-cells take no part in the average: shares are of the covered area.
        indicator[nodata] = np.nan
        share = np.full(dst.shape, np.nan, dtype=np.float32)
        _reproject(indicator, share, src, dst, RioResampling.average)
        valid = np.isfinite(share)
        any_valid = any_valid or bool(valid.any())
        shares[k - 1] = np.where(valid, share, 0.0)
    if not any_valid:
        raise EmptyHazardError(
            f"no valid hazard value falls on the population grid (shape {dst.shape}, "
            f"CRS {dst.crs.to_string()}): the hazard is no-data over the whole area"
        )
    # Averaging rounds in float32; keep every share in [0, 1] and their sum at most 1.
    np.clip(shares, 0.0, 1.0, out=shares)
    total = shares.sum(axis=0)
    over = total > 1.0
    if over.any():
        shares[:, over] /= total[over]
    return shares


def _warp(values: np.ndarray, src: Grid, dst: Grid, method: RioResampling) -> np.ndarray:
    out = np.full(dst.shape, np.nan, dtype=np.float64)
    _reproject(values, out, src, dst, method)
    return out


def _reproject(
    source: np.ndarray, destination: np.ndarray, src: Grid, dst: Grid, method: RioResampling
) -> None:
    reproject(
        source=np.ascontiguousarray(source),
        destination=destination,
        src_transform=src.transform,
        src_crs=_rio_crs(src.crs),
        dst_transform=dst.transform,
        dst_crs=_rio_crs(dst.crs),
        src_nodata=np.nan,
        dst_nodata=np.nan,
        resampling=method,
    )


def _rio_crs(crs: CRS) -> RioCRS:
    return RioCRS.from_wkt(crs.to_wkt())


def _check_resampling(resampling: str) -> RioResampling:
    if resampling not in _RESAMPLING:
        raise InvalidOptionError(
            f"unknown resampling {resampling!r}; expected one of {list(get_args(Resampling))}"
        )
    return _RESAMPLING[resampling]


def _check_values(values: np.ndarray, src: Grid) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != src.shape:
        raise GridMismatchError(
            f"hazard values have shape {arr.shape} but their grid has shape {src.shape}"
        )
    return arr


def _overlaps(src: Grid, dst: Grid) -> bool:
    """True unless ``src`` bounds, brought into ``dst``'s CRS, miss ``dst`` entirely."""
    if src.crs == dst.crs:
        return _bbox_intersect(src.bounds, dst.bounds, dst.crs)
    try:
        transformer = Transformer.from_crs(src.crs, dst.crs, always_xy=True)
        moved = transformer.transform_bounds(*src.bounds, densify_pts=21)
    except ProjError:
        return True  # cannot tell cheaply: let the warp decide (empty -> EmptyHazardError)
    if not np.all(np.isfinite(moved)):
        return True
    return _bbox_intersect(moved, dst.bounds, dst.crs)


def _bbox_intersect(a: BBox, b: BBox, crs: CRS) -> bool:
    shifts = (0.0, 360.0, -360.0) if crs.is_geographic else (0.0,)
    for dx in shifts:
        # pyproj returns minx > maxx for boxes crossing the antimeridian: test both halves.
        for lo, hi in _x_ranges(a[0] + dx, a[2] + dx):
            if lo < b[2] and hi > b[0] and a[1] < b[3] and a[3] > b[1]:
                return True
    return False


def _x_ranges(minx: float, maxx: float) -> list[tuple[float, float]]:
    if minx <= maxx:
        return [(minx, maxx)]
    return [(minx, maxx + 360.0)]  # crosses the antimeridian: continue past 180


def _centre_cell_area_m2(grid: Grid) -> float:
    col, row = grid.width // 2, grid.height // 2
    cell = Grid((1, 1), grid.transform @ Affine.translation(col, row), grid.crs)
    return float(cell.cell_areas_m2()[0, 0])


def _no_overlap_message(src: Grid, dst: Grid) -> str:
    return (
        f"the hazard grid (bounds {tuple(round(v, 6) for v in src.bounds)} in "
        f"{src.crs.to_string()}) does not overlap the population grid (bounds "
        f"{tuple(round(v, 6) for v in dst.bounds)} in {dst.crs.to_string()})"
    )
