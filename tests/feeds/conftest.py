"""Factories for tiny hazard files written in tmp_path, with values stated in each test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

GeoTiffFactory = Callable[..., Path]


@pytest.fixture
def make_geotiff(tmp_path: Path) -> GeoTiffFactory:
    """Write ``array`` (2-D, or 3-D for bands) as a GeoTIFF and return its path.

    Defaults: EPSG:4326, cells 1 x 1 degree, upper-left corner (10, 50).
    """

    def make(
        array: np.ndarray,
        *,
        name: str = "hazard.tif",
        crs: str | None = "EPSG:4326",
        origin: tuple[float, float] = (10.0, 50.0),
        res: float = 1.0,
        nodata: float | None = None,
        tags: dict[str, str] | None = None,
        descriptions: list[str] | None = None,
        units: list[str] | None = None,
        driver: str = "GTiff",
        cog: bool = False,
    ) -> Path:
        data = array if array.ndim == 3 else array[None, ...]
        path = tmp_path / name
        profile = {
            "driver": driver, "height": data.shape[1], "width": data.shape[2],
            "count": data.shape[0], "dtype": data.dtype.name,
            "transform": Affine(res, 0.0, origin[0], 0.0, -res, origin[1]), "nodata": nodata,
        }
        if crs is not None:
            profile["crs"] = crs
        if cog:
            profile.update(tiled=True, blockxsize=16, blockysize=16)
        with rasterio.Env():
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data)
                if tags:
                    dst.update_tags(**tags)
                for i, text in enumerate(descriptions or [], start=1):
                    dst.set_band_description(i, text)
                for i, text in enumerate(units or [], start=1):
                    dst.set_band_unit(i, text)
                if cog:
                    dst.build_overviews([2, 4], rasterio.enums.Resampling.average)
        return path

    return make


GribFactory = Callable[..., Path]


@pytest.fixture
def make_grib(tmp_path: Path) -> GribFactory:
    """Write one GRIB2 message per ``fields`` entry from eccodes' regular_ll sample.

    Each entry is ``(values, keys)``: ``values`` a 2-D array listed north row first, ``keys``
    GRIB keys to set (``shortName``, ``stepType``...). The grid is given by ``lat_first``
    (north), ``lon_first`` and 1-degree steps unless ``step_deg`` says otherwise.
    """
    import eccodes

    def make(
        fields: list[tuple[np.ndarray, dict[str, object]]],
        *,
        name: str = "hazard.grib2",
        lat_first: float = 50.0,
        lon_first: float = 10.0,
        step_deg: float = 1.0,
        missing: float | None = None,
    ) -> Path:
        path = tmp_path / name
        with open(path, "wb") as fh:
            for values, keys in fields:
                nj, ni = values.shape
                handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
                try:
                    eccodes.codes_set(handle, "Ni", ni)
                    eccodes.codes_set(handle, "Nj", nj)
                    eccodes.codes_set(handle, "iDirectionIncrementInDegrees", step_deg)
                    eccodes.codes_set(handle, "jDirectionIncrementInDegrees", step_deg)
                    eccodes.codes_set(handle, "jScansPositively", 0)
                    eccodes.codes_set(handle, "latitudeOfFirstGridPointInDegrees", lat_first)
                    eccodes.codes_set(handle, "longitudeOfFirstGridPointInDegrees", lon_first)
                    eccodes.codes_set(handle, "latitudeOfLastGridPointInDegrees",
                                      lat_first - (nj - 1) * step_deg)
                    eccodes.codes_set(handle, "longitudeOfLastGridPointInDegrees",
                                      lon_first + (ni - 1) * step_deg)
                    for key, value in keys.items():
                        eccodes.codes_set(handle, key, value)
                    if missing is not None:
                        eccodes.codes_set(handle, "bitmapPresent", 1)
                        eccodes.codes_set(handle, "missingValue", missing)
                    eccodes.codes_set_values(handle, values.astype("float64").ravel())
                    eccodes.codes_write(handle, fh)
                finally:
                    eccodes.codes_release(handle)
        return path

    return make


SHAKEMAP_3x4 = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<shakemap_grid xmlns="http://earthquake.usgs.gov/eqcenter/shakemap" event_id="test01"
 shakemap_id="test01" shakemap_version="2" process_timestamp="2024-05-01T10:00:00Z"
 map_status="RELEASED">
<event event_id="test01" magnitude="6.1" depth="10.0" lat="38.0" lon="-122.0"
 event_timestamp="2024-05-01T09:30:00UTC" event_description="Test quake" />
<grid_specification lon_min="-122.2" lat_min="37.9" lon_max="-121.9" lat_max="38.1"
 nominal_lon_spacing="0.1" nominal_lat_spacing="0.1" nlon="4" nlat="3" />
<grid_field index="1" name="LON" units="dd" />
<grid_field index="2" name="LAT" units="dd" />
<grid_field index="3" name="PGA" units="pctg" />
<grid_field index="4" name="PGV" units="cms" />
<grid_field index="5" name="MMI" units="intensity" />
<grid_data>
-122.2 38.1 1.0 2.0 4.0
-122.1 38.1 1.1 2.1 4.1
-122.0 38.1 1.2 2.2 4.2
-121.9 38.1 1.3 2.3 4.3
-122.2 38.0 2.0 3.0 5.0
-122.1 38.0 2.1 3.1 5.1
-122.0 38.0 2.2 3.2 7.5
-121.9 38.0 2.3 3.3 5.3
-122.2 37.9 3.0 4.0 6.0
-122.1 37.9 3.1 4.1 6.1
-122.0 37.9 3.2 4.2 6.2
-121.9 37.9 3.3 4.3 6.3
</grid_data>
</shakemap_grid>
"""
"""A hand-written 3 x 4 ShakeMap: MMI rows 4.0-4.3 / 5.0-7.5-5.3 / 6.0-6.3, max 7.5 at
row 1, column 2 (lon -122.0, lat 38.0)."""


@pytest.fixture
def shakemap_xml(tmp_path: Path) -> Path:
    """The 3 x 4 ShakeMap above, as a file."""
    path = tmp_path / "grid.xml"
    path.write_text(SHAKEMAP_3x4, encoding="utf-8")
    return path


@pytest.fixture
def truncate() -> Callable[..., Path]:
    """A function cutting a file to the first ``keep_share`` of its bytes, in place."""

    def cut(path: Path, keep_share: float = 0.6) -> Path:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep_share)])
        return path

    return cut
