"""Writers of the sample hazard feed files, one per supported format.

Every writer is deterministic: the same arguments give byte-identical files (no clock, no
history attribute, fixed GDAL creation options). The fields are synthetic but plausible, and
placed over the sample region so that an overlay finds exposure:

- flood depth GeoTIFF runs along the river (``flood_depth_run{1,2,3}.tif``);
- a 10-member, 4-day rainfall forecast in CF-1.8 NetCDF (``rain_forecast.nc``);
- a surface wind gust field in GRIB2 (``wind_gust.grib2``);
- a USGS ShakeMap ``grid.xml`` of a M6.x earthquake near a town (``shakemap_grid.xml``),
  written by :mod:`feeds.sample.shakemap_writer`.

The lat/lon grid the last three share is laid out by :mod:`feeds.sample.latlon`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from scipy.ndimage import gaussian_filter

from feeds.sample.latlon import LATLON_STEP_DEG, distance_km, latlon_axes
from feeds.sample.shakemap_writer import write_shakemap_grid
from geo.grid import Grid
from geo.types import BBox, HazardKind

GEOTIFF_BLOCK_CELLS = 256
"""Tile size of every sample GeoTIFF (COG-like: tiled, deflate, internal overviews)."""

FLOOD_NODATA = -9999.0
"""No-data value of the flood depth rasters (outside the flood model's domain)."""

FLOOD_EVENT_ID = "SAMPLE-FLOOD-2024-05"


@dataclass(frozen=True, slots=True)
class FloodRun:
    """One run of the synthetic flood model.

    Attributes:
        number: run number (1, 2, 3...), used in the file name.
        issued_at: when the run was issued (UTC).
        crest_depth_m: depth at the river bank, at the downstream end.
        reach_m: distance from the river where the water ends.
    """

    number: int
    issued_at: datetime
    crest_depth_m: float
    reach_m: float


@dataclass(frozen=True, slots=True)
class SampleHazardFile:
    """One hazard feed file written by the sample builder.

    Attributes:
        path: the file.
        kind: what it measures.
        format: ``"geotiff"``, ``"netcdf"``, ``"grib2"`` or ``"shakemap"``.
        variable: the variable, field or shortName to read, if the format has several.
        issued_at: when the (fictional) producer issued it.
    """

    path: Path
    kind: HazardKind
    format: str
    variable: str | None
    issued_at: datetime


def write_geotiff(
    path: Path,
    values: np.ndarray,
    grid: Grid,
    *,
    units: str,
    nodata: float | None = None,
    tags: Mapping[str, str] | None = None,
    overview_factors: Sequence[int] = (2, 4),
    description: str = "",
) -> Path:
    """Write one float32 band as a tiled, deflate-compressed GeoTIFF with internal overviews.

    Args:
        path: the file to write (replaced if present).
        values: 2-D array on ``grid``.
        grid: georeferencing of ``values``.
        units: the band's unit type (``"people"``, ``"m"``, ``"min/m"``).
        nodata: the no-data value, if any.
        tags: dataset-level GDAL metadata (``TIFFTAG_DATETIME`` included).
        overview_factors: overview decimation factors; those coarser than the image are skipped.
        description: the band description.

    Returns:
        ``path``.
    """
    height, width = grid.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": GEOTIFF_BLOCK_CELLS,
        "blockysize": GEOTIFF_BLOCK_CELLS,
        "compress": "deflate",
        "predictor": 3,
        "interleave": "band",
    }
    factors = [f for f in overview_factors if min(height, width) // f >= 1]
    with rasterio.Env(), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.asarray(values, dtype="float32"), 1)
        dst.units = (units,)
        if description:
            dst.set_band_description(1, description)
        if tags:
            dst.update_tags(**dict(tags))
        if factors:
            dst.build_overviews(factors, Resampling.average)
            dst.update_tags(ns="rio_overview", resampling="average")
    return path


