"""Where a subscriber's area lies on the population grid: its window, in cell coordinates.

Exposure inside one subscriber's area is computed on the window of cells its polygons and
zones can touch, never on the whole grid: a region of 10,000 x 10,000 cells with 10,000
subscribers stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import shapely
from affine import Affine

from alerts.model import Subscription
from geo.grid import Grid
from geo.raster import Raster
from geo.region import GroupLayer, RegionPack
from geo.transformers import transformer
from geo.zones import ZoneRaster

SEGMENT_MAX_DEG = 0.1
"""Lon/lat edges are densified to this before projection, so they follow its curvature."""
_WGS84 = "EPSG:4326"


def to_cell_coords(parts: np.ndarray, grid: Grid) -> np.ndarray:
    to_grid = transformer(_WGS84, grid.crs)
    inverse = ~grid.transform

    def project(lonlat: np.ndarray) -> np.ndarray:
        x, y = to_grid.transform(lonlat[:, 0], lonlat[:, 1])
        col, row = inverse @ (np.asarray(x), np.asarray(y))
        return np.column_stack([col, row])

    return shapely.transform(parts, project) if len(parts) else parts


@dataclass(frozen=True, slots=True)
class Placed:
    """A mask of a window of the grid, with the window's first row and column."""

    mask: np.ndarray
    window: tuple[slice, slice]

    @property
    def row0(self) -> int:
        return int(self.window[0].start or 0)

    @property
    def col0(self) -> int:
        return int(self.window[1].start or 0)


def area_window(subscription: Subscription, zone_raster: ZoneRaster, positions: np.ndarray,
            region: RegionPack | None) -> tuple[slice, slice]:
    """The cells that can hold the subscriber's area: its polygons' and zones' bounds."""
    grid = zone_raster.grid
    boxes = []
    if subscription.areas_wkt:
        areas = shapely.segmentize(shapely.from_wkt(np.array(subscription.areas_wkt,
                                                             dtype=object)), SEGMENT_MAX_DEG)
        cells = to_cell_coords(np.asarray(areas, dtype=object), grid)
        boxes += [shapely.bounds(c) for c in cells]
    if len(positions):
        if region is not None and region.zones is not None:
            zones = region.zones.to_crs(grid.crs)
            picked = zones[zones["zone_id"].isin(subscription.zone_codes)]
            cells = _to_cell_coords_projected(np.asarray(picked.geometry, dtype=object), grid)
            boxes += [shapely.bounds(c) for c in cells]
        else:
            return slice(0, grid.height), slice(0, grid.width)
    if not boxes:
        return slice(0, 0), slice(0, 0)
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if not np.isfinite(b).all():
        return slice(0, grid.height), slice(0, grid.width)
    # One cell of margin: cell-centre tests near the edge must see their cells.
    col0, row0 = np.floor(b[:, 0].min()) - 1, np.floor(b[:, 1].min()) - 1
    col1, row1 = np.ceil(b[:, 2].max()) + 1, np.ceil(b[:, 3].max()) + 1
    row0, row1 = int(np.clip(row0, 0, grid.height)), int(np.clip(row1, 0, grid.height))
    col0, col1 = int(np.clip(col0, 0, grid.width)), int(np.clip(col1, 0, grid.width))
    return slice(row0, max(row0, row1)), slice(col0, max(col0, col1))


def _to_cell_coords_projected(parts: np.ndarray, grid: Grid) -> np.ndarray:
    """Geometries in the grid's CRS to (col, row) cell coordinates."""
    inverse = ~grid.transform

    def to_cells(xy: np.ndarray) -> np.ndarray:
        col, row = inverse @ (xy[:, 0], xy[:, 1])
        return np.column_stack([col, row])

    return shapely.transform(parts, to_cells) if len(parts) else parts


def sub_grid(grid: Grid, window: tuple[slice, slice]) -> Grid:
    """The grid of a window of ``grid``."""
    rows, cols = window
    height = (rows.stop or 0) - (rows.start or 0)
    width = (cols.stop or 0) - (cols.start or 0)
    transform = grid.transform @ Affine.translation(cols.start or 0, rows.start or 0)
    return Grid((height, width), transform, grid.crs)


def window_layer(layer: GroupLayer, window: tuple[slice, slice], sub_grid: Grid) -> GroupLayer:
    """A group layer cut to a window (its rate raster and registry counts, if any)."""
    def cut(raster: Raster | None) -> Raster | None:
        if raster is None:
            return None
        return Raster(raster.data[window], sub_grid, raster.units, raster.name)

    return replace(layer, rate_raster=cut(layer.rate_raster),
                   registry_counts=cut(layer.registry_counts))
