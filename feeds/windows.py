"""Population rasters larger than memory, read and overlaid window by window.

A 30,000 x 30,000 float32 population grid is 3.6 GB; the overlay must not need it in
memory. :func:`iter_population_windows` reads a tiled GeoTIFF one strip of block rows at a
time (windows aligned to the file's blocks, so every tile is decompressed once), and
:func:`windowed_exposure` samples the hazard, rasterises the zones and accumulates on each
strip, adding into one accumulator. Memory is bounded by the strip, whatever the file size.

Also here: the cache file of a zone raster beside a region pack (the core only makes bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from feeds.errors import FeedCorruptError, FeedFormatError, FeedNotFoundError, MissingCRSError
from geo.classes import SeverityClasses
from geo.errors import EmptyHazardError, GeoError, NoOverlapError
from geo.exposure import accumulate
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.sampling import ClassShares, class_shares
from geo.types import Resampling
from geo.zones import ZoneRaster, prepare_zones, rasterize_zones

GDAL_CACHE_MB = 64
"""GDAL's block cache while reading strips: windows follow the blocks, so every tile is
read once and a large cache (GDAL's default is 5 % of RAM) would only hold dead tiles."""

TARGET_WINDOW_CELLS = 8_000_000
"""Cells per strip when ``block_rows`` is not given: about 32 MB of float32 population, and
a few times that in per-strip temporaries (sampled hazard, classes, zones)."""


def iter_population_windows(
    path: str | Path, *, block_rows: int | None = None
) -> Iterator[tuple[Grid, int, int, np.ndarray]]:
    """Read a population raster (band 1) strip by strip.

    Args:
        path: a GeoTIFF (ideally tiled) or any raster GDAL reads.
        block_rows: rows per strip; rounded up to a multiple of the file's block height.
            By default, strips of about :data:`TARGET_WINDOW_CELLS` cells.

    Yields:
        ``(window_grid, row_off, col_off, data)``: the strip's grid, its offset in the
        file, and its values as ``float32`` with no-data as ``NaN``.

    Raises:
        FeedNotFoundError: the file does not exist.
        FeedFormatError: GDAL cannot read it as a raster.
        MissingCRSError: the file has no CRS.
    """
    path = Path(path)
    if not path.exists():
        raise FeedNotFoundError(path, "population raster not found")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        try:
            src_dst = rasterio.open(path)
        except RasterioIOError as exc:
            raise FeedFormatError(path, f"not a raster GDAL can read: {exc}") from exc
        with src_dst:
            if src_dst.crs is None:
                raise MissingCRSError(path, "the population raster has no CRS")
            crs = src_dst.crs.to_wkt()
            block_h = src_dst.block_shapes[0][0]
            rows = _strip_rows(block_rows, block_h, src_dst.width)
            nodata = src_dst.nodata
            for row_off in range(0, src_dst.height, rows):
                window = Window(0, row_off, src_dst.width, min(rows, src_dst.height - row_off))
                try:
                    data = src_dst.read(1, window=window, out_dtype=np.float32)
                except RasterioIOError as exc:
                    raise FeedCorruptError(path, f"cannot read rows {row_off}+: {exc}") from exc
                if nodata is not None and not np.isnan(nodata):
                    data[data == np.float32(nodata)] = np.nan
                # Not src_dst.window_transform(): it uses Affine "*", deprecated in affine 3.
                transform = src_dst.transform @ Affine.translation(0, row_off)
                grid = Grid(data.shape, transform, crs)
                yield grid, row_off, 0, data


def windowed_exposure(
    population_path: str | Path,
    hazard: HazardGrid,
    zones: gpd.GeoDataFrame | None,
    classes: SeverityClasses,
    *,
    resampling: Resampling,
    block_rows: int | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """People by zone and severity class, read from a population file window by window.

    Gives the same sums as the in-memory overlay (sample, rasterise zones, accumulate) of
    the whole file: every window is a piece of the same grid, sampled and rasterised with
    the same rules, and cells belong to exactly one window.

    Args:
        population_path: population counts raster (band 1).
        hazard: the 2-D hazard.
        zones: admin zones (any CRS), or ``None`` for the whole area.
        classes: severity classes.
        resampling: how the hazard is sampled (as in :func:`geo.sampling.class_shares`).
        block_rows: rows per window (see :func:`iter_population_windows`).

    Returns:
        ``(sums, zone_ids)``: ``float64`` sums of shape ``(1, n_zones + 1, K + 1)`` (last
        zone row = outside every zone) and the zone ids, for
        :func:`geo.exposure.exposure_frame`.

    Raises:
        NoOverlapError: the hazard overlaps no window of the population raster.
        EmptyHazardError: it overlaps, but no valid value falls on the population grid.
    """
    values = hazard.values_2d()
    sums: np.ndarray | None = None
    prepared = None
    zone_ids: tuple[str, ...] = ()
    overlapped = valid = False
    for grid, _row_off, _col_off, data in iter_population_windows(
        population_path, block_rows=block_rows
    ):
        if zones is not None and prepared is None:
            prepared = prepare_zones(zones, grid.crs)
            zone_ids = tuple(str(v) for v in prepared["zone_id"])
        shares, hit = _window_classes(values, hazard.grid, grid, classes, resampling)
        overlapped = overlapped or hit != "none"
        valid = valid or hit == "valid"
        zone_index = _window_zones(prepared, grid)
        sums = accumulate(zone_index, shares, [data], len(zone_ids), classes.count, out=sums)
    if not overlapped:
        raise NoOverlapError(
            f"the hazard from {hazard.source} does not overlap the population raster "
            f"{population_path}"
        )
    if not valid:
        raise EmptyHazardError(
            f"no valid value of the hazard from {hazard.source} falls on the population "
            f"raster {population_path}"
        )
    assert sums is not None
    return sums, zone_ids


def save_zone_raster(path: str | Path, zone_raster: ZoneRaster) -> None:
    """Write a zone raster cache file (``.npz``), replacing any older one atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(zone_raster.to_bytes())
    tmp.replace(path)


def load_zone_raster(path: str | Path) -> ZoneRaster:
    """Read a zone raster cache file written by :func:`save_zone_raster`.

    Raises:
        FeedNotFoundError: no such file.
        FeedCorruptError: the file is not a zone raster (delete it; it will be rebuilt).
    """
    path = Path(path)
    if not path.is_file():
        raise FeedNotFoundError(path, "zone raster cache file not found")
    try:
        return ZoneRaster.from_bytes(path.read_bytes())
    except GeoError as exc:
        raise FeedCorruptError(path, str(exc)) from exc


def _strip_rows(block_rows: int | None, block_h: int, width: int) -> int:
    wanted = block_rows if block_rows is not None else max(1, TARGET_WINDOW_CELLS // width)
    if wanted <= 0:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    return max(1, -(-wanted // block_h)) * block_h


def _window_classes(
    values: np.ndarray,
    hazard_grid: Grid,
    grid: Grid,
    classes: SeverityClasses,
    resampling: Resampling,
) -> tuple[ClassShares, str]:
    """Classes of one window, and whether the hazard missed it, hit no-data or hit values."""
    try:
        return class_shares(values, hazard_grid, grid, classes, resampling=resampling), "valid"
    except NoOverlapError:
        hit = "none"
    except EmptyHazardError:
        hit = "nodata"
    return ClassShares.from_index(np.zeros(grid.shape, dtype=np.uint8), classes), hit


def _window_zones(prepared: gpd.GeoDataFrame | None, grid: Grid) -> np.ndarray:
    """Zone index of one window, numbered as in the whole frame."""
    if prepared is None or prepared.empty:
        return np.full(grid.shape, -1, dtype=np.int16)
    # Only the zones near this window take part; their positions map back to the frame's.
    candidates = np.sort(prepared.sindex.query(shapely.box(*grid.bounds)))
    dtype = np.int16 if len(prepared) < 32767 else np.int32
    if candidates.size == 0:
        return np.full(grid.shape, -1, dtype=dtype)
    local = rasterize_zones(prepared.iloc[candidates], grid).index
    lookup = np.append(candidates, -1).astype(dtype)
    return lookup[local]


def raster_grid(path: str | Path) -> Grid:
    """The grid of a raster, read from its header only (no pixels)."""
    try:
        with rasterio.Env(), rasterio.open(path) as src:
            if src.crs is None:
                raise MissingCRSError(path, "the raster has no CRS")
            return Grid((src.height, src.width), src.transform, src.crs)
    except RasterioIOError as exc:
        if not Path(path).exists():
            raise FeedNotFoundError(path, "no such file") from exc
        raise FeedFormatError(path, f"not a raster GDAL can read: {exc}") from exc


def read_zones_file(
    path: str | Path, *, id_field: str, name_field: str | None = None, crs: str | None = None
) -> gpd.GeoDataFrame:
    """Admin zones from any vector file GDAL reads, as ``zone_id``, ``name``, ``geometry``.

    Raises:
        FeedNotFoundError: no such file. FeedFormatError: unreadable, or ``id_field`` missing.
        MissingCRSError: the file has no CRS and ``crs`` was not given.
    """
    if not Path(path).exists():
        raise FeedNotFoundError(path, "no such file")
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - any driver failure is a format problem here
        raise FeedFormatError(path, f"not a vector file GDAL can read: {exc}") from exc
    if id_field not in frame.columns:
        raise FeedFormatError(
            path, f"no id column {id_field!r}; columns are {list(frame.columns)}"
        )
    if frame.crs is None:
        if crs is None:
            raise MissingCRSError(path, "the zones have no CRS; give one (e.g. EPSG:4326)")
        frame = frame.set_crs(crs)
    names = frame[name_field] if name_field and name_field in frame else frame[id_field]
    return gpd.GeoDataFrame(
        {"zone_id": frame[id_field].astype(str), "name": names.astype(str)},
        geometry=frame.geometry, crs=frame.crs,
    )