def write_flood_runs(
    out_dir: Path,
    grid: Grid,
    river_distance_m: np.ndarray,
    runs: Sequence[FloodRun],
    *,
    rng: np.random.Generator,
    domain_m: float,
) -> list[Path]:
    """Write one flood depth GeoTIFF (m) per run, water spreading from the river.

    Depth falls from ``crest_depth_m`` at the bank to zero at ``reach_m``, grows downstream
    (eastward) and carries smooth noise, so successive runs differ in extent, not only depth.
    Cells farther than ``domain_m`` from the river are outside the model: no-data.

    Args:
        out_dir: folder to write into.
        grid: the region's population grid (the flood model runs on it).
        river_distance_m: distance of every cell from the river, 0 on the river.
        runs: the runs to write, in issue order.
        rng: the generator for the noise (drawn once, shared by all runs).
        domain_m: extent of the flood model's domain from the river.

    Returns:
        The written paths, in run order.
    """
    height, width = grid.shape
    noise = gaussian_filter(rng.standard_normal(grid.shape), sigma=max(1.0, width / 40))
    noise = noise / (np.abs(noise).max() or 1.0)
    downstream = 0.7 + 0.6 * (np.arange(width) + 0.5)[None, :] / width
    outside = river_distance_m > domain_m
    paths = []
    for run in runs:
        reach = run.reach_m * (1.0 + 0.3 * noise)
        share = np.clip(1.0 - river_distance_m / reach, 0.0, 1.0) ** 1.5
        depth = run.crest_depth_m * downstream * share * (1.0 + 0.15 * noise)
        depth = np.where(depth < 0.01, 0.0, np.round(depth, 2))
        depth[outside] = FLOOD_NODATA
        tags = {
            "TIFFTAG_DATETIME": run.issued_at.strftime("%Y:%m:%d %H:%M:%S"),
            "TOCSIN_EVENT_ID": FLOOD_EVENT_ID,
            "TOCSIN_RUN": str(run.number),
            "TOCSIN_ISSUED_AT": run.issued_at.isoformat(),
            "TOCSIN_NATURE": "forecast",
        }
        path = out_dir / f"flood_depth_run{run.number}.tif"
        write_geotiff(path, depth, grid, units="m", nodata=FLOOD_NODATA, tags=tags,
                      description="flood_depth")
        paths.append(path)
    return paths


def write_rain_forecast(
    path: Path,
    bounds_lonlat: BBox,
    storm_lonlat: tuple[float, float],
    *,
    reference_time: datetime,
    rng: np.random.Generator,
    members: int = 10,
    days: int = 4,
) -> Path:
    """Write a CF-1.8 ensemble forecast of 24 h rainfall accumulation (mm) on a lat/lon grid.

    Dimensions are ``(time, member, lat, lon)``: ``time`` is the end of each 24 h window
    after ``reference_time``. A rain band centred near ``storm_lonlat`` peaks on day 2;
    each member shifts and scales it, so the ensemble has a realistic spread.

    Args:
        path: the ``.nc`` file to write.
        bounds_lonlat: ``(west, south, east, north)`` to cover, degrees.
        storm_lonlat: where the heaviest rain falls, degrees.
        reference_time: the forecast reference time (UTC).
        rng: the generator for member perturbations.
        members: number of ensemble members.
        days: number of 24 h windows.

    Returns:
        ``path``.
    """
    lons, lats = latlon_axes(bounds_lonlat)
    lon2, lat2 = np.meshgrid(lons, lats)
    day_peak_mm = np.array([45.0, 95.0, 60.0, 15.0, 5.0, 5.0, 5.0][:days])
    rain = np.empty((days, members, lats.size, lons.size), dtype="float32")
    for m in range(members):
        scale = float(np.exp(rng.normal(0.0, 0.25)))
        shift = rng.normal(0.0, 0.04, size=2)
        for d in range(days):
            # The band drifts east by ~0.05 deg a day and widens as it decays.
            lon0 = storm_lonlat[0] + shift[0] + 0.05 * (d - 1)
            lat0 = storm_lonlat[1] + shift[1]
            dist = distance_km(lon2, lat2, lon0, lat0)
            band = day_peak_mm[d] * scale * np.exp(-0.5 * (dist / (14.0 + 2.0 * d)) ** 2)
            rain[d, m] = np.round(band + 2.0 + rng.gamma(1.5, 0.8, size=band.shape), 1)
    times = [reference_time.replace(tzinfo=None) + timedelta(days=d + 1) for d in range(days)]
    ds = xr.Dataset(
        {
            "precipitation_amount": (
                ("time", "member", "lat", "lon"),
                rain,
                {
                    "standard_name": "lwe_thickness_of_precipitation_amount",
                    "long_name": "24 h precipitation accumulation ending at time",
                    "units": "mm",
                    "cell_methods": "time: sum (interval: 24 hours)",
                    "grid_mapping": "crs",
                },
            ),
            "crs": ((), np.int32(0), {"grid_mapping_name": "latitude_longitude",
                                      "semi_major_axis": 6378137.0,
                                      "inverse_flattening": 298.257223563}),
        },
        coords={
            "time": ("time", np.array(times, dtype="datetime64[ns]"),
                     {"standard_name": "time", "axis": "T"}),
            "member": ("member", np.arange(members, dtype="int32"),
                       {"standard_name": "realization", "long_name": "ensemble member"}),
            "lat": ("lat", lats, {"standard_name": "latitude", "units": "degrees_north",
                                  "axis": "Y"}),
            "lon": ("lon", lons, {"standard_name": "longitude", "units": "degrees_east",
                                  "axis": "X"}),
            "forecast_reference_time": ((), np.datetime64(reference_time.replace(tzinfo=None),
                                                          "ns"),
                                        {"standard_name": "forecast_reference_time"}),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": "Sample 24 h rainfall ensemble forecast (synthetic)",
            "institution": "Tocsin sample generator",
            "source": "synthetic, deterministic from the sample seed",
        },
    )
    time_units = "hours since " + reference_time.strftime("%Y-%m-%d %H:%M:%S")
    encoding = {
        "precipitation_amount": {"zlib": True, "complevel": 4, "dtype": "float32",
                                 "_FillValue": np.float32(-9999.0)},
        "time": {"units": time_units, "calendar": "standard", "dtype": "int32"},
        "forecast_reference_time": {"units": time_units, "calendar": "standard",
                                    "dtype": "int32"},
        "lat": {"_FillValue": None},
        "lon": {"_FillValue": None},
        "member": {"_FillValue": None},
    }
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
    return path


