"""Benchmark: peak memory of the windowed overlay on a population file larger than memory.

Not a test. Writes (once, cached under ``bench/.data/``, which ignores itself in git) a
30,000 x 30,000 float32 population GeoTIFF, tiled 512 x 512 and deflate-compressed
(3.6 GB uncompressed), streaming it block row by block row. Then runs
``feeds.windows.windowed_exposure`` on it in a SUBPROCESS against a 1 km flood hazard and
2,000 zones, and reports the child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``)
and wall time. Target: peak RSS < 2 GB. Results go to ``bench/results/bench_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._data import make_grid, make_hazard, make_zone_polygons, population_block  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 512
HAZARD_CELL_FACTOR = 10  # the hazard has 1 km cells over the 100 m population grid


def write_population(path: Path, size: int, seed: int = 0) -> float:
    """Stream a size x size tiled, compressed population GeoTIFF; return seconds taken."""
    import rasterio
    from rasterio.windows import Window

    grid = make_grid((size, size))
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "float32",
        "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": float("nan"),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
        "zlevel": 1, "predictor": 1, "bigtiff": "YES", "num_threads": "all_cpus",
    }
    start = time.perf_counter()
    tmp = path.with_suffix(".partial.tif")
    with rasterio.Env(), rasterio.open(tmp, "w", **profile) as dst:
        for row_off in range(0, size, BLOCK):
            rows = min(BLOCK, size - row_off)
            block = population_block((size, size), seed, row_off, rows)
            dst.write(block, 1, window=Window(0, row_off, size, rows))
    tmp.replace(path)
    return time.perf_counter() - start


def child(path: Path, size: int, n_zones: int) -> None:
    """Run the windowed overlay and print its result as JSON (run in the subprocess)."""
    import xarray as xr

    from feeds.windows import windowed_exposure
    from geo.classes import SeverityClasses
    from geo.grid import Grid
    from geo.hazard import HazardGrid
    from geo.types import HazardKind, Nature

    hazard_shape = (size // HAZARD_CELL_FACTOR, size // HAZARD_CELL_FACTOR)
    hazard_grid = Grid.from_bounds(make_grid((size, size)).bounds, hazard_shape, "EPSG:3035")
    depth = make_hazard(hazard_shape, 0).astype(np.float64)
    hazard = HazardGrid(
        data=xr.DataArray(depth, dims=("y", "x")), grid=hazard_grid,
        kind=HazardKind.FLOOD_DEPTH, units="m", nature=Nature.OBSERVED, source="synthetic",
        checksum="sha256:" + "0" * 64,
    )
    zones = make_zone_polygons((size, size), n_zones, 0)
    start = time.perf_counter()
    sums, zone_ids = windowed_exposure(
        path, hazard, zones, SeverityClasses((0.15, 0.5, 1.0, 2.0), "m"), resampling="bilinear"
    )
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "zones": len(zone_ids),
                      "people": float(sums.sum()),
                      "people_in_class_1_plus": float(sums[0, :, 1:].sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--zones", type=int, default=2_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.size, args.zones)
        return

    DATA.mkdir(exist_ok=True)
    (DATA / ".gitignore").write_text("*\n")  # cached data never goes into git
    path = DATA / f"population_{args.size}.tif"
    t_write = None
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        t_write = write_population(path, args.size)
        print(f"written in {t_write:.1f} s ({path.stat().st_size / 2**30:.2f} GiB)")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--size", str(args.size),
         "--zones", str(args.zones)],
        capture_output=True, text=True, check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        raise SystemExit(f"child failed with {proc.returncode}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "size": args.size, "zones": args.zones, "file_gib": path.stat().st_size / 2**30,
        "file_write_seconds": t_write, "overlay_seconds": found["seconds"],
        "child_wall_seconds": wall, "peak_rss_mib": peak_mib,
        "people": found["people"], "people_in_class_1_plus": found["people_in_class_1_plus"],
    }
    print(f"{args.size} x {args.size} population ({args.size**2 * 4 / 2**30:.1f} GiB as "
          f"float32), {args.zones} zones")
    print(f"windowed overlay: {found['seconds']:.1f} s (child wall {wall:.1f} s incl. imports "
          f"and data set-up)")
    print(f"peak RSS of the child: {peak_mib:.0f} MiB (target < 2048 MiB)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_memory.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
