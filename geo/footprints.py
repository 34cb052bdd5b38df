"""Footprints: the severity classes of a hazard grid as (multi)polygons with their areas.

A footprint is drawn for alerts and maps, so it may be generalised, but it must never
shrink: the polygons of ``class >= k`` cover every cell whose class is ``>= k``. We get
that property by construction instead of by repair:

1. Max-pool the class grid by a factor ``f`` (each ``f x f`` block takes the highest class
   inside it). A pooled block covers all of its cells, so a pooled cell of class ``>= k``
   covers every original cell of class ``>= k`` in it.
2. Polygonise the pooled grid with 4-connectivity (GDAL's polygoniser, C speed). Its
   outlines are pure staircases along pooled cell edges: nothing is cut off, no vertex is
   moved, and polygons of one class never share an edge, so no union is needed.
3. Pick ``f`` as the finest factor on a ladder whose largest polygon stays within
   ``max_vertices``: coarser pooling is the only simplification, and it only grows.

Blocks at the right and bottom edges may stick out of the grid; their outer coordinates
are clamped to the grid's extent (a strictly increasing map of the lattice lines, so the
outlines stay valid). Areas are computed in an equal-area sense: planar when the CRS is an
equal-area projection, geodesic on the CRS's ellipsoid otherwise.
"""

from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes

from geo.classes import SeverityClasses
from geo.errors import EmptyFootprintWarning, GridMismatchError
from geo.grid import Grid

# The pooled grid is at most this many cells a side: finer detail than ~2000 cells across
# is more than any CAP area or map can carry, and it bounds the polygonising time.
MAX_POOLED_SIDE_CELLS = 2048
# Pool factors tried (times the finest allowed factor): steps of about sqrt(2), each a
# multiple of the previous power of two, so coarser levels pool exactly from finer ones.
_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
# Planar area is exact in these projections (PROJ method names, lower case).
_EQUAL_AREA_METHODS = ("equal area", "mollweide", "sinusoidal", "eckert iv", "eckert vi")

COLUMNS = ["class", "label", "lower", "upper", "area_km2", "cell_area_km2", "cells", "geometry"]


def build_footprints(
    class_index: np.ndarray,
    grid: Grid,
    classes: SeverityClasses,
    *,
    max_vertices: int = 2000,
    min_area_cells: int = 1,
) -> gpd.GeoDataFrame:
    """Polygons of every severity class present in a classified hazard grid.

    Args:
        class_index: ``(height, width)`` integer array of class indices (0 = below the
            first break or no-data), as returned by :func:`geo.classes.classify`.
        grid: where the cells are; the output is in ``grid.crs``.
        classes: the severity classes the indices refer to (labels and bounds).
        max_vertices: most vertices (all rings, closing points not counted) any single
            polygon may have; the grid is pooled more coarsely until this holds.
        min_area_cells: smallest polygon wanted, in cells: the pool factor is at least
            ``ceil(sqrt(min_area_cells))``, so each polygon holds at least one pooled block
            (blocks cut by the grid's right or bottom edge may be smaller).

    Returns:
        One row per class ``k >= 1`` present: ``class``, ``label``, ``lower``, ``upper``,
        ``area_km2`` (of the generalised polygons), ``cell_area_km2`` (exact: number of cells
        times their true area), ``cells`` and ``geometry`` (a MultiPolygon, possibly empty
        when coarser pooling absorbed the class into a higher one). For every ``k`` the
        polygons of classes ``>= k`` cover all cells of class ``>= k``, so their summed
        ``area_km2`` is at least their summed ``cell_area_km2``. ``attrs["pool_factor"]``
        records the pooling used. An empty frame (with these columns) and an
        :class:`~geo.errors.EmptyFootprintWarning` when no cell is in any class.

    Raises:
        GridMismatchError: ``class_index`` is not a 2-D array of the grid's shape.
        ValueError: class indices outside ``0..classes.count``, or bad tuning arguments.
    """
    index = _checked_index(class_index, grid, classes)
    if max_vertices < 4:
        raise ValueError(f"max_vertices must be at least 4 (one square), got {max_vertices}")
    if min_area_cells < 1:
        raise ValueError(f"min_area_cells must be at least 1, got {min_area_cells}")

    counts, cell_areas_m2 = _class_cells_and_areas(index, grid, classes.count)
    present = [k for k in range(1, classes.count + 1) if counts[k] > 0]
    if not present:
        warnings.warn(
            "no cell of the hazard grid is in any severity class; the footprint is empty",
            EmptyFootprintWarning,
            stacklevel=2,
        )
        return _frame([], grid, pool_factor=0)

    factor, polygons = _polygonise_within_budget(index, grid, max_vertices, min_area_cells)
    geoms = _multipolygons_by_class(polygons, present)
    areas_km2 = _areas_km2(geoms, grid, factor)
    rows = [
        {
            "class": k,
            "label": classes.label(k),
            "lower": classes.lower(k),
            "upper": classes.upper(k),
            "area_km2": float(area),
            "cell_area_km2": float(cell_areas_m2[k]) / 1e6,
            "cells": int(counts[k]),
            "geometry": geom,
        }
        for k, geom, area in zip(present, geoms, areas_km2, strict=True)
    ]
    return _frame(rows, grid, pool_factor=factor)


