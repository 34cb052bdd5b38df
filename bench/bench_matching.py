"""Benchmark: matching a footprint against subscription polygons, ours against STRtree queries.

Run from the repository root::

    .venv/bin/python -m bench.bench_matching [--size 10000] [--n 1000000] [--n-classes 100000]
        [--ours-only]

The footprint is the default flood-depth classes (0.15, 0.5, 1.5 m) of
:func:`bench._data.make_hazard` on a ``size x size`` grid of 100 m cells (EPSG:3035); it is
taken as the population grid's class index. ``n`` subscriptions are random polygons of 0.5
to 20 km over the grid (half 5-30 vertex star polygons, a quarter convex polygons, a quarter
boxes drawn in lon/lat), seeded, given in EPSG:4326 WKT like real subscriptions.

Timed in one run:

- ours: :func:`alerts.matching.build_index` (once per subscription set, reported apart)
  and :func:`alerts.matching.match` (block maxima + exact scan lines), timed twice, with its
  stages (block maxima, per-part kernel) timed apart on a third run; target < 1 s;
- STRtree: the footprint (class >= 1) polygonised with ``rasterio.features.shapes`` and
  simplified by one cell, then ``STRtree(subscriptions).query(footprint, 'intersects')``;
- per class: one multipolygon per class level, ``shapely.intersects(multipolygon, subs)``
  for the first ``n_classes`` subscriptions (max class = highest level intersected).

Agreement: ours is exact at cell resolution (a subscription matches when it shares area
with a footprint cell). The STRtree query run on the *unsimplified* cell polygons, minus
pairs that only touch, computes the same thing with GEOS: the two sets must be equal. The
simplified query differs where simplification moved the boundary; those differences are
counted. Writes ``bench/results/matching.json``. ``--ours-only`` skips the STRtree and
per-class peers (minutes) and the agreement check, and prints without writing the file:
for iterating on :mod:`alerts.matching`, not for reporting.
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
from pyproj import Transformer
from rasterio.features import shapes

from alerts._matching_kernels import block_extrema, match_parts
from alerts.matching import SEGMENT_MAX_DEG, SubscriptionIndex, build_index, match
from alerts.model import Subscription
from bench._data import make_grid, make_hazard
from geo.classes import classify

BREAKS_M = (0.15, 0.5, 1.5)
TARGET_S = 1.0
MIN_SIZE_M, MAX_SIZE_M = 500.0, 20_000.0
RESULTS = Path(__file__).resolve().parent / "results" / "matching.json"


def random_polygons(n: int, bounds: tuple[float, ...], seed: int) -> np.ndarray:
    """``n`` polygons in the grid CRS: stars, convex polygons and (lon/lat) boxes."""
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = bounds
    cx = rng.uniform(minx, maxx, n)
    cy = rng.uniform(miny, maxy, n)
    size = np.exp(rng.uniform(np.log(MIN_SIZE_M), np.log(MAX_SIZE_M), n))
    n_vertices = rng.integers(5, 31, n)
    kind = rng.choice(3, n, p=[0.5, 0.25, 0.25])  # 0 star, 1 convex, 2 box
    n_vertices[kind == 2] = 4
    total = int(n_vertices.sum())
    owner = np.repeat(np.arange(n), n_vertices)
    first = np.concatenate([[0], np.cumsum(n_vertices)[:-1]])
    step = np.arange(total) - first[owner]
    angle = (step + rng.uniform(0, 1, total) * 0.8 * (kind[owner] != 2)) * 2 * np.pi / \
        n_vertices[owner] + np.pi / 4 * (kind[owner] == 2)
    radius = np.where(kind[owner] == 0, rng.uniform(0.3, 1.0, total), 1.0) * size[owner] / 2
    xs = cx[owner] + radius * np.cos(angle)
    ys = cy[owner] + radius * np.sin(angle)
    rings = shapely.linearrings(np.column_stack([xs, ys]), indices=owner)
    return shapely.polygons(rings)


def footprint_polygons(mask: np.ndarray, transform) -> np.ndarray:
    """Cell-exact polygons of a boolean mask (``rasterio.features.shapes``)."""
    found = shapes(mask.astype(np.uint8), mask=mask, transform=transform, connectivity=4)
    return np.array([shapely.geometry.shape(geom) for geom, _ in found], dtype=object)


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _match_stages(index: SubscriptionIndex, class_index: np.ndarray) -> dict[str, float]:
    """One more match, stage by stage: block maxima, per-part kernel, the rest."""
    t0 = time.perf_counter()
    block_max, block_min, sub_max = block_extrema(class_index)
    t1 = time.perf_counter()
    part_best = np.zeros(index.n_parts, dtype=np.uint8)
    match_parts(class_index, block_max, block_min, sub_max, 1, index.boxes, index.clipped,
                index.rectangular, index.inner, index.coords, index.ring_offsets,
                index.part_rings, part_best)
    t2 = time.perf_counter()
    best = np.zeros(len(index.subscription_ids), dtype=np.uint8)
    np.maximum.at(best, index.part_sub, part_best)
    positions = np.flatnonzero(best)
    tuple(index.id_array[positions].tolist())
    t3 = time.perf_counter()
    return {"block_extrema": round(t1 - t0, 3), "match_parts": round(t2 - t1, 3),
            "gather_ids": round(t3 - t2, 3)}


def main() -> None:  # noqa: C901 - one linear script, timed step by step
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="cells a side")
    parser.add_argument("--n", type=int, default=1_000_000, help="subscription polygons")
    parser.add_argument("--n-classes", type=int, default=100_000,
                        help="subscriptions for the per-class multipolygon query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-only", action="store_true",
                        help="time only build_index and match (no peers, no results file)")
    args = parser.parse_args()
    shape_hw = (args.size, args.size)
    grid = make_grid(shape_hw)
    class_index = classify(make_hazard(shape_hw, args.seed), BREAKS_M)
    top = int(class_index.max())

    polys_m = random_polygons(args.n, grid.bounds, args.seed)
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    polys_ll = shapely.transform(
        polys_m, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    wkts = shapely.to_wkt(polys_ll, rounding_precision=-1)
    subs = [Subscription(f"S{i:07d}", f"A{i % 997}", (w,)) for i, w in enumerate(wkts)]
    # The comparisons use the very polygons the index uses (segmentised, in the grid CRS).
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    sub_geoms = shapely.transform(
        shapely.segmentize(polys_ll, SEGMENT_MAX_DEG),
        lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
    del polys_m, polys_ll, wkts

    index, build_s = _timed(build_index, subs, grid)
    # Warm the compiled kernels on a tiny grid so compilation is not timed.
    small = build_index(subs[:10], make_grid((64, 64)))
    match(small, np.ones((64, 64), np.uint8))
    ours, match_s = _timed(match, index, class_index)
    ours_again, match_again_s = _timed(match, index, class_index)
    assert ours_again.subscription_ids == ours.subscription_ids
    stages = _match_stages(index, class_index)
    if args.ours_only:
        print(json.dumps({
            "grid": list(shape_hw), "subscriptions": args.n,
            "ours_build_index_s": round(build_s, 3), "ours_match_s": round(match_s, 3),
            "ours_match_again_s": round(match_again_s, 3), "ours_stages_s": stages,
            "ours_matched": len(ours.positions), "ours_exact_tests": ours.exact_tests,
        }, indent=2))
        return
    ours_ids = np.asarray(ours.positions)
    ours_max = np.zeros(args.n, dtype=np.uint8)
    ours_max[ours.positions] = ours.max_class

    mask = class_index >= 1
    exact_polys, polygonise_s = _timed(footprint_polygons, mask, grid.transform)
    simplified, simplify_s = _timed(shapely.simplify, exact_polys, grid.res[0],
                                    preserve_topology=True)
    tree, tree_s = _timed(shapely.STRtree, sub_geoms)
    pairs, query_s = _timed(tree.query, simplified, predicate="intersects")
    simple_ids = np.unique(pairs[1])

    exact_pairs, exact_query_s = _timed(tree.query, exact_polys, predicate="intersects")
    touching = shapely.touches(exact_polys[exact_pairs[0]], sub_geoms[exact_pairs[1]])
    exact_ids = np.unique(exact_pairs[1][~touching])

    first = sub_geoms[: args.n_classes]
    class_max = np.zeros(len(first), dtype=np.uint8)
    class_s = 0.0
    for k in range(1, top + 1):
        level = footprint_polygons(class_index >= k, grid.transform)
        multi = shapely.multipolygons(shapely.simplify(level, grid.res[0],
                                                       preserve_topology=True))
        t0 = time.perf_counter()
        shapely.prepare(multi)
        hit = shapely.intersects(multi, first)
        class_s += time.perf_counter() - t0
        class_max[hit] = k
    ours_first = ours_max[: args.n_classes]

    result = {
        "grid": list(shape_hw), "subscriptions": args.n, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "classes_present": top,
        "footprint_share": round(float(mask.mean()), 4),
        "ours_build_index_s": round(build_s, 3), "ours_match_s": round(match_s, 3),
        "ours_match_again_s": round(match_again_s, 3), "target_s": TARGET_S,
        "ours_within_target": match_s < TARGET_S, "ours_stages_s": stages,
        "ours_matched": len(ours_ids),
        "ours_exact_tests": ours.exact_tests,
        "strtree_polygonise_s": round(polygonise_s, 3), "strtree_simplify_s": round(simplify_s, 3),
        "strtree_build_s": round(tree_s, 3), "strtree_query_s": round(query_s, 3),
        "strtree_total_s": round(polygonise_s + simplify_s + query_s, 3),
        "footprint_polygons": len(exact_polys),
        "strtree_simplified_matched": len(simple_ids),
        "strtree_simplified_only": int(np.setdiff1d(simple_ids, ours_ids).size),
        "ours_only_vs_simplified": int(np.setdiff1d(ours_ids, simple_ids).size),
        "strtree_exact_query_s": round(exact_query_s, 3),
        "strtree_exact_equals_ours": bool(np.array_equal(exact_ids, ours_ids)),
        "strtree_exact_differences": int(np.setxor1d(exact_ids, ours_ids).size),
        "per_class_subscriptions": len(first), "per_class_query_s": round(class_s, 3),
        "per_class_matched": int((class_max > 0).sum()),
        "per_class_set_differences": int(((class_max > 0) != (ours_first > 0)).sum()),
        "per_class_max_class_differences": int((class_max != ours_first).sum()),
        "ratio_strtree_query_to_ours": round(query_s / match_s, 1),
        "ratio_strtree_total_to_ours": round((polygonise_s + simplify_s + query_s) / match_s, 1),
        # Ours matched all n subscriptions in match_s; the per-class query only n_classes.
        "ratio_per_class_to_ours": round(class_s / match_s, 1),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
