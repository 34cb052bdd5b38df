import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Geod

from geo.errors import CRSMismatchError, GridMismatchError
from geo.grid import Grid, require_same_crs


def test_bounds_and_centres_of_a_north_up_grid() -> None:
    grid = Grid.from_bounds((0, 0, 500, 300), (3, 5), "EPSG:3035")
    assert grid.bounds == (0, 0, 500, 300)
    assert grid.res == (100, 100)
    xs, ys = grid.xy_centres()
    assert xs.tolist() == [50, 150, 250, 350, 450]
    assert ys.tolist() == [250, 150, 50]


def test_cells_of_an_equal_area_grid_have_their_nominal_area() -> None:
    grid = Grid.from_bounds((4_000_000, 2_500_000, 4_000_500, 2_500_500), (5, 5), "EPSG:3035")
    np.testing.assert_allclose(grid.cell_areas_m2(), 10_000.0, rtol=1e-9)


def test_lat_lon_cells_get_their_geodesic_area_row_by_row() -> None:
    grid = Grid.from_bounds((8.0, 46.0, 8.3, 46.3), (3, 3), "EPSG:4326")
    areas = grid.cell_areas_m2()
    geod = Geod(ellps="WGS84")
    top_row, _ = geod.polygon_area_perimeter([8.0, 8.1, 8.1, 8.0], [46.2, 46.2, 46.3, 46.3])
    np.testing.assert_allclose(areas[0], abs(top_row), rtol=1e-9)
    assert areas[0, 0] < areas[2, 0]  # cells shrink towards the pole


def test_web_mercator_cells_are_corrected_by_the_areal_scale_factor() -> None:
    # At 60 degrees north Web Mercator inflates areas by 1/cos(60)^2 = 4.
    y60 = 8_399_737.89
    grid = Grid.from_bounds((0, y60 - 50, 100, y60 + 50), (1, 1), "EPSG:3857")
    assert grid.cell_areas_m2()[0, 0] == pytest.approx(10_000 / 4, rel=0.01)


def test_grids_differing_in_transform_are_not_the_same() -> None:
    a = Grid((5, 5), Affine(100, 0, 0, 0, -100, 500), CRS.from_epsg(3035))
    b = Grid((5, 5), Affine(100, 0, 50, 0, -100, 500), CRS.from_epsg(3035))
    assert a.same_as(a)
    assert not a.same_as(b)
    with pytest.raises(GridMismatchError, match="population"):
        a.require_same(b, "population")


def test_a_grid_needs_a_crs_and_a_positive_shape() -> None:
    with pytest.raises(CRSMismatchError):
        Grid((5, 5), Affine.identity(), None)  # type: ignore[arg-type]
    with pytest.raises(GridMismatchError):
        Grid((0, 5), Affine.identity(), CRS.from_epsg(4326))


def test_crs_mismatch_names_both_layers() -> None:
    with pytest.raises(CRSMismatchError, match="zones.*EPSG:4326.*population.*EPSG:3035"):
        require_same_crs(CRS.from_epsg(4326), CRS.from_epsg(3035), "zones", "population")
