"""Benchmark: people by zone x severity class, our fused kernel against the usual tools.

Not a test. Prints a table and writes ``bench/results/bench_exposure.json``.

Data (``bench/_data.py``, seeded): a float32 population grid with urban clusters and a
no-data lake, Voronoi zones (polygons for the peers, rasterised once for us) and a flood
depth classified into 4 classes above class 0 (breaks 0.15, 0.5, 1.0, 2.0 m).

Timed, in one run:

a. ``geo.exposure.accumulate`` on the full grid, given the ``ZoneRaster`` (the per-hazard
   cost). The once-per-region-pack costs are timed apart: the rasterisation
   (``geo.zones.rasterize_zones``) and the run-length encoding of the zones
   (``ZoneRaster.runs``, cached on the raster). ``accumulate`` given only the zone index
   array (runs computed in the call, as windowed callers do) is timed too;
b. ``pop.sum()`` in numpy: the memory-bandwidth floor of any pass over the population;
c. exactextract: ``exact_extract(raster, polygons, "sum")`` on one raster with one band per
   class (band k = population where the cell's class is k, else 0), one call for all
   classes. exactextract weights partial cells by coverage fraction, so its totals differ
   slightly from cell-centre ones: only its speed is compared;
d. rasterstats: ``zonal_stats(polygons, band_k, affine=..., stats="sum")`` once per class
   (cell-centre rasterisation, like ours): its totals must agree with ours to 1e-6.

The peers are slow, so by default they run on the first ``--peer-rows`` rows of the grid
(and the zones clipped to them); throughput (cells/s) is compared, and our kernel is
re-run on the same rows for the agreement check. Run with ``NUMBA_NUM_THREADS`` set to
the cores you want (the figures in the report used 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._data import make_grid, make_hazard, make_population, make_zone_polygons  # noqa: E402
from geo.classes import classify  # noqa: E402
from geo.exposure import accumulate  # noqa: E402
from geo.grid import Grid  # noqa: E402
from geo.zones import rasterize_zones, zone_runs  # noqa: E402

BREAKS_M = (0.15, 0.5, 1.0, 2.0)
RESULTS = Path(__file__).resolve().parent / "results"


def best_of(repeats: int, fn, *args):  # noqa: ANN001, ANN201 - timing helper
    """Smallest wall time of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def best_of_alternating(repeats: int, fn, other):  # noqa: ANN001, ANN201 - timing helper
    """Smallest wall times of ``fn`` and ``other``, called in turn ``repeats`` times.

    Taking them in turn makes load from other processes on the machine hit both alike.
    Returns both times and ``fn``'s last result.
    """
    times, other_times, result = [], [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        other()
        other_times.append(time.perf_counter() - start)
    return min(times), min(other_times), result


def run_exactextract(pop: np.ndarray, cls: np.ndarray, grid: Grid, zones) -> float:  # noqa: ANN001
    import rasterio
    from exactextract import exact_extract
    from rasterio.io import MemoryFile

    n = len(BREAKS_M) + 1
    with MemoryFile() as mem:
        profile = {"driver": "GTiff", "height": pop.shape[0], "width": pop.shape[1],
                   "count": n, "dtype": "float32", "crs": grid.crs.to_wkt(),
                   "transform": grid.transform}
        with mem.open(**profile) as dst:
            for k in range(n):
                dst.write(np.where(cls == k, pop, np.float32(0)), k + 1)
        with rasterio.Env(), mem.open() as src:
            start = time.perf_counter()
            exact_extract(src, zones, "sum", output="pandas")
            return time.perf_counter() - start


def run_rasterstats(pop: np.ndarray, cls: np.ndarray, grid: Grid, zones):  # noqa: ANN001, ANN201
    from rasterstats import zonal_stats

    n = len(BREAKS_M) + 1
    out = np.zeros((len(zones), n))
    elapsed = 0.0
    for k in range(n):
        band = np.where(cls == k, pop, np.float32(0))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = zonal_stats(list(zones.geometry), band, affine=grid.transform,
                                stats="sum", nodata=-1e30)
        elapsed += time.perf_counter() - start
        out[:, k] = [s["sum"] or 0.0 for s in stats]
    return elapsed, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="grid is size x size cells")
    parser.add_argument("--zones", type=int, default=2_000)
    parser.add_argument("--peer-rows", type=int, default=2_500,
                        help="rows the peers run on (0 = all rows)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    shape = (args.size, args.size)
    n_classes = len(BREAKS_M)

    t0 = time.perf_counter()
    grid = make_grid(shape)
    pop = make_population(shape, 0)
    zones = make_zone_polygons(shape, args.zones, 0)
    cls = classify(make_hazard(shape, 0), BREAKS_M)
    print(f"data: {shape[0]} x {shape[1]} cells, {args.zones} zones, made in "
          f"{time.perf_counter() - t0:.1f} s; NUMBA_NUM_THREADS="
          f"{os.environ.get('NUMBA_NUM_THREADS', '(all cores)')}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    t_rasterize, zr = best_of(1, rasterize_zones, zones, grid)
    accumulate(zr.index[:8], cls[:8], [pop[:8]], zr.n_zones, n_classes)  # JIT / cache load
    zone_runs(zr.index[:8])
    t_runs, runs = best_of(1, lambda: zr.runs)
    import numba

    layer = numba.threading_layer()
    t_ours, t_numpy, sums = best_of_alternating(
        args.repeats, lambda: accumulate(zr, cls, [pop], zr.n_zones, n_classes), pop.sum
    )
    t_ours_array, sums_array = best_of(args.repeats, accumulate, zr.index, cls, [pop],
                                       zr.n_zones, n_classes)
    if not np.array_equal(sums, sums_array):
        raise SystemExit("accumulate on the zone raster and on its index array differ")
    cells = pop.size

    rows = args.peer_rows or shape[0]
    rows = min(rows, shape[0])
    sub_grid = Grid((rows, shape[1]), grid.transform, grid.crs)
    sub_pop = np.nan_to_num(pop[:rows])
    sub_cls = cls[:rows]
    import shapely
    sub_zones = zones.assign(geometry=shapely.intersection(zones.geometry.values,
                                                           shapely.box(*sub_grid.bounds)))
    sub_zones = sub_zones[~sub_zones.geometry.is_empty].reset_index(drop=True)
    sub_zr = rasterize_zones(sub_zones, sub_grid)
    sub_zr.runs  # noqa: B018 - once per region pack, as above
    t_sub_ours, sub_sums = best_of(args.repeats, accumulate, sub_zr, sub_cls, [sub_pop],
                                   sub_zr.n_zones, n_classes)
    t_ee = run_exactextract(sub_pop, sub_cls, sub_grid, sub_zones)
    t_rs, rs_sums = run_rasterstats(sub_pop, sub_cls, sub_grid, sub_zones)
    peer_cells = sub_pop.size

    ours_total = sub_sums[0, :-1, :].sum()
    rs_total = rs_sums.sum()
    rel_total = abs(ours_total - rs_total) / rs_total
    rel_cells = np.abs(sub_sums[0, :-1, :] - rs_sums).max() / rs_sums.max()

    speed = {
        "ours": cells / t_ours,
        "numpy_sum": cells / t_numpy,
        "ours_on_peer_rows": peer_cells / t_sub_ours,
        "exactextract": peer_cells / t_ee,
        "rasterstats": peer_cells / t_rs,
    }
    result = {
        "size": args.size, "zones": args.zones, "classes": n_classes + 1,
        "load_average_1min": os.getloadavg()[0],
        "peer_rows": rows, "numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
        "numba_threading_layer": layer,
        "runs": runs.n_runs, "mean_run_cells": cells / runs.n_runs,
        "seconds": {"rasterize_zones_once": t_rasterize, "zone_runs_once": t_runs,
                    "ours": t_ours, "ours_given_index_array": t_ours_array,
                    "numpy_sum": t_numpy, "ours_on_peer_rows": t_sub_ours,
                    "exactextract": t_ee, "rasterstats": t_rs},
        "cells_per_s": speed,
        "ratios": {
            "ours_vs_exactextract_speedup": speed["ours"] / speed["exactextract"],
            "ours_vs_rasterstats_speedup": speed["ours"] / speed["rasterstats"],
            "ours_time_over_numpy_sum_time": t_ours / t_numpy,
            "ours_given_index_array_over_numpy_sum_time": t_ours_array / t_numpy,
        },
        "agreement_with_rasterstats": {"total_relative_error": rel_total,
                                       "max_cell_relative_error": rel_cells},
        "grand_total_people": float(sums.sum()),
    }
    print(f"numba threading layer: {layer}")
    print(f"\nonce per region pack: zones rasterised {t_rasterize:.2f} s + zone runs "
          f"{t_runs:.3f} s ({runs.n_runs:,} runs, {cells / runs.n_runs:.0f} cells each) = "
          f"{t_rasterize + t_runs:.2f} s")
    print(f"{'method (per hazard)':<30}{'cells':>14}{'seconds':>10}{'Mcells/s':>11}")
    for name, n, t in [("ours (zone raster, runs)", cells, t_ours),
                       ("ours (index array)", cells, t_ours_array),
                       ("numpy pop.sum()", cells, t_numpy),
                       ("ours, peer rows", peer_cells, t_sub_ours),
                       ("exactextract, peer rows", peer_cells, t_ee),
                       ("rasterstats, peer rows", peer_cells, t_rs)]:
        print(f"{name:<30}{n:>14,}{t:>10.3f}{n / t / 1e6:>11.1f}")
    r = result["ratios"]
    print(f"\nours vs exactextract: {r['ours_vs_exactextract_speedup']:.0f}x faster (target >= 50)")
    print(f"ours vs rasterstats:  {r['ours_vs_rasterstats_speedup']:.0f}x faster (target >= 20)")
    print(f"ours / numpy sum:     {r['ours_time_over_numpy_sum_time']:.2f} (target <= 2); "
          f"given the index array: {r['ours_given_index_array_over_numpy_sum_time']:.2f}")
    print(f"agreement with rasterstats: total rel. error {rel_total:.2e}, worst zone x class "
          f"{rel_cells:.2e} (target 1e-6)")
    if rows < shape[0]:
        print(f"(peers ran on the first {rows} of {shape[0]} rows; speeds compared in cells/s)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_exposure.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
