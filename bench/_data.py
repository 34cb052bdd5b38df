"""Deterministic synthetic data for the benchmarks: population, zones and a hazard.

Every maker is seeded and cheap enough for a 10,000 x 10,000 grid (a few seconds). The
fields are smooth at a coarse scale and noisy per cell, like real gridded population
(urban clusters, empty countryside, a no-data lake) and flood depth (a river valley).
Population can also be made one block of rows at a time (:func:`population_block`), so a
30,000 x 30,000 file can be written without holding it in memory.

All grids are EPSG:3035 with 100 m cells, see :func:`make_grid`.
"""

from __future__ import annotations

from functools import lru_cache

import geopandas as gpd
import numpy as np
import shapely
from rasterio.features import rasterize

from geo.grid import Grid

CELL_SIZE_M = 100.0
# Lower-left corner inside the valid area of EPSG:3035 (central Europe).
ORIGIN_X_M = 4_000_000.0
ORIGIN_Y_M = 2_500_000.0
# Coarse fields are computed at 1/COARSE_FACTOR of the resolution and bilinearly upsampled.
COARSE_FACTOR = 16
CLUSTERS_PER_MEGACELL = 10  # urban centres per 1000 x 1000 cells
NOISE_CHUNK_ROWS = 256  # per-cell noise is drawn in fixed row chunks so blocks agree


def make_grid(shape: tuple[int, int]) -> Grid:
    """The EPSG:3035 grid with 100 m cells that every synthetic layer of ``shape`` sits on."""
    height, width = shape
    bounds = (
        ORIGIN_X_M,
        ORIGIN_Y_M,
        ORIGIN_X_M + width * CELL_SIZE_M,
        ORIGIN_Y_M + height * CELL_SIZE_M,
    )
    return Grid.from_bounds(bounds, shape, "EPSG:3035")


