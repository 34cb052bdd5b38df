"""The overlay on real layers: ERA5 2 m temperature over the Swiss population density.

The expected figures are computed independently: the temperature is interpolated
bilinearly at every population cell centre with scipy (not rasterio), and the people per
class are summed with numpy from the density times geodesic cell areas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Geod
from scipy.interpolate import RegularGridInterpolator

from feeds.read import read_hazard
from feeds.region import load_region_pack
from geo.classes import SeverityClasses
from geo.errors import NoOverlapError
from geo.overlay import OverlayOptions, run_overlay

pytestmark = pytest.mark.realdata

SWISS_DENSITY = "raster/population/population-density_median.tif"
ERA5_T2M = "raster/grib/era5-single-level-scalar-time.grib"
BREAKS_K = (272.0, 273.0, 274.0)


@pytest.fixture(scope="module")
def swiss(real_data: Path, tmp_path_factory: pytest.TempPathFactory):
    manifest = tmp_path_factory.mktemp("swiss") / "region.toml"
    manifest.write_text(
        f'[region]\nname = "Swiss plateau"\n\n[population]\npath = '
        f'"{(real_data / SWISS_DENSITY).as_posix()}"\nkind = "density"\n', encoding="utf-8")
    return load_region_pack(manifest)


def _independent_people_by_class(real_data: Path, hazard) -> np.ndarray:
    with rasterio.open(real_data / SWISS_DENSITY) as src:
        density = src.read(1, masked=True).filled(0).astype(float)
        t = src.transform
    h, w = density.shape
    geod = Geod(ellps="WGS84")
    rows_km2 = np.array([
        abs(geod.polygon_area_perimeter(
            [t.c, t.c + t.a, t.c + t.a, t.c],
            [t.f + (r + 1) * t.e, t.f + (r + 1) * t.e, t.f + r * t.e, t.f + r * t.e])[0]) / 1e6
        for r in range(h)
    ])
    people = density * rows_km2[:, None]
    lon = t.c + (np.arange(w) + 0.5) * t.a
    lat = t.f + (np.arange(h) + 0.5) * t.e
    hx, hy = hazard.grid.xy_centres()
    values = hazard.values_2d()
    interp = RegularGridInterpolator((hy[::-1], hx), values[::-1], method="linear")
    yy, xx = np.meshgrid(lat, lon, indexing="ij")
    temp = interp(np.column_stack([yy.ravel(), xx.ravel()])).reshape(h, w)
    cls = np.searchsorted(np.array(BREAKS_K), temp, side="right")
    return np.bincount(cls.ravel(), weights=people.ravel(), minlength=len(BREAKS_K) + 1)


def test_people_by_temperature_class_match_an_independent_computation(
    swiss, real_data: Path
) -> None:
    hazard = read_hazard(real_data / ERA5_T2M)
    result = run_overlay(hazard, swiss, OverlayOptions(classes=SeverityClasses(BREAKS_K, "K")))
    ours = result.totals.set_index("class")["population"].reindex(range(4), fill_value=0.0)
    expected = _independent_people_by_class(real_data, hazard)
    assert ours.sum() == pytest.approx(expected.sum(), rel=1e-6)
    assert (ours.to_numpy()[1:] > 0).sum() >= 2, "the Swiss plateau spans several classes"
    # GDAL's bilinear sampling and scipy's agree at cell centres, so the classes agree too.
    np.testing.assert_allclose(ours.to_numpy(), expected, rtol=1e-6)


def test_a_real_windstorm_far_from_the_population_is_refused_not_zero(
    swiss, real_data: Path
) -> None:
    lothar = read_hazard(real_data / "raster/netcdf/fp_lothar_crop-test.nc")
    with pytest.raises(NoOverlapError):
        run_overlay(lothar, swiss)
