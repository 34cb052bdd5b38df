"""Tiny hand-checkable grids shared by the geo tests.

Both grids are in EPSG:3035 with 100 m cells and their lower-left corner at the origin, so
cell ``(row, col)`` covers ``x in [100 col, 100 col + 100)`` and
``y in [H*100 - 100 (row + 1), H*100 - 100 row)``; cell centres sit on odd multiples of 50 m.
"""

from __future__ import annotations

import pytest

from geo.grid import Grid


@pytest.fixture
def grid_5x5() -> Grid:
    """5 x 5 cells of 100 m covering (0, 0, 500, 500) in EPSG:3035."""
    return Grid.from_bounds((0, 0, 500, 500), (5, 5), "EPSG:3035")


@pytest.fixture
def grid_10x10() -> Grid:
    """10 x 10 cells of 100 m covering (0, 0, 1000, 1000) in EPSG:3035."""
    return Grid.from_bounds((0, 0, 1000, 1000), (10, 10), "EPSG:3035")
