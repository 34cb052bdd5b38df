"""Benchmark: travel time to hospitals under a flood, full recompute against incremental.

Run from the repository root::

    .venv/bin/python -m bench.bench_access [--sizes 400 2000]

For each size, a synthetic friction surface (100 m cells: countryside at 0.012 min/m,
i.e. 5 km/h on foot, with a lattice of roads at 0.001 min/m, 60 km/h) with hospitals on
the roads, and the flood of :func:`bench._data.make_hazard` made impassable where
its depth is 0.5 m or more. The baseline (computed once per region pack) is excluded from
the timed part; the incremental update (:func:`geo.access.access_under_hazard`) is
timed after one untimed call that compiles its numba kernels, and checked equal to a
full recompute. Target: under 5 s per hazard. Writes ``bench/results/access.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import geopandas as gpd
import numpy as np
import shapely

from bench._data import make_grid, make_hazard
from geo.access import access_under_hazard, compute_access_baseline, travel_time_min
from geo.errors import TargetsIgnoredWarning
from geo.raster import Raster

OFF_ROAD_MIN_PER_M = 0.012  # 5 km/h on foot
ROAD_MIN_PER_M = 0.001  # 60 km/h
ROAD_SPACING_CELLS = 40  # a road every 4 km
IMPASSABLE_DEPTH_M = 0.5  # cars float
HOSPITALS_PER_MEGACELL = 25
TARGET_S = 5.0
RESULTS = Path(__file__).resolve().parent / "results" / "access.json"


def make_friction(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Minutes per metre: slow countryside with +-30 % noise and a lattice of fast roads."""
    rng = np.random.default_rng((seed, 7))
    friction = OFF_ROAD_MIN_PER_M * rng.uniform(0.7, 1.3, shape)
    friction[::ROAD_SPACING_CELLS, :] = ROAD_MIN_PER_M
    friction[:, ::ROAD_SPACING_CELLS] = ROAD_MIN_PER_M
    return friction


def run(size: int, seed: int) -> dict:
    """Time the baseline, a full recompute and the incremental update on one size."""
    shape = (size, size)
    grid = make_grid(shape)
    friction = Raster(np.ma.masked_invalid(make_friction(shape, seed)), grid, "min/m")
    rng = np.random.default_rng((seed, 8))
    n_hospitals = max(2, int(HOSPITALS_PER_MEGACELL * size * size / 1e6))
    rows = rng.integers(0, size // ROAD_SPACING_CELLS, n_hospitals) * ROAD_SPACING_CELLS
    cols = rng.integers(0, size, n_hospitals)
    xs, ys = grid.transform @ (cols + 0.5, rows + 0.5)
    hospitals = gpd.GeoDataFrame(
        {"type": ["hospital"] * n_hospitals}, geometry=shapely.points(xs, ys), crs=grid.crs
    )
    depth_m = make_hazard(shape, seed)
    flooded = np.nan_to_num(depth_m, nan=0.0) >= IMPASSABLE_DEPTH_M

    t0 = time.perf_counter()
    baseline = compute_access_baseline(friction, hospitals, "hospital")
    baseline_s = time.perf_counter() - t0

    one_cell = np.zeros(shape, dtype=bool)
    one_cell[size // 2, size // 2] = True
    t0 = time.perf_counter()
    access_under_hazard(baseline, one_cell)  # warm-up: loads or compiles the numba kernels
    warmup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    incremental = access_under_hazard(baseline, flooded)
    incremental_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with warnings.catch_warnings():  # flooded hospitals are ignored, with a warning
        warnings.simplefilter("ignore", TargetsIgnoredWarning)
        full = travel_time_min(friction, np.column_stack([xs, ys]), impassable=flooded)
    full_s = time.perf_counter() - t0

    changed = incremental != baseline.times_min
    return {
        "grid": list(shape),
        "hospitals": n_hospitals,
        "flooded_share": round(float(flooded.mean()), 3),
        "changed_share": round(float(changed.mean()), 3),
        "baseline_s": round(baseline_s, 3),
        "first_incremental_call_s": round(warmup_s, 3),
        "full_recompute_s": round(full_s, 3),
        "incremental_s": round(incremental_s, 3),
        "speedup": round(full_s / incremental_s, 1),
        "equal_to_full_recompute": bool(np.array_equal(incremental, full)),
        "within_target": incremental_s < TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 2000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {
        "cpu_count": os.cpu_count(),
        "target_s": TARGET_S,
        "runs": [run(size, args.seed) for size in args.sizes],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
