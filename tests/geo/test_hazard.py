import numpy as np
import pytest
import xarray as xr

from geo.errors import EmptyHazardError, GridMismatchError
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.types import HazardKind, Nature

GRID = Grid.from_bounds((0, 0, 500, 500), (5, 5), "EPSG:3035")


def _hazard(values: np.ndarray, dims: tuple[str, ...] = ("y", "x")) -> HazardGrid:
    return HazardGrid(
        data=xr.DataArray(values, dims=dims), grid=GRID, kind="flood_depth", units="m",
        nature="forecast", source="test.tif", checksum="sha256:00",
    )


def test_kind_and_nature_are_normalised_to_enums() -> None:
    hazard = _hazard(np.zeros((5, 5)))
    assert hazard.kind is HazardKind.FLOOD_DEPTH and hazard.nature is Nature.FORECAST


def test_leading_time_and_member_dims_must_be_selected_before_use() -> None:
    hazard = _hazard(np.zeros((2, 3, 5, 5)), ("time", "member", "y", "x"))
    assert hazard.extra_dims == ("time", "member")
    with pytest.raises(GridMismatchError, match="select a time or member"):
        hazard.values_2d()
    assert hazard.with_data(hazard.data.isel(time=0, member=1)).values_2d().shape == (5, 5)


def test_data_that_does_not_fit_the_grid_is_refused() -> None:
    with pytest.raises(GridMismatchError, match="does not match grid shape"):
        _hazard(np.zeros((4, 5)))
    with pytest.raises(GridMismatchError, match="must end with"):
        _hazard(np.zeros((5, 5)), ("lat", "lon"))


def test_an_all_no_data_hazard_cannot_become_a_raster() -> None:
    with pytest.raises(EmptyHazardError, match="test.tif"):
        _hazard(np.full((5, 5), np.nan)).to_raster()
