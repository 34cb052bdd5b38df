"""Benchmark: footprints of a 10,000 x 10,000 flood-depth grid, ours against the usual chain.

Run from the repository root::

    .venv/bin/python -m bench.bench_footprints [--size 10000]

Both paths start from the same class grid (classification is timed once, on its own):

- ours: :func:`geo.footprints.build_footprints` (max-pool, polygonise, vertex budget);
- naive: ``rasterio.features.sieve`` -> ``rasterio.features.shapes`` ->
  ``shapely.geometry.shape`` per polygon -> ``simplify`` per polygon.

Target: ours under 2 s at 10,000 x 10,000 on a 2-core machine. Writes
``bench/results/footprints.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import shapely
from rasterio.features import shapes, sieve
from shapely.geometry import shape

from bench._data import make_grid, make_hazard
from geo.classes import SeverityClasses, classify
from geo.footprints import build_footprints

BREAKS_M = (0.15, 0.5, 1.5)  # the default flood-depth classes
SIEVE_CELLS = 4  # the naive chain drops regions smaller than this
TARGET_S = 2.0
RESULTS = Path(__file__).resolve().parent / "results" / "footprints.json"


def naive_footprints(index: np.ndarray, transform, tolerance: float) -> list:
    """The straightforward chain: sieve, polygonise, shape() and simplify per polygon."""
    sieved = sieve(index, SIEVE_CELLS, connectivity=4)
    polygons = []
    for geom, value in shapes(sieved, mask=sieved > 0, transform=transform, connectivity=4):
        polygons.append((int(value), shape(geom).simplify(tolerance, preserve_topology=True)))
    return polygons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="cells a side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape_hw = (args.size, args.size)
    grid = make_grid(shape_hw)
    classes = SeverityClasses(BREAKS_M, "m")

    depth_m = make_hazard(shape_hw, args.seed)
    t0 = time.perf_counter()
    index = classify(depth_m, BREAKS_M)
    classify_s = time.perf_counter() - t0
    del depth_m

    t0 = time.perf_counter()
    frame = build_footprints(index, grid, classes)
    ours_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive = naive_footprints(index, grid.transform, tolerance=grid.res[0])
    naive_s = time.perf_counter() - t0

    covered = shapely.union_all(frame.geometry.values)
    result = {
        "grid": list(shape_hw),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "classify_s": round(classify_s, 3),
        "ours_s": round(ours_s, 3),
        "naive_s": round(naive_s, 3),
        "speedup": round(naive_s / ours_s, 1),
        "target_s": TARGET_S,
        "ours_within_target": ours_s < TARGET_S,
        "ours_pool_factor": int(frame.attrs["pool_factor"]),
        "ours_vertices": int(shapely.get_num_coordinates(frame.geometry.values).sum()),
        "ours_all_valid": bool(frame.is_valid.all()),
        "ours_area_km2": round(float(frame["area_km2"].sum()), 1),
        "cell_area_km2": round(float(frame["cell_area_km2"].sum()), 1),
        "ours_covers_grid_cells_area": bool(
            covered.area / 1e6 >= frame["cell_area_km2"].sum() * (1 - 1e-9)
        ),
        "naive_polygons": len(naive),
        "naive_vertices": int(sum(shapely.get_num_coordinates(g) for _, g in naive)),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
