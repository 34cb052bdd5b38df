"""Every real hazard raster in the shared data set, checked against an independent read.

Expected values come from the raw files read another way in the test (eccodes message by
message, netCDF4 without xarray, the ShakeMap XML text, the GSBG bytes), never from the
readers under test.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from feeds.base import ReadOptions
from feeds.errors import FeedCorruptError, MissingCRSError, SelectionError
from feeds.read import read_hazard
from geo.types import HazardKind

pytestmark = pytest.mark.realdata


def _grib_messages(path: Path) -> list[dict[str, object]]:
    """shortName, stepType, Ni, Nj, values and lat/lon of every message, read with eccodes."""
    import eccodes

    out = []
    with open(path, "rb") as fh:
        while (handle := eccodes.codes_grib_new_from_file(fh)) is not None:
            keys = {k: eccodes.codes_get(handle, k) for k in ("shortName", "stepType", "Nj")}
            keys["Ni"] = eccodes.codes_get(handle, "Ni" if eccodes.codes_is_defined(
                handle, "Ni") else "Nx")
            keys["values"] = eccodes.codes_get_values(handle)
            keys["missing"] = eccodes.codes_get(handle, "numberOfMissing")
            keys["missingValue"] = eccodes.codes_get(handle, "missingValue")
            keys["typeOfLevel"] = eccodes.codes_get(handle, "typeOfLevel")
            if keys["Ni"] * keys["Nj"] < 10_000:
                keys["lats"] = eccodes.codes_get_array(handle, "latitudes")
                keys["lons"] = eccodes.codes_get_array(handle, "longitudes")
            eccodes.codes_release(handle)
            out.append(keys)
    return out


@pytest.fixture(scope="module")
def grib_dir(real_data: Path) -> Path:
    return real_data / "raster" / "grib"


def test_nam_surface_gust_on_its_lambert_grid(grib_dir: Path) -> None:
    path = grib_dir / "nam.t00z.awp21100.tm00.grib2"
    with pytest.raises(SelectionError, match="typeOfLevel"):
        read_hazard(path, variable="t")  # 't' lives on several level types
    hazard = read_hazard(path, variable="gust", filter_keys={"typeOfLevel": "surface"})
    raw = next(m for m in _grib_messages(path)
               if m["shortName"] == "gust" and m["typeOfLevel"] == "surface")
    # jScansPositively: eccodes lists the southern row first; the reader flips to north-up
    expected = np.asarray(raw["values"]).reshape(65, 93)[::-1]
    np.testing.assert_allclose(hazard.values_2d(), expected)
    assert hazard.kind == HazardKind.WIND_GUST and hazard.grid.shape == (65, 93)
    assert "Lambert Conic Conformal" in hazard.grid.crs.coordinate_operation.method_name
    # every grid point's own lat/lon must project onto its cell centre
    to_xy = Transformer.from_crs("EPSG:4326", hazard.grid.crs, always_xy=True)
    lats = np.asarray(raw["lats"]).reshape(65, 93)[::-1]
    lons = np.asarray(raw["lons"]).reshape(65, 93)[::-1]
    xs, ys = hazard.grid.xy_centres()
    for row, col in [(0, 0), (10, 50), (64, 92), (32, 46)]:
        x, y = to_xy.transform(lons[row, col], lats[row, col])
        assert abs(x - xs[col]) < 0.01 * hazard.grid.res[0]
        assert abs(y - ys[row]) < 0.01 * hazard.grid.res[1]


def test_global_msl_longitudes_are_rolled_to_minus_180(grib_dir: Path) -> None:
    hazard = read_hazard(grib_dir / "regular_ll_msl.grib")
    raw = _grib_messages(grib_dir / "regular_ll_msl.grib")[0]
    values = np.asarray(raw["values"]).reshape(181, 360)
    assert hazard.grid.bounds == pytest.approx((-180.5, -90.5, 179.5, 90.5))
    out = hazard.values_2d()
    np.testing.assert_array_equal(out[:, 180], values[:, 0])  # lon 0 now mid-grid
    np.testing.assert_array_equal(out[:, 0], values[:, 180])  # lon 180 -> -180 first
    assert hazard.data.x.values.min() == -180.0 and hazard.data.x.values.max() == 179.0


def test_era5_grib1_two_metre_temperature(grib_dir: Path) -> None:
    hazard = read_hazard(grib_dir / "era5-single-level-scalar-time.grib")
    raw = _grib_messages(grib_dir / "era5-single-level-scalar-time.grib")[0]
    np.testing.assert_allclose(hazard.values_2d(), np.asarray(raw["values"]).reshape(121, 201))
    assert hazard.grid.bounds == pytest.approx((-10.125, 29.875, 40.125, 60.125))
    assert hazard.kind == HazardKind.HEAT and hazard.units == "K"


def test_missing_values_bitmap_gives_10808_nan_cells(grib_dir: Path) -> None:
    path = grib_dir / "fields_with_missing_values.grib"
    raws = _grib_messages(path)
    hazard = read_hazard(path, time=0)
    assert raws[0]["missing"] == 10_808
    assert int(np.isnan(hazard.values_2d()).sum()) == 10_808
    both = read_hazard(path)
    assert both.extra_dims == ("time",)
    assert int(np.isnan(both.data.values).sum()) == raws[0]["missing"] + raws[1]["missing"]


def test_total_precipitation_on_two_grids_is_selected_not_stacked(grib_dir: Path) -> None:
    path = grib_dir / "tp_on_different_grid_resolutions.grib"
    with pytest.raises(SelectionError, match="Ni"):
        read_hazard(path)
    raws = {m["Ni"]: m for m in _grib_messages(path)}
    for ni, nj in ((72, 37), (90, 46)):
        hazard = read_hazard(path, filter_keys={"Ni": ni})
        assert hazard.grid.shape == (nj, ni) and hazard.kind == HazardKind.RAINFALL
        assert np.nanmax(hazard.values_2d()) == pytest.approx(np.max(raws[ni]["values"]))


def test_convective_rate_needs_a_step_type_and_reads_each(grib_dir: Path) -> None:
    path = grib_dir / "cfrzr_and_cprat.grib"
    with pytest.raises(SelectionError, match="stepType"):
        read_hazard(path, variable="cpr")
    raws = {m["stepType"]: m for m in _grib_messages(path) if m["shortName"] == "cpr"}
    for step_type in ("instant", "avg"):
        hazard = read_hazard(path, variable="cpr", filter_keys={"stepType": step_type})
        assert hazard.grid.shape == (45, 90)
        assert np.nansum(hazard.values_2d()) == pytest.approx(np.sum(raws[step_type]["values"]))


def test_ndfd_wave_height_on_mercator(grib_dir: Path) -> None:
    path = grib_dir / "ds.waveh.5.grib"
    hazard = read_hazard(path)
    raw = _grib_messages(path)[0]
    values = np.asarray(raw["values"])
    valid = values[values != raw["missingValue"]]
    assert hazard.grid.shape == (1793, 2517) and hazard.kind == HazardKind.WAVE_HEIGHT
    assert int(np.isnan(hazard.values_2d()).sum()) == raw["missing"] == 3_431_422
    assert np.nanmax(hazard.values_2d()) == pytest.approx(valid.max())
    assert np.nanmean(hazard.values_2d()) == pytest.approx(valid.mean(), rel=1e-6)


def test_truncated_era5_grib_is_feed_corrupt(grib_dir: Path) -> None:
    with pytest.raises(FeedCorruptError, match="truncated or damaged"):
        read_hazard(grib_dir / "era5-levels-corrupted.grib")


@pytest.mark.parametrize("name", ["fp_lothar_crop-test.nc", "fp_xynthia_crop-test.nc"])
def test_windstorm_footprints_match_the_raw_netcdf(real_data: Path, name: str) -> None:
    import netCDF4

    path = real_data / "raster" / "netcdf" / name
    with netCDF4.Dataset(path) as nc:
        raw = np.ma.filled(nc["max_wind_gust"][0], np.nan).astype("float64")
        lats, lons = nc["latitude"][:], nc["longitude"][:]
    hazard = read_hazard(path)
    assert hazard.grid.shape == (88, 113) and hazard.kind == HazardKind.WIND_GUST
    np.testing.assert_allclose(hazard.values_2d(), raw[::-1])  # latitudes ascend in the file
    assert hazard.grid.bounds[1] == pytest.approx(lats[0] - 0.02, abs=1e-3)
    assert hazard.grid.bounds[0] == pytest.approx(lons[0] - 0.02, abs=1e-3)
    # the global max_gust_speed attribute describes the uncropped storm, not this crop
    assert np.nanmax(hazard.values_2d()) == pytest.approx(np.nanmax(raw))


def test_cosmo_e_ensemble_selection_and_reduction(real_data: Path) -> None:
    import netCDF4

    path = real_data / "raster" / "netcdf" / "storm_europe_cosmoe_forecast_vmax_testfile.nc"
    with netCDF4.Dataset(path) as nc:
        raw = np.asarray(nc["VMAX_10M"][:], dtype="float64")  # (time, member, y, x), y ascends
    kept = read_hazard(path)
    assert kept.extra_dims == ("time", "epsd_1") and kept.data.shape == (24, 21, 5, 5)
    one = read_hazard(path, time=3, member=2)
    np.testing.assert_allclose(one.values_2d(), raw[3, 2, ::-1], rtol=1e-6)
    assert one.valid_at is not None and one.valid_at.hour == 3
    peak = read_hazard(path, time="2018-01-03T05:00", reduce="max")
    np.testing.assert_allclose(peak.values_2d(), raw[5].max(axis=0)[::-1], rtol=1e-6)
    share = read_hazard(path, time=5, reduce="exceedance", threshold=10.0)
    np.testing.assert_allclose(share.values_2d(), (raw[5] >= 10.0).mean(axis=0)[::-1])
    assert share.units == "1" and share.kind == HazardKind.PROBABILITY
    assert one.grid.crs.to_epsg() == 4326 and one.grid.bounds[3] == pytest.approx(47.05, abs=1e-3)


def test_venezuela_flood_grid_auto_detects_the_minus_9999_nodata(real_data: Path) -> None:
    path = real_data / "raster" / "flood" / "SC22000_VE__M1.grd.gz"
    raw = gzip.decompress(path.read_bytes())
    nx, ny = (int(v) for v in np.frombuffer(raw[4:8], "<i2"))
    depths = np.frombuffer(raw[56:], "<f4").reshape(ny, nx)[::-1]  # GSBG rows run south first
    with pytest.raises(MissingCRSError):
        read_hazard(path)
    hazard = read_hazard(path, crs="EPSG:4326")
    assert hazard.grid.shape == (1073, 962)
    assert "auto-detected" in hazard.attrs["nodata_sentinel"]
    assert int(np.isnan(hazard.values_2d()).sum()) == int((depths == -9999).sum()) == 143_263
    valid = depths[depths != -9999]
    assert np.nanmax(hazard.values_2d()) == pytest.approx(valid.max())
    assert np.nanmean(hazard.values_2d()) == pytest.approx(valid.mean(), rel=1e-5)
    explicit = read_hazard(path, crs="EPSG:4326", nodata=-9999.0)
    assert int(np.isnan(explicit.values_2d()).sum()) == 143_263


def test_population_density_geotiff_reads_like_rasterio(real_data: Path) -> None:
    path = real_data / "raster" / "population" / "population-density_median.tif"
    with rasterio.open(path) as src_dst:
        raw = src_dst.read(1, masked=True)
        bounds, shape = tuple(src_dst.bounds), src_dst.shape
    hazard = read_hazard(path)
    assert hazard.grid.shape == shape == (166, 372)
    assert hazard.grid.bounds == pytest.approx(bounds)
    assert np.nansum(hazard.values_2d()) == pytest.approx(float(raw.sum()), rel=1e-6)


def _shakemap_rows(path: Path) -> np.ndarray:
    text = gzip.decompress(path.read_bytes()).decode()
    body = text.split("<grid_data>")[1].split("</grid_data>")[0]
    return np.array([line.split() for line in body.strip().splitlines()], dtype="float64")


@pytest.mark.parametrize(("field", "column", "units"), [("MMI", 4, "MMI"), ("PGA", 2, "%g"),
                                                        ("PGV", 3, "cm/s")])
def test_loma_prieta_shakemap_matches_the_xml_rows(
    real_data: Path, field: str, column: int, units: str
) -> None:
    path = real_data / "shakemap" / "lomaprieta_1989" / "lomaprieta_grid.xml.gz"
    rows = _shakemap_rows(path)
    hazard = read_hazard(path, ReadOptions(variable=field))
    values = hazard.values_2d()
    assert hazard.grid.shape == (193, 241) and hazard.units == units
    assert values.max() == pytest.approx(rows[:, column].max())
    # row 0 is lat 39.434 (the first XML line); XML line k is grid cell (k // 241, k % 241)
    for line in (0, 240, 241 * 100 + 120, len(rows) - 1):
        assert values[line // 241, line % 241] == rows[line, column]
        x, y = hazard.data.x.values[line % 241], hazard.data.y.values[line // 241]
        assert (x, y) == pytest.approx((rows[line, 0], rows[line, 1]), abs=1e-3)
    assert hazard.event_id == "19891018000415"