def make_population(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """People per cell (float32), urban clusters over sparse countryside, NaN over a lake."""
    return population_block(shape, seed, 0, shape[0])


def population_block(shape: tuple[int, int], seed: int, row_off: int, n_rows: int) -> np.ndarray:
    """Rows ``row_off .. row_off + n_rows`` of :func:`make_population` (same values)."""
    coarse = _coarse_population(shape, seed)
    rows = min(n_rows, shape[0] - row_off)
    block = _upsample_rows(coarse, shape, row_off, rows)
    noise = _noise_rows(shape[1], seed, row_off, rows)
    # Per-cell noise: log-normal around the smooth density; a third of sparse cells empty.
    block *= np.exp(0.5 * noise, dtype=np.float32)
    block[(block < 2.0) & (noise > 0.5)] = 0.0
    lake = _upsample_rows(_coarse_lake(shape, seed), shape, row_off, rows) > 0.5
    block[lake] = np.nan
    return block


def make_hazard(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Flood depth in metres (float32) along a meandering valley, NaN outside the model."""
    height, width = shape
    ch, cw = _coarse_shape(shape)
    rng = np.random.default_rng((seed, 2))
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    centre = ch * (0.5 + 0.25 * np.sin(2 * np.pi * xx / cw * 1.5 + phase))
    distance = np.abs(yy - centre) / max(ch, 1)
    coarse = 3.0 * np.exp(-((distance / 0.12) ** 2)) + 0.2 * rng.standard_normal((ch, cw))
    coarse = np.clip(coarse, 0.0, None).astype(np.float32)
    depth = _upsample_rows(coarse, shape, 0, height)
    # The model domain stops short of the eastern edge: the last 5 % of columns are no-data.
    depth[:, int(width * 0.95) :] = np.nan
    return depth


def make_zone_polygons(shape: tuple[int, int], n_zones: int, seed: int = 0) -> gpd.GeoDataFrame:
    """``n_zones`` Voronoi zones tiling the grid of ``shape``: columns zone_id, name, geometry."""
    grid = make_grid(shape)
    minx, miny, maxx, maxy = grid.bounds
    rng = np.random.default_rng((seed, 3))
    xs = rng.uniform(minx, maxx, n_zones)
    ys = rng.uniform(miny, maxy, n_zones)
    points = shapely.multipoints(np.column_stack([xs, ys]))
    box = shapely.box(minx, miny, maxx, maxy)
    cells = shapely.get_parts(shapely.voronoi_polygons(points, extend_to=box))
    cells = shapely.intersection(cells, box)
    # voronoi_polygons does not keep the input order: order zones by their seed point.
    seeds = shapely.points(xs, ys)
    order = np.empty(n_zones, dtype=np.int64)
    tree = shapely.STRtree(cells)
    pairs = tree.query(seeds, predicate="intersects")
    order[pairs[0]] = pairs[1]
    geoms = cells[order]
    ids = [f"Z{i:05d}" for i in range(n_zones)]
    return gpd.GeoDataFrame(
        {"zone_id": ids, "name": [f"Zone {i}" for i in range(n_zones)]},
        geometry=geoms,
        crs=grid.crs,
    )


def make_zones_raster(shape: tuple[int, int], n_zones: int, seed: int = 0) -> np.ndarray:
    """Zone index per cell (int16 below 32,767 zones, else int32) of :func:`make_zone_polygons`.

    Cell-centre rasterisation, the same rule as :func:`geo.zones.rasterize_zones`; -1 is
    outside every zone (never happens here: the zones tile the grid).
    """
    grid = make_grid(shape)
    zones = make_zone_polygons(shape, n_zones, seed)
    dtype = np.int16 if n_zones < 32767 else np.int32
    return rasterize(
        zip(zones.geometry.values, range(n_zones), strict=True),
        out_shape=shape,
        transform=grid.transform,
        fill=-1,
        all_touched=False,
        dtype=np.int32,
    ).astype(dtype)


def _noise_rows(width: int, seed: int, row_off: int, n_rows: int) -> np.ndarray:
    """Standard normal noise for rows ``row_off..row_off+n_rows``, the same however split."""
    out = np.empty((n_rows, width), dtype=np.float32)
    first, last = row_off // NOISE_CHUNK_ROWS, (row_off + n_rows - 1) // NOISE_CHUNK_ROWS
    for chunk in range(first, last + 1):
        rng = np.random.default_rng((seed, 1, chunk))
        noise = rng.standard_normal((NOISE_CHUNK_ROWS, width), dtype=np.float32)
        lo = max(row_off, chunk * NOISE_CHUNK_ROWS)
        hi = min(row_off + n_rows, (chunk + 1) * NOISE_CHUNK_ROWS)
        out[lo - row_off : hi - row_off] = noise[
            lo - chunk * NOISE_CHUNK_ROWS : hi - chunk * NOISE_CHUNK_ROWS
        ]
    return out


def _coarse_shape(shape: tuple[int, int]) -> tuple[int, int]:
    return (max(2, -(-shape[0] // COARSE_FACTOR)), max(2, -(-shape[1] // COARSE_FACTOR)))


@lru_cache(maxsize=4)
def _coarse_population(shape: tuple[int, int], seed: int) -> np.ndarray:
    ch, cw = _coarse_shape(shape)
    rng = np.random.default_rng((seed, 0))
    n_clusters = max(3, int(CLUSTERS_PER_MEGACELL * shape[0] * shape[1] / 1e6))
    density = np.full((ch, cw), 0.5, dtype=np.float64)
    # City sizes are heavy-tailed (Zipf-like): a few big cities, many villages.
    cy = rng.uniform(0, ch, n_clusters)
    cx = rng.uniform(0, cw, n_clusters)
    peak = 5.0 * rng.pareto(1.3, n_clusters).clip(0.1, 100.0)
    radius = rng.uniform(0.3, 1.5, n_clusters) * np.sqrt(peak / 5.0 + 0.5)
    for y, x, p, r in zip(cy, cx, peak, radius, strict=True):
        half = int(4 * r) + 1
        y0, y1 = max(0, int(y) - half), min(ch, int(y) + half + 1)
        x0, x1 = max(0, int(x) - half), min(cw, int(x) + half + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        density[y0:y1, x0:x1] += p * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r))
    return density.astype(np.float32)


@lru_cache(maxsize=4)
def _coarse_lake(shape: tuple[int, int], seed: int) -> np.ndarray:
    ch, cw = _coarse_shape(shape)
    rng = np.random.default_rng((seed, 4))
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float64)
    y, x = rng.uniform(0.2, 0.8) * ch, rng.uniform(0.2, 0.8) * cw
    r = 0.06 * min(ch, cw)
    return (np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r))).astype(np.float32)


def _upsample_rows(
    coarse: np.ndarray, shape: tuple[int, int], row_off: int, n_rows: int
) -> np.ndarray:
    """Bilinear upsampling of ``coarse`` onto rows ``row_off..row_off+n_rows`` of ``shape``."""
    ch, cw = coarse.shape
    height, width = shape
    fy = (np.arange(row_off, row_off + n_rows) + 0.5) * ch / height - 0.5
    fx = (np.arange(width) + 0.5) * cw / width - 0.5
    y0 = np.clip(np.floor(fy).astype(np.int64), 0, ch - 2)
    x0 = np.clip(np.floor(fx).astype(np.int64), 0, cw - 2)
    wy = np.clip(fy - y0, 0.0, 1.0).astype(np.float32)[:, None]
    wx = np.clip(fx - x0, 0.0, 1.0).astype(np.float32)[None, :]
    rows = coarse[y0] * (1 - wy) + coarse[y0 + 1] * wy
    out = rows[:, x0] * (1 - wx)
    out += rows[:, x0 + 1] * wx
    return np.ascontiguousarray(out, dtype=np.float32)
