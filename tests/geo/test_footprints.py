"""Footprints: exact polygons of hand-drawn class grids, the covering property, true areas."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import Geod

from geo.classes import SeverityClasses, classify
from geo.errors import EmptyFootprintWarning, GridMismatchError
from geo.footprints import COLUMNS, build_footprints
from geo.grid import Grid

CLASSES = SeverityClasses((0.15, 0.5, 1.5), "m")


def _cell_boxes(grid: Grid, mask: np.ndarray) -> np.ndarray:
    """Polygons of the cells where ``mask`` is true (north-up grid)."""
    rows, cols = np.nonzero(mask)
    x0, y0 = grid.transform @ (cols, rows)
    x1, y1 = grid.transform @ (cols + 1, rows + 1)
    return shapely.box(
        np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)
    )


def _vertex_count(polygon: shapely.Polygon) -> int:
    rings = [polygon.exterior, *polygon.interiors]
    return sum(len(ring.coords) - 1 for ring in rings)


def test_hand_drawn_block_gives_exact_polygons_and_areas(grid_5x5: Grid) -> None:
    # A 3x3 block of class 1 (rows 1-3, cols 1-3) with a 2x2 block of class 2 in its
    # lower-right corner (rows 2-3, cols 2-3). With 100 m cells (0.01 km2), class 1 is the
    # L-shaped remainder of 5 cells (0.05 km2) and class 2 is 4 cells (0.04 km2).
    index = np.zeros((5, 5), dtype=np.uint8)
    index[1:4, 1:4] = 1
    index[2:4, 2:4] = 2

    frame = build_footprints(index, grid_5x5, CLASSES)

    assert list(frame.columns) == COLUMNS
    assert frame.crs == grid_5x5.crs
    assert frame.attrs["pool_factor"] == 1
    assert frame["class"].tolist() == [1, 2]
    assert frame["label"].tolist() == ["0.15 to 0.5 m", "0.5 to 1.5 m"]
    assert frame["lower"].tolist() == [0.15, 0.5]
    assert frame["upper"].tolist() == [0.5, 1.5]
    assert frame["cells"].tolist() == [5, 4]
    np.testing.assert_allclose(frame["area_km2"], [0.05, 0.04], rtol=1e-9)
    np.testing.assert_allclose(frame["cell_area_km2"], [0.05, 0.04], rtol=1e-6)
    # Row r spans y in [500 - 100 (r + 1), 500 - 100 r].
    class2 = shapely.box(200, 100, 400, 300)
    class1 = shapely.box(100, 100, 400, 400).difference(class2)
    assert frame.geometry.iloc[0].equals(class1)
    assert frame.geometry.iloc[1].equals(class2)
    assert all(frame.geometry.geom_type == "MultiPolygon")
    assert frame.is_valid.all()


def test_staircase_over_the_vertex_budget_is_pooled_by_two_and_never_shrinks(
    grid_10x10: Grid,
) -> None:
    # Class 1 where col <= row: a 10-step staircase with 22 vertices (two per step plus the
    # top-left and bottom-left corners). A budget of 12 forces 2x2 max-pooling: block (i, j)
    # holds class 1 exactly when i >= j, a 5-step staircase of 12 vertices made of 15
    # blocks of 200 m (0.04 km2 each): 0.6 km2 >= 55 cells (0.55 km2).
    rows, cols = np.indices((10, 10))
    index = (cols <= rows).astype(np.uint8)

    frame = build_footprints(index, grid_10x10, CLASSES, max_vertices=12)

    assert frame.attrs["pool_factor"] == 2
    blocks = [
        shapely.box(200 * j, 1000 - 200 * (i + 1), 200 * (j + 1), 1000 - 200 * i)
        for i in range(5)
        for j in range(5)
        if i >= j
    ]
    geom = frame.geometry.iloc[0]
    assert geom.equals(shapely.union_all(blocks))
    assert _vertex_count(geom.geoms[0]) == 12
    assert frame["area_km2"].iloc[0] == pytest.approx(0.6)
    assert frame["cell_area_km2"].iloc[0] == pytest.approx(0.55, rel=1e-6)
    assert frame["cells"].iloc[0] == 55


def test_unpooled_staircase_keeps_every_step_when_within_budget(grid_10x10: Grid) -> None:
    rows, cols = np.indices((10, 10))
    index = (cols <= rows).astype(np.uint8)

    frame = build_footprints(index, grid_10x10, CLASSES, max_vertices=22)

    assert frame.attrs["pool_factor"] == 1
    assert frame["area_km2"].iloc[0] == pytest.approx(0.55)
    assert _vertex_count(frame.geometry.iloc[0].geoms[0]) == 22


def test_edge_blocks_are_clamped_to_the_grid_extent(grid_5x5: Grid) -> None:
    # min_area_cells=4 pools by 2: 3x3 blocks, the last row and column stick out of the
    # 5x5 grid by one cell and must be clamped back to (0, 0, 500, 500).
    index = np.ones((5, 5), dtype=np.uint8)

    frame = build_footprints(index, grid_5x5, CLASSES, min_area_cells=4)

    assert frame.attrs["pool_factor"] == 2
    assert frame.geometry.iloc[0].equals(shapely.box(0, 0, 500, 500))
    assert frame["area_km2"].iloc[0] == pytest.approx(0.25)


def test_a_class_absorbed_by_pooling_keeps_its_row_with_an_empty_geometry(
    grid_5x5: Grid,
) -> None:
    # One class-1 cell next to a class-3 cell inside the same 2x2 block: pooling by two
    # gives the block class 3, so class 1 has cells but no polygon of its own.
    index = np.zeros((5, 5), dtype=np.uint8)
    index[0, 0] = 1
    index[0, 1] = 3

    frame = build_footprints(index, grid_5x5, CLASSES, min_area_cells=4)

    assert frame["class"].tolist() == [1, 3]
    assert frame.geometry.iloc[0].is_empty
    assert frame["cells"].tolist() == [1, 1]
    assert frame.geometry.iloc[1].equals(shapely.box(0, 300, 200, 500))


@settings(max_examples=80, deadline=None)
@given(
    coarse=st.integers(1, 8).flatmap(
        lambda h: st.integers(1, 8).flatmap(
            lambda w: arrays(np.uint8, (h, w), elements=st.integers(0, 3))
        )
    ),
    block=st.integers(1, 3),
    max_vertices=st.integers(4, 40),
    min_area_cells=st.integers(1, 9),
)
def test_class_k_and_above_covers_every_cell_of_class_k_and_above(
    coarse: np.ndarray, block: int, max_vertices: int, min_area_cells: int
) -> None:
    # Blocks of 1-3 cells make larger regions, whose outlines exceed small vertex budgets
    # and so exercise coarser pooling (and edge clamping when 3 does not divide the size).
    h, w = coarse.shape
    index = np.kron(coarse, np.ones((block, block), dtype=np.uint8))[: 3 * h - 1, : 3 * w - 1]
    h, w = index.shape
    grid = Grid.from_bounds((0, 0, 100 * w, 100 * h), (h, w), "EPSG:3035")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyFootprintWarning)
        frame = build_footprints(
            index, grid, CLASSES, max_vertices=max_vertices, min_area_cells=min_area_cells
        )
    if not index.any():
        assert frame.empty
        return
    assert frame.is_valid.all()
    for geom in frame.geometry:
        assert all(_vertex_count(part) <= max_vertices for part in geom.geoms)
    # Polygons of different classes never overlap.
    geoms = frame.geometry.tolist()
    for i in range(len(geoms)):
        for j in range(i + 1, len(geoms)):
            assert shapely.intersection(geoms[i], geoms[j]).area == pytest.approx(0.0, abs=1e-6)
    for k in range(1, 4):
        mask = index >= k
        if not mask.any():
            continue
        chosen = frame[frame["class"] >= k]
        covered = shapely.union_all(chosen.geometry.values)
        cells = _cell_boxes(grid, mask)
        assert shapely.covers(covered, cells).all()
        assert shapely.covers(covered, shapely.centroid(cells)).all()
        assert chosen["area_km2"].sum() >= chosen["cell_area_km2"].sum() * (1 - 1e-9)
        assert chosen["cells"].sum() == mask.sum()


def test_lat_lon_footprint_area_is_geodesic() -> None:
    # 0.1 degree cells over (5, 45, 6, 46); a 4 x 3 block of class 2 spans lon 5.2-5.5,
    # lat 45.5-45.9. Its true area is the geodesic area of that box with edges along the
    # parallels (densified at every cell corner).
    grid = Grid.from_bounds((5.0, 45.0, 6.0, 46.0), (10, 10), "EPSG:4326")
    index = np.zeros((10, 10), dtype=np.uint8)
    index[1:5, 2:5] = 2
    lons = np.round(np.arange(5.2, 5.5001, 0.1), 6)
    lats = np.round(np.arange(45.5, 45.9001, 0.1), 6)
    ring = (
        [(x, 45.5) for x in lons]
        + [(5.5, y) for y in lats[1:]]
        + [(x, 45.9) for x in lons[::-1][1:]]
        + [(5.2, y) for y in lats[::-1][1:]]
    )
    expected_km2 = (
        abs(Geod(ellps="WGS84").polygon_area_perimeter(*zip(*ring, strict=True))[0]) / 1e6
    )

    frame = build_footprints(index, grid, CLASSES)

    assert frame["area_km2"].iloc[0] == pytest.approx(expected_km2, rel=1e-9)
    assert frame["cell_area_km2"].iloc[0] == pytest.approx(expected_km2, rel=1e-9)
    assert 1000 < expected_km2 < 1100  # about 23.3 km x 44.5 km


def test_utm_footprint_area_is_corrected_for_scale() -> None:
    # UTM 32N cells of 1 km near the zone edge (scale factor about 1.0006): the reported
    # area is the ground area, slightly below the nominal grid area.
    grid = Grid.from_bounds((200_000, 5_000_000, 210_000, 5_010_000), (10, 10), "EPSG:32632")
    index = np.ones((10, 10), dtype=np.uint8)

    frame = build_footprints(index, grid, CLASSES)

    area = frame["area_km2"].iloc[0]
    assert area == pytest.approx(frame["cell_area_km2"].iloc[0], rel=1e-4)
    assert area < 100.0
    assert area == pytest.approx(100.0, rel=5e-3)


def test_no_cell_in_any_class_warns_and_returns_an_empty_frame(grid_5x5: Grid) -> None:
    index = np.zeros((5, 5), dtype=np.uint8)

    with pytest.warns(EmptyFootprintWarning, match="no cell"):
        frame = build_footprints(index, grid_5x5, CLASSES)

    assert frame.empty
    assert list(frame.columns) == COLUMNS
    assert frame.crs == grid_5x5.crs


def test_class_grid_of_another_shape_is_rejected(grid_5x5: Grid) -> None:
    with pytest.raises(GridMismatchError, match=r"shape \(4, 5\)"):
        build_footprints(np.ones((4, 5), dtype=np.uint8), grid_5x5, CLASSES)


def test_class_index_beyond_the_defined_classes_is_rejected(grid_5x5: Grid) -> None:
    index = np.full((5, 5), 4, dtype=np.uint8)
    with pytest.raises(ValueError, match="class 4, but only 3 classes"):
        build_footprints(index, grid_5x5, CLASSES)


def test_float_class_grid_is_rejected(grid_5x5: Grid) -> None:
    with pytest.raises(ValueError, match="integer class indices"):
        build_footprints(np.ones((5, 5)), grid_5x5, CLASSES)


def test_a_vertex_budget_below_one_square_is_rejected(grid_5x5: Grid) -> None:
    with pytest.raises(ValueError, match="max_vertices"):
        build_footprints(np.ones((5, 5), dtype=np.uint8), grid_5x5, CLASSES, max_vertices=3)


@pytest.mark.realdata
def test_real_lat_lon_density_classes_are_covered_and_measured_geodesically(
    real_data: Path,
) -> None:
    # GPWv4-derived population density over the Swiss plateau (EPSG:4326, 0.01 degree
    # cells), classed at 100 / 500 / 2000 people per km2 with a small vertex budget.
    import rasterio

    path = real_data / "raster" / "population" / "population-density_median.tif"
    with rasterio.Env(), rasterio.open(path) as src:
        density = src.read(1, masked=True).filled(np.nan)
        grid = Grid(src.shape, src.transform, src.crs)
    classes = SeverityClasses((100.0, 500.0, 2000.0), "people/km2")
    index = classify(density, classes.breaks)

    frame = build_footprints(index, grid, classes, max_vertices=500)

    assert frame.is_valid.all()
    assert frame.attrs["pool_factor"] > 1
    areas = grid.cell_areas_m2() / 1e6
    for k in range(1, 4):
        mask = index >= k
        chosen = frame[frame["class"] >= k]
        assert chosen["cells"].sum() == mask.sum()
        assert chosen["cell_area_km2"].sum() == pytest.approx(areas[mask].sum(), rel=1e-9)
        covered = shapely.union_all(chosen.geometry.values)
        assert shapely.covers(covered, _cell_boxes(grid, mask)).all()
        assert chosen["area_km2"].sum() >= chosen["cell_area_km2"].sum()
