"""eccodes must not crash the interpreter whichever of eccodes or pyproj is imported first.

eccodes 2.50 wheels bundle their own PROJ and segfault when imported before pyproj; the
project pins 2.39.2. Each order runs in a fresh interpreter because the crash is at import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

OPEN_GRIB = (
    "import xarray as xr\n"
    "ds = xr.open_dataset({path!r}, engine='cfgrib', backend_kwargs={{'indexpath': ''}})\n"
    "assert float(ds['gust'].max()) == 4.0, ds\n"
    "import geopandas, shapely\n"
    "geopandas.GeoSeries([shapely.Point(0, 0)], crs='EPSG:4326').to_crs('EPSG:3857')\n"
)
ECCODES_FIRST = "import eccodes, cfgrib\nimport pyproj, pyogrio, geopandas\n"
PYPROJ_FIRST = "import pyproj, pyogrio, geopandas\nimport eccodes, cfgrib\n"


@pytest.mark.parametrize("imports", [ECCODES_FIRST, PYPROJ_FIRST], ids=["eccodes_first",
                                                                         "pyproj_first"])
def test_importing_eccodes_and_pyproj_in_either_order_does_not_crash(
    make_grib, imports: str
) -> None:
    path: Path = make_grib([(np.array([[1.0, 2.0], [3.0, 4.0]]), {"shortName": "gust"})])
    code = imports + OPEN_GRIB.format(path=str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
