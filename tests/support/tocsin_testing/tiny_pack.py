"""A tiny region pack (10 x 10 cells of 1 km, EPSG:3035, zones A and B) and its rasters.

Population is 10 a cell in the west half (columns 0-4, zone A) and 1 in the east (zone B),
so figures over it can be checked by hand.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine

X0, Y0 = 4_000_000.0, 3_000_000.0
GRID = Affine(1000.0, 0.0, X0, 0.0, -1000.0, Y0)


def tif_bytes(values: np.ndarray, transform: Affine = GRID, path: Path | None = None) -> bytes:
    profile = {"driver": "GTiff", "height": values.shape[0], "width": values.shape[1],
               "count": 1, "dtype": "float32", "crs": "EPSG:3035", "transform": transform}
    with rasterio.MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(values.astype("float32"), 1)
        data = memory.read()
    if path is not None:
        path.write_bytes(data)
    return data


def build_pack(folder: Path) -> None:
    folder.mkdir(parents=True)
    people = np.full((10, 10), 10.0, dtype="float32")
    people[:, 5:] = 1.0
    tif_bytes(people, path=folder / "population.tif")
    gpd.GeoDataFrame({"zone_id": ["A", "B"], "name": ["West", "East"]},
                     geometry=[shapely.box(X0, Y0 - 10_000, X0 + 5_000, Y0),
                               shapely.box(X0 + 5_000, Y0 - 10_000, X0 + 10_000, Y0)],
                     crs="EPSG:3035").to_file(folder / "zones.gpkg")
    (folder / "region.toml").write_text(
        '[region]\nname = "Tiny"\n\n[population]\npath = "population.tif"\nkind = "counts"\n'
        '\n[zones]\npath = "zones.gpkg"\nid = "zone_id"\nname = "name"\n', encoding="utf-8")
