"""The sample valley's terrain: the river's course and the friction surface.

Draws what :func:`feeds.sample.build_sample_region` needs for ``friction.tif`` and the flood
feeds: a meandering river (its centreline and water mask) and the minutes-per-metre
friction of off-road land, tracks, town streets, the river and the main roads with their
bridges. Split out of :mod:`feeds.sample.region` to keep that module small; the functions
draw from the caller's generator in the caller's order, so builds stay byte-identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import shapely
from rasterio.features import rasterize

from geo.grid import Grid

if TYPE_CHECKING:
    from feeds.sample.region import _Place

# Friction in minutes per metre: 60 / (speed_km_h * 1000).
ROAD_MIN_PER_M = 60 / 75_000  # main roads, 75 km/h
STREET_MIN_PER_M = 60 / 30_000  # town streets, 30 km/h
TRACK_MIN_PER_M = 60 / 20_000  # farm and forest tracks, 20 km/h
OFFROAD_MIN_PER_M = 60 / 5_000  # walking across fields, 5 km/h
RIVER_MIN_PER_M = 1.0  # ~0.06 km/h: impassable in practice, bridges only
URBAN_PEOPLE_PER_CELL = 10.0  # 1000 people/km2: streets, not fields


def river_centreline(rng: np.random.Generator, size: int) -> np.ndarray:
    """Row (fractional cells) of the river's centre at every half column, west to east."""
    cols = np.arange(0, 2 * size + 1) / 2
    phase1, phase2 = rng.uniform(0, 2 * np.pi, size=2)
    frac = (0.5 + 0.08 * np.sin(2 * np.pi * 1.5 * cols / size + phase1)
            + 0.035 * np.sin(2 * np.pi * 3.7 * cols / size + phase2))
    return frac * size


def cells_to_xy(grid: Grid, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """Map fractional (row, col) cell coordinates to CRS coordinates."""
    xs, ys = grid.transform @ (np.asarray(cols, dtype=float), np.asarray(rows, dtype=float))
    return np.asarray(xs), np.asarray(ys)


def rasterise_river(grid: Grid, river_row: np.ndarray, cell_m: float) -> np.ndarray:
    """Boolean water mask of the river: its centreline buffered to ~2.5 cells wide."""
    cols = np.arange(river_row.size) / 2
    xs, ys = cells_to_xy(grid, river_row, cols)
    channel = shapely.buffer(shapely.LineString(np.column_stack([xs, ys])), 1.25 * cell_m)
    return rasterize([(channel, 1)], out_shape=grid.shape, transform=grid.transform,
                     dtype="uint8").astype(bool)


def draw_friction(
    rng: np.random.Generator,
    grid: Grid,
    scale: float,
    river_row: np.ndarray,
    river: np.ndarray,
    population: np.ndarray,
    places: list[_Place],
) -> np.ndarray:
    """Minutes per metre: off-road, tracks, streets, river, then roads (bridges on top)."""
    size = grid.shape[0]
    bank_off = max(6.0, 20 * scale)
    cols = np.arange(river_row.size) / 2
    friction = np.full(grid.shape, OFFROAD_MIN_PER_M, dtype="float32")
    tracks = []
    for _ in range(max(2, round(10 * scale))):
        r0, c0 = rng.uniform(0, size, size=2)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(30, 80) * scale
        r1, c1 = r0 + length * np.sin(angle), c0 + length * np.cos(angle)
        tracks.append(shapely.LineString(np.column_stack(cells_to_xy(grid, [r0, r1], [c0, c1]))))
    _burn(friction, grid, tracks, TRACK_MIN_PER_M)
    friction[population > URBAN_PEOPLE_PER_CELL] = STREET_MIN_PER_M
    friction[river] = RIVER_MIN_PER_M
    # Main roads: one along each bank, a crossing at every bridge, a spur to every place.
    roads = [shapely.LineString(np.column_stack(cells_to_xy(grid, river_row + s * bank_off,
                                                            cols)))
             for s in (-1, 1)]
    city = places[0]
    others = [f for f in (0.15, 0.35, 0.65, 0.85) if abs(f * size - city.col) > 0.1 * size]
    extra = rng.choice(others, size=min(len(others), int(rng.integers(2, 4))), replace=False)
    for col in [city.col, *(float(f) * size for f in extra)]:
        base = float(river_row[int(round(col * 2))])
        rows = [base - bank_off, base + bank_off]
        roads.append(shapely.LineString(np.column_stack(cells_to_xy(grid, rows, [col, col]))))
    for place in places:
        base = float(river_row[int(round(place.col * 2))])
        side = -1 if place.row < base else 1
        rows = [place.row, base + side * bank_off]
        roads.append(shapely.LineString(np.column_stack(cells_to_xy(grid, rows,
                                                                    [place.col, place.col]))))
    _burn(friction, grid, roads, ROAD_MIN_PER_M)
    return friction


def _burn(target: np.ndarray, grid: Grid, lines: list[shapely.LineString], value: float) -> None:
    """Set the cells crossed by ``lines`` to ``value`` in place."""
    mask = rasterize([(line, 1) for line in lines], out_shape=grid.shape,
                     transform=grid.transform, dtype="uint8", all_touched=True)
    target[mask.astype(bool)] = value
