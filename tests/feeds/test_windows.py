"""Window-by-window overlay of a population file: same sums as in memory, bounded reads."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from affine import Affine

from feeds.errors import FeedCorruptError, FeedFormatError, FeedNotFoundError, MissingCRSError
from feeds.windows import (
    iter_population_windows,
    load_zone_raster,
    save_zone_raster,
    windowed_exposure,
)
from geo.classes import SeverityClasses
from geo.errors import EmptyHazardError, NoOverlapError
from geo.exposure import accumulate
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.sampling import class_shares
from geo.types import HazardKind, Nature
from geo.zones import rasterize_zones

CLASSES = SeverityClasses((0.5, 1.0, 2.0), "m")
NODATA = -9999.0
# Population grid: 300 rows x 200 columns of 100 m in EPSG:3035.
POP_GRID = Grid.from_bounds((4.0e6, 3.0e6, 4.02e6, 3.03e6), (300, 200), "EPSG:3035")


@pytest.fixture
def population_tif(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A tiled (64 x 64) GeoTIFF of random people per cell with a no-data patch."""
    rng = np.random.default_rng(42)
    data = rng.gamma(1.5, 20.0, POP_GRID.shape).astype(np.float32)
    data[100:120, 50:90] = NODATA
    path = tmp_path / "population.tif"
    profile = {
        "driver": "GTiff", "height": 300, "width": 200, "count": 1, "dtype": "float32",
        "crs": "EPSG:3035", "transform": POP_GRID.transform, "nodata": NODATA,
        "tiled": True, "blockxsize": 64, "blockysize": 64, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    expected = np.where(data == NODATA, np.nan, data)
    return path, expected


def make_hazard(grid: Grid, values: np.ndarray) -> HazardGrid:
    return HazardGrid(
        data=xr.DataArray(values, dims=("y", "x")), grid=grid, kind=HazardKind.FLOOD_DEPTH,
        units="m", nature=Nature.OBSERVED, source="test", checksum="sha256:" + "0" * 64,
    )


def ramp_hazard(grid: Grid) -> HazardGrid:
    """Depth rising from 0 m in the west to 3 m in the east, NaN in the last row."""
    values = np.tile(np.linspace(0.0, 3.0, grid.width), (grid.height, 1))
    values[-1] = np.nan
    return make_hazard(grid, values)


def three_zones() -> gpd.GeoDataFrame:
    """Three overlapping boxes in lat/lon covering most, not all, of the population grid."""
    minx, miny, maxx, maxy = POP_GRID.bounds
    boxes = [
        shapely.box(minx, miny, minx + 12_000, maxy - 5_000),
        shapely.box(minx + 8_000, miny, maxx, miny + 15_000),
        shapely.box(minx + 8_000, miny + 12_000, maxx - 1_000, maxy),
    ]
    zones = gpd.GeoDataFrame({"zone_id": ["w", "se", "ne"]}, geometry=boxes, crs="EPSG:3035")
    return zones.to_crs("EPSG:4326")


def in_memory(population: np.ndarray, hazard: HazardGrid, zones: gpd.GeoDataFrame | None,
              resampling: str) -> np.ndarray:
    shares = class_shares(hazard.values_2d(), hazard.grid, POP_GRID, CLASSES,
                          resampling=resampling)  # type: ignore[arg-type]
    if zones is None:
        zone_index, n_zones = np.full(POP_GRID.shape, -1, np.int16), 0
    else:
        zr = rasterize_zones(zones, POP_GRID)
        zone_index, n_zones = zr.index, zr.n_zones
    return accumulate(zone_index, shares, [population], n_zones, CLASSES.count)


def test_windows_follow_the_files_blocks_and_cover_every_row_once(
    population_tif: tuple[Path, np.ndarray],
) -> None:
    path, expected = population_tif
    # 100 rows asked -> rounded up to 128 (two 64-row blocks): strips at 0, 128, 256.
    windows = list(iter_population_windows(path, block_rows=100))

    assert [(r, c) for _, r, c, _ in windows] == [(0, 0), (128, 0), (256, 0)]
    assert [d.shape for *_, d in windows] == [(128, 200), (128, 200), (44, 200)]
    for grid, row_off, _, data in windows:
        assert data.dtype == np.float32
        assert grid.same_as(Grid(data.shape, POP_GRID.transform @ _shift(row_off), POP_GRID.crs))
    stacked = np.concatenate([d for *_, d in windows])
    np.testing.assert_array_equal(stacked, expected)  # no-data became NaN


def _shift(row_off: int) -> Affine:
    return Affine.translation(0, row_off)


@pytest.mark.parametrize("block_rows", [64, 100, 1000])
@pytest.mark.parametrize(
    ("hazard_shape", "resampling"),
    [((120, 80), "bilinear"), ((30, 20), "nearest"), ((600, 400), "bilinear")],
    ids=["coarser-bilinear", "much-coarser-nearest", "finer-shares"],
)
def test_windowed_exposure_equals_the_in_memory_overlay(
    population_tif: tuple[Path, np.ndarray],
    block_rows: int,
    hazard_shape: tuple[int, int],
    resampling: str,
) -> None:
    path, population = population_tif
    # The hazard covers the population grid and a margin, at another resolution.
    minx, miny, maxx, maxy = POP_GRID.bounds
    hazard_grid = Grid.from_bounds(
        (minx - 1000, miny - 1000, maxx + 1000, maxy + 1000), hazard_shape, "EPSG:3035"
    )
    hazard = ramp_hazard(hazard_grid)
    zones = three_zones()

    sums, zone_ids = windowed_exposure(
        path, hazard, zones, CLASSES, resampling=resampling,  # type: ignore[arg-type]
        block_rows=block_rows,
    )

    expected = in_memory(population, hazard, zones, resampling)
    assert zone_ids == ("w", "se", "ne")
    assert sums.shape == (1, 4, 4)
    np.testing.assert_allclose(sums, expected, rtol=1e-9, atol=1e-6)
    assert sums[0, 3].sum() > 0  # some people live outside every zone
    assert (sums[0, :, 1:] > 0).any()  # and some are in danger


def test_windowed_exposure_without_zones_puts_everyone_in_the_outside_row(
    population_tif: tuple[Path, np.ndarray],
) -> None:
    path, population = population_tif
    hazard = ramp_hazard(Grid.from_bounds(POP_GRID.bounds, (60, 40), "EPSG:3035"))

    sums, zone_ids = windowed_exposure(path, hazard, None, CLASSES, resampling="bilinear")

    assert zone_ids == () and sums.shape == (1, 1, 4)
    np.testing.assert_allclose(sums.sum(), np.nansum(population, dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(sums, in_memory(population, hazard, None, "bilinear"), rtol=1e-9)


def test_a_hazard_covering_only_some_windows_counts_the_others_as_class_zero(
    population_tif: tuple[Path, np.ndarray],
) -> None:
    path, population = population_tif
    # Covers the top 50 rows only: rows 50-299 are outside the hazard, class 0.
    minx, _, maxx, maxy = POP_GRID.bounds
    top = Grid.from_bounds((minx, maxy - 5000, maxx, maxy), (50, 200), "EPSG:3035")
    hazard = make_hazard(top, np.full((50, 200), 1.5))  # class 2

    sums, _ = windowed_exposure(path, hazard, None, CLASSES, resampling="nearest", block_rows=64)

    np.testing.assert_allclose(sums[0, 0, 2], np.nansum(population[:50], dtype=np.float64))
    np.testing.assert_allclose(sums[0, 0, 0], np.nansum(population[50:], dtype=np.float64))


def test_a_hazard_beside_the_population_raster_raises_no_overlap(
    population_tif: tuple[Path, np.ndarray],
) -> None:
    path, _ = population_tif
    far = Grid.from_bounds((5.0e6, 3.0e6, 5.01e6, 3.01e6), (10, 10), "EPSG:3035")
    with pytest.raises(NoOverlapError, match="does not overlap"):
        windowed_exposure(path, make_hazard(far, np.ones((10, 10))), None, CLASSES,
                          resampling="bilinear")
    empty = make_hazard(POP_GRID, np.full(POP_GRID.shape, np.nan))
    with pytest.raises(EmptyHazardError):
        windowed_exposure(path, empty, None, CLASSES, resampling="bilinear")


# A file written without CRS or transform makes rasterio warn NotGeoreferencedWarning, on
# writing and on opening; that is the very case this test builds on purpose.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_missing_unreadable_and_crs_less_files_raise_feed_errors(tmp_path: Path) -> None:
    with pytest.raises(FeedNotFoundError, match="nope.tif"):
        next(iter_population_windows(tmp_path / "nope.tif"))
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    with pytest.raises(FeedFormatError, match="junk.tif"):
        next(iter_population_windows(junk))
    no_crs = tmp_path / "nocrs.tif"
    with rasterio.open(no_crs, "w", driver="GTiff", height=4, width=4, count=1,
                       dtype="float32") as dst:
        dst.write(np.ones((4, 4), np.float32), 1)
    with pytest.raises(MissingCRSError, match="no CRS"):
        next(iter_population_windows(no_crs))


def test_a_zone_raster_cache_file_round_trips_and_a_bad_one_is_reported(tmp_path: Path) -> None:
    zr = rasterize_zones(three_zones(), POP_GRID)
    path = tmp_path / "zones.npz"

    save_zone_raster(path, zr)
    back = load_zone_raster(path)

    assert np.array_equal(back.index, zr.index) and back.zone_ids == zr.zone_ids
    assert back.grid.same_as(POP_GRID)
    path.write_bytes(b"garbage")
    with pytest.raises(FeedCorruptError, match="zones.npz"):
        load_zone_raster(path)
    with pytest.raises(FeedNotFoundError):
        load_zone_raster(tmp_path / "absent.npz")
