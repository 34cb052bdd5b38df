"""The lat/lon grids of the sample hazard feeds (rain NetCDF, gust GRIB2, ShakeMap).

The NetCDF, GRIB2 and ShakeMap writers of :mod:`feeds.sample.hazards` and
:mod:`feeds.sample.shakemap_writer` all lay their fields on the same ~1 km lat/lon grid
and place storms and epicentres by distance; these helpers live here so that both modules
share them without importing each other.
"""

from __future__ import annotations

import numpy as np

from geo.types import BBox

LATLON_STEP_DEG = 0.01
"""Spacing of the lat/lon hazard grids (rain, gust, ShakeMap): about 1 km."""


def latlon_axes(bounds_lonlat: BBox, step_deg: float = LATLON_STEP_DEG) -> tuple[np.ndarray, ...]:
    """Cell-centre longitudes (west to east) and latitudes (north to south) over ``bounds``.

    The bounds are snapped outward to whole steps so that the grid covers them.
    """
    west, south, east, north = bounds_lonlat
    west = np.floor(west / step_deg) * step_deg
    south = np.floor(south / step_deg) * step_deg
    east = np.ceil(east / step_deg) * step_deg
    north = np.ceil(north / step_deg) * step_deg
    lons = np.round(west + step_deg * (np.arange(round((east - west) / step_deg)) + 0.5), 6)
    lats = np.round(north - step_deg * (np.arange(round((north - south) / step_deg)) + 0.5), 6)
    return lons, lats


def distance_km(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    """Equirectangular distance in km: plenty for a 50 km synthetic field."""
    dx = (lon - lon0) * 111.32 * np.cos(np.radians(lat0))
    dy = (lat - lat0) * 110.57
    return np.hypot(dx, dy)
