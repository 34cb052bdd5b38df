"""read_hazard: format sniffing by content, then name; every failure is a FeedError."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from feeds.errors import FeedCorruptError, FeedError, FeedFormatError, FeedNotFoundError
from feeds.read import FORMATS, read_hazard, sniff_format
from geo.types import HazardKind

GUSTS = np.array([[1.0, 2.0], [3.0, 4.0]])


def test_formats_registry_is_immutable_and_names_every_reader() -> None:
    assert set(FORMATS) == {"geotiff", "netcdf", "grib", "shakemap"}
    with pytest.raises(TypeError):
        FORMATS["x"] = FORMATS["grib"]  # type: ignore[index]


def test_content_wins_over_a_misleading_extension(make_geotiff, make_grib, shakemap_xml,
                                                  tmp_path: Path) -> None:
    tif = make_geotiff(GUSTS.astype("float32"), name="looks_like.nc")
    grib = make_grib([(GUSTS, {"shortName": "gust"})], name="looks_like.tif")
    xml_gz = tmp_path / "grid.bin"
    xml_gz.write_bytes(gzip.compress(shakemap_xml.read_bytes()))
    nc = tmp_path / "data.dat"
    xr.Dataset({"v": (("lat", "lon"), GUSTS)},
               coords={"lat": [1.0, 0.0], "lon": [0.0, 1.0]}).to_netcdf(nc, engine="netcdf4")
    assert [sniff_format(p) for p in (tif, grib, xml_gz, nc)] == [
        "geotiff", "grib", "shakemap", "netcdf"]


def test_read_hazard_dispatches_and_applies_keyword_options(make_grib, shakemap_xml) -> None:
    grib = make_grib([(GUSTS, {"shortName": "gust"}), (GUSTS * 2, {"shortName": "tp"})])
    rain = read_hazard(grib, variable="tp")
    assert rain.kind == HazardKind.RAINFALL and rain.values_2d()[1, 1] == 8.0
    assert read_hazard(shakemap_xml, variable="PGV").kind == HazardKind.SHAKING_PGV


def test_gzipped_non_xml_goes_to_gdal_and_the_extension_decides_for_ascii_grids(
    tmp_path: Path,
) -> None:
    asc = "ncols 2\nnrows 1\nxllcorner 0\nyllcorner 0\ncellsize 1\n5 6\n"
    gz = tmp_path / "depth.asc.gz"
    gz.write_bytes(gzip.compress(asc.encode()))
    plain = tmp_path / "depth.asc"
    plain.write_text(asc)
    assert sniff_format(gz) == "geotiff" and sniff_format(plain) == "geotiff"
    np.testing.assert_array_equal(read_hazard(plain, crs="EPSG:4326").values_2d(), [[5, 6]])


@pytest.mark.parametrize("name", ["noise.bin", "noise.tif", "noise.nc", "noise.grib2",
                                  "noise.xml"])
def test_random_bytes_give_a_feed_error_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(7).bytes(3000).replace(b"GRIB", b"XXXX"))
    with pytest.raises(FeedError) as info:
        read_hazard(path)
    assert name in str(info.value)
    assert isinstance(info.value, FeedFormatError | FeedCorruptError)


def test_missing_file_and_broken_gzip_are_feed_errors(tmp_path: Path) -> None:
    with pytest.raises(FeedNotFoundError):
        read_hazard(tmp_path / "nothing.grib2")
    broken = tmp_path / "grid.xml.gz"
    broken.write_bytes(gzip.compress(b"<shakemap_grid " + b"x" * 5000)[:30])
    with pytest.raises(FeedCorruptError, match="gzip"):
        read_hazard(broken)


@pytest.mark.parametrize("fmt", ["tif", "nc", "grib2", "xml"])
def test_truncated_files_of_each_format_are_feed_corrupt(
    fmt: str, make_geotiff, make_grib, shakemap_xml, tmp_path: Path, truncate
) -> None:
    values = np.random.default_rng(2).random((40, 40))
    if fmt == "tif":
        path = make_geotiff(values.astype("float32"))
    elif fmt == "grib2":
        path = make_grib([(values, {"shortName": "gust"})])
    elif fmt == "nc":
        path = tmp_path / "cut.nc"
        xr.Dataset({"v": (("lat", "lon"), values)},
                   coords={"lat": np.arange(40.0)[::-1], "lon": np.arange(40.0)}
                   ).to_netcdf(path, engine="netcdf4")
    else:
        path = shakemap_xml
    with pytest.raises(FeedCorruptError):
        read_hazard(truncate(path, 0.6))