def _checked_index(class_index: np.ndarray, grid: Grid, classes: SeverityClasses) -> np.ndarray:
    """The class grid as C-contiguous uint8, after checking its shape, type and range."""
    index = np.asarray(class_index)
    if index.ndim != 2 or index.shape != grid.shape:
        raise GridMismatchError(
            f"class_index has shape {index.shape}, but the grid has shape {grid.shape}"
        )
    if index.dtype.kind not in "iub":
        raise ValueError(f"class_index must hold integer class indices, got dtype {index.dtype}")
    if index.dtype != np.uint8:
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"class_index values must be 0..{classes.count}, got {lo}..{hi}")
        index = index.astype(np.uint8)
    top = int(index.max())
    if top > classes.count:
        raise ValueError(
            f"class_index holds class {top}, but only {classes.count} classes are defined"
        )
    return np.ascontiguousarray(index)


def _class_cells_and_areas(
    index: np.ndarray, grid: Grid, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cell counts and exact true areas (m2) per class ``0..n_classes``.

    Never builds a full float array of cell areas for large grids: geographic cells are
    equal along a row, equal-area projections have one cell area, and other projections
    are summed in blocks of rows.
    """
    counts = np.zeros(n_classes + 1, dtype=np.int64)
    areas = np.zeros(n_classes + 1)
    if grid.crs.is_geographic and grid.is_rectilinear:
        column = Grid((grid.height, 1), grid.transform, grid.crs)
        row_areas = column.cell_areas_m2()[:, 0]
        for k in range(1, n_classes + 1):
            per_row = np.count_nonzero(index == k, axis=1)
            counts[k] = per_row.sum()
            areas[k] = float(per_row @ row_areas)
    elif _is_equal_area(grid):
        cell_m2 = float(Grid((1, 1), grid.transform, grid.crs).cell_areas_m2()[0, 0])
        for k in range(1, n_classes + 1):
            counts[k] = np.count_nonzero(index == k)
        areas = counts * cell_m2
    else:
        block_rows = max(1, 4_000_000 // grid.width)
        for row0 in range(0, grid.height, block_rows):
            rows = min(block_rows, grid.height - row0)
            sub = Grid((rows, grid.width), grid.transform @ Affine.translation(0, row0), grid.crs)
            block = index[row0 : row0 + rows]
            counts += np.bincount(block.ravel(), minlength=256)[: n_classes + 1]
            areas += np.bincount(block.ravel(), weights=sub.cell_areas_m2().ravel(), minlength=256)[
                : n_classes + 1
            ]
    return counts, areas


def _is_equal_area(grid: Grid) -> bool:
    """True when planar areas in the grid's CRS are true areas."""
    if grid.crs.is_geographic:
        return False
    operation = grid.crs.coordinate_operation
    method = (operation.method_name if operation is not None else "").lower()
    return any(name in method for name in _EQUAL_AREA_METHODS)


def _max_pool(index: np.ndarray, factor: int) -> np.ndarray:
    """Highest class in each ``factor x factor`` block (edge blocks may be partial)."""
    if factor == 1:
        return index
    return _max_pool_rows(_max_pool_rows(index, factor).T, factor).T.copy()


def _max_pool_rows(index: np.ndarray, factor: int) -> np.ndarray:
    """Max over each run of ``factor`` rows (strided slices stream memory in row order)."""
    out = np.zeros((-(-index.shape[0] // factor), index.shape[1]), dtype=index.dtype)
    for offset in range(factor):
        part = index[offset::factor]
        np.maximum(out[: part.shape[0]], part, out=out[: part.shape[0]])
    return out


def _polygonise_within_budget(
    index: np.ndarray, grid: Grid, max_vertices: int, min_area_cells: int
) -> tuple[int, list[tuple[list[np.ndarray], int]]]:
    """The finest pool factor whose polygons fit the vertex budget, and those polygons.

    Levels are tried from coarse to fine and the search stops at the first level that
    breaks the budget, so the finest level actually polygonised is at most one ladder step
    finer than the answer (the cost is dominated by that level).
    """
    base = max(
        math.ceil(math.sqrt(min_area_cells)),
        math.ceil(max(grid.shape) / MAX_POOLED_SIDE_CELLS),
    )
    base_grid = _max_pool(index, base)
    steps = [m for m in _LADDER if m == 1 or base * m < 2 * max(grid.shape)]
    best: tuple[int, list[tuple[list, int]]] | None = None
    for step in reversed(steps):
        polygons = _polygonise(_max_pool(base_grid, step))
        if max((_vertex_count(rings) for rings, _ in polygons), default=0) > max_vertices:
            break
        best = (base * step, polygons)
    if best is None:  # a single pooled block has 4 vertices, so this never happens
        raise AssertionError("no pool factor fits the vertex budget")
    factor, polygons = best
    return factor, [(_to_world(rings, factor, grid), k) for rings, k in polygons]


def _polygonise(pooled: np.ndarray) -> list[tuple[list, int]]:
    """Rings (pooled pixel coordinates) and class of every 4-connected region of class >= 1."""
    return [
        (geom["coordinates"], int(value))
        for geom, value in shapes(pooled, mask=pooled > 0, connectivity=4)
    ]


def _vertex_count(rings: list) -> int:
    """Vertices of a polygon, not counting the repeated closing point of each ring."""
    return sum(len(ring) - 1 for ring in rings)


def _to_world(rings: list, factor: int, grid: Grid) -> list[np.ndarray]:
    """Pooled pixel coordinates -> grid pixel coordinates (clamped) -> CRS coordinates."""
    out = []
    for coords in rings:
        ring = np.asarray(coords, dtype=np.float64)
        cols = np.minimum(ring[:, 0] * factor, grid.width)
        rows = np.minimum(ring[:, 1] * factor, grid.height)
        xs, ys = grid.transform @ (cols, rows)
        out.append(np.column_stack([xs, ys]))
    return out


def _multipolygons_by_class(
    polygons: list[tuple[list[np.ndarray], int]], present: list[int]
) -> list[shapely.MultiPolygon]:
    """One MultiPolygon per present class (empty when pooling absorbed the class)."""
    by_class: dict[int, list[shapely.Polygon]] = {k: [] for k in present}
    for rings, k in polygons:
        by_class[k].append(shapely.Polygon(rings[0], rings[1:]))
    geoms = []
    for k in present:
        parts = np.asarray(by_class[k], dtype=object)
        bad = ~shapely.is_valid(parts) if len(parts) else np.zeros(0, dtype=bool)
        if bad.any():  # a self-touching staircase ring: make_valid keeps its exact area
            parts[bad] = shapely.make_valid(parts[bad])
            parts = shapely.get_parts(parts)
            parts = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
        geoms.append(shapely.MultiPolygon(list(parts)))
    return geoms


def _areas_km2(geoms: list[shapely.MultiPolygon], grid: Grid, factor: int) -> np.ndarray:
    """True areas of the footprints: planar in equal-area CRSs, geodesic otherwise."""
    if _is_equal_area(grid):
        unit = grid.crs.axis_info[0].unit_conversion_factor if grid.crs.axis_info else 1.0
        return shapely.area(np.asarray(geoms, dtype=object)) * unit * unit / 1e6
    from pyproj import Transformer

    geod = grid.crs.get_geod()
    if geod is None:
        raise ValueError(f"CRS {grid.crs.to_string()} has no ellipsoid to measure areas on")
    to_lonlat = Transformer.from_crs(grid.crs, grid.crs.geodetic_crs, always_xy=True)
    # Densify to one pooled cell so long straight edges follow the grid, not a geodesic.
    step = factor * min(grid.res)
    out = np.empty(len(geoms))
    for i, geom in enumerate(geoms):
        dense = shapely.segmentize(geom, step)
        lonlat = shapely.transform(dense, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
        area_m2, _ = geod.geometry_area_perimeter(shapely.orient_polygons(lonlat))
        out[i] = abs(area_m2) / 1e6
    return out


def _frame(rows: list[dict], grid: Grid, *, pool_factor: int) -> gpd.GeoDataFrame:
    """The footprint frame with fixed columns and dtypes, even when empty."""
    frame = gpd.GeoDataFrame(rows, columns=COLUMNS, geometry="geometry", crs=grid.crs)
    frame = frame.astype(
        {
            "class": "int64",
            "lower": "float64",
            "upper": "float64",
            "area_km2": "float64",
            "cell_area_km2": "float64",
            "cells": "int64",
        }
    )
    frame.attrs["pool_factor"] = pool_factor
    return frame