def write_wind_gust_grib(
    path: Path,
    bounds_lonlat: BBox,
    track_lonlat: tuple[tuple[float, float], tuple[float, float]],
    *,
    data_time: datetime,
    rng: np.random.Generator,
) -> Path:
    """Write a GRIB2 message of 10 m wind gust (m s-1) on a regular 0.01 deg lat/lon grid.

    A storm crosses the region along ``track_lonlat`` (start, end); gusts peak at ~38 m/s
    on the track and fall to ~12 m/s 30 km away. Written with eccodes from the
    ``regular_ll_sfc_grib2`` sample: discipline 0, category 2, number 22 (shortName
    ``gust``), at the surface, analysis at ``data_time``.

    Returns:
        ``path``.
    """
    import eccodes  # late: only this writer needs it

    lons, lats = latlon_axes(bounds_lonlat)
    lon2, lat2 = np.meshgrid(lons, lats)
    (lon_a, lat_a), (lon_b, lat_b) = track_lonlat
    # Distance to the track segment, in km, in a local equirectangular frame.
    kx = 111.32 * np.cos(np.radians(lat_a))
    px, py = (lon2 - lon_a) * kx, (lat2 - lat_a) * 110.57
    vx, vy = (lon_b - lon_a) * kx, (lat_b - lat_a) * 110.57
    t = np.clip((px * vx + py * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    dist_km = np.hypot(px - t * vx, py - t * vy)
    texture = gaussian_filter(rng.standard_normal(dist_km.shape), sigma=3.0)
    texture /= np.abs(texture).max() or 1.0
    gust = 12.0 + 26.0 * np.exp(-0.5 * (dist_km / 12.0) ** 2) + 2.5 * texture
    gust = np.round(np.clip(gust, 0.0, None), 1)

    gid = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    try:
        for key, value in (
            ("dataDate", int(data_time.strftime("%Y%m%d"))),
            ("dataTime", int(data_time.strftime("%H%M"))),
            ("discipline", 0),
            ("parameterCategory", 2),
            ("parameterNumber", 22),
            # Surface, as NCEP models publish gusts; eccodes would name a 10 m gust i10fg.
            ("typeOfFirstFixedSurface", 1),
            ("Ni", lons.size),
            ("Nj", lats.size),
            ("iScansNegatively", 0),
            ("jScansPositively", 0),
            ("latitudeOfFirstGridPointInDegrees", float(lats[0])),
            ("longitudeOfFirstGridPointInDegrees", float(lons[0])),
            ("latitudeOfLastGridPointInDegrees", float(lats[-1])),
            ("longitudeOfLastGridPointInDegrees", float(lons[-1])),
            ("iDirectionIncrementInDegrees", LATLON_STEP_DEG),
            ("jDirectionIncrementInDegrees", LATLON_STEP_DEG),
            ("bitsPerValue", 16),
        ):
            eccodes.codes_set(gid, key, value)
        eccodes.codes_set_values(gid, gust.astype("float64").ravel())
        with open(path, "wb") as out:
            eccodes.codes_write(gid, out)
    finally:
        eccodes.codes_release(gid)
    return path


def write_sample_hazards(
    feeds_dir: Path,
    grid: Grid,
    river_distance_m: np.ndarray,
    *,
    rng: np.random.Generator,
    scale: float,
    city_lonlat: tuple[float, float],
    town_lonlat: tuple[float, float],
) -> tuple[SampleHazardFile, ...]:
    """Write every sample hazard feed of the region into ``feeds_dir``.

    Args:
        feeds_dir: the folder to write into.
        grid: the region's population grid (100 m cells).
        river_distance_m: distance of each cell from the river.
        rng: the region's generator (drawn in a fixed order: deterministic).
        scale: region size relative to the reference 400 cells (scales the flood reach).
        city_lonlat: the city centre, where rain and wind are strongest.
        town_lonlat: the town near which the earthquake strikes.

    Returns:
        The files written: flood runs in issue order, rain, gust, ShakeMap.
    """
    cell_m = abs(grid.transform.a)
    floor_m = 2.5 * cell_m
    runs = [
        FloodRun(1, utc(2024, 5, 14, 6), 1.2, max(floor_m, 700 * scale)),
        FloodRun(2, utc(2024, 5, 14, 18), 2.6, max(floor_m, 1600 * scale)),
        FloodRun(3, utc(2024, 5, 16, 6), 0.12, max(cell_m, 250 * scale)),
    ]
    flood_paths = write_flood_runs(feeds_dir, grid, river_distance_m, runs, rng=rng,
                                           domain_m=9000 * scale + 5 * cell_m)
    out = [SampleHazardFile(p, HazardKind.FLOOD_DEPTH, "geotiff", None, r.issued_at)
           for p, r in zip(flood_paths, runs, strict=True)]
    west, south, east, north = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
    pad = 0.05
    bounds = (west - pad, south - pad, east + pad, north + pad)
    city_lon, city_lat = city_lonlat
    ref_time = utc(2024, 5, 13, 0)
    rain = write_rain_forecast(feeds_dir / "rain_forecast.nc", bounds,
                                       (city_lon - 0.05, city_lat), reference_time=ref_time,
                                       rng=rng)
    out.append(SampleHazardFile(rain, HazardKind.RAINFALL, "netcdf", "precipitation_amount",
                                ref_time))
    gust_time = utc(2024, 5, 14, 12)
    track = ((city_lon - 0.4, city_lat - 0.15), (city_lon + 0.4, city_lat + 0.15))
    gust = write_wind_gust_grib(feeds_dir / "wind_gust.grib2", bounds, track,
                                        data_time=gust_time, rng=rng)
    out.append(SampleHazardFile(gust, HazardKind.WIND_GUST, "grib2", "gust", gust_time))
    town_lon, town_lat = town_lonlat
    angle = rng.uniform(0, 2 * np.pi)
    epicentre = (town_lon + 0.04 * np.cos(angle), town_lat + 0.027 * np.sin(angle))
    quake_time = datetime(2024, 5, 16, 3, 12, 45, tzinfo=UTC)
    shake = write_shakemap_grid(
        feeds_dir / "shakemap_grid.xml", (west - 0.1, south - 0.1, east + 0.1, north + 0.1),
        epicentre, magnitude=round(float(rng.uniform(6.0, 6.6)), 1), depth_km=10.0,
        origin_time=quake_time, rng=rng)
    out.append(SampleHazardFile(shake, HazardKind.SHAKING_MMI, "shakemap", "MMI",
                                quake_time + timedelta(minutes=40)))
    return tuple(out)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A timezone-aware UTC datetime (shorthand for the fixed sample times)."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)
