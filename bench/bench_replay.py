"""Benchmark: ``tocsin replay`` throughput, feed items per minute on one and two workers.

Run from the repository root::

    .venv/bin/python -m bench.bench_replay [--quick] [--workers 1 2] [--chains N]

Inputs (deterministic, under ``bench/.data/replay-<size>/``, ignored by git, reused): the
sample region (``tocsin region sample``, seed 7) and its three flood runs (Alert, Update,
Cancel), copied into ``--chains`` independent events: each copy re-tagged with its own
producer event id and issue times five days after the previous chain's (beyond the 48 h
event window), so the plan has one partition per chain and the workers have parallel work.
The demo's three agencies are subscribed (webhook, e-mail, SMS, CAP feed; ``--dispatch
none``: nothing is sent).

Per worker count, ``tocsin replay --workers N`` runs as its own process on the run's
filesystem broker into a fresh run folder. Measured: the assessment phase (the summary's
``assess_s``: from the group of chains being sent to the last item final) and the whole
command (process start, worker start, scans, plan, assessment, outputs). Items per minute
= items / assessment minutes; the scaling ratio is two workers' rate over one's. Every
run must give the same CAP bytes (checked).

``--quick``: an 80-cell region, 4 chains (12 items), about 2 minutes. Full: 240 cells,
8 chains (24 items). Writes ``bench/results/replay.json`` (``replay-quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
CHAIN_GAP = timedelta(days=5)
RUN_ISSUED = (timedelta(hours=6), timedelta(hours=18), timedelta(days=2, hours=6))
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def build_inputs(root: Path, size: int, chains: int) -> Path:
    """The region, the chains of flood runs, the feeds TOML and the live store (once)."""
    import rasterio

    from feeds.sample import build_sample_region
    from store.db import make_engine, session_scope, upgrade
    from workers.demo_agencies import register_agencies, write_feeds_file

    marker = root / f"ready-{chains}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    sample = build_sample_region(root / "region", seed=7, size=size)
    folder = root / "source" / "river-forecast"
    folder.mkdir(parents=True)
    for chain in range(chains):
        for run, offset in enumerate(RUN_ISSUED, start=1):
            issued = T0 + chain * CHAIN_GAP + offset
            target = folder / f"chain{chain:02d}_run{run}.tif"
            shutil.copyfile(sample.root / "feeds" / f"flood_depth_run{run}.tif", target)
            with rasterio.open(target, "r+") as dst:
                dst.update_tags(TOCSIN_EVENT_ID=f"BENCH-FLOOD-{chain:02d}",
                                TOCSIN_ISSUED_AT=issued.isoformat(),
                                TIFFTAG_DATETIME=issued.strftime("%Y:%m:%d %H:%M:%S"))
    write_feeds_file(root / "feeds.toml", sample.manifest, root / "incoming",
                     rain_threshold_mm=50.0)
    url = f"sqlite:///{root / 'live.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        register_agencies(session, sample.manifest, "https://hooks.example.org", None)
    engine.dispose()
    marker.write_text("ok\n", encoding="utf-8")
    return root


def run_replay(root: Path, workers: int, items: int) -> dict[str, Any]:
    """One ``tocsin replay --workers N`` in its own process; its figures."""
    out = root / f"run-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update(TOCSIN_DATA_DIR=str(root / "data"), TOCSIN_DATABASE_URL=f"sqlite:///"
               f"{root / 'live.db'}", TOCSIN_FEEDS_CONFIG=str(root / "feeds.toml"))
    cmd = [sys.executable, "-m", "workers.cli", "replay", "--archive", str(root / "source"),
           "--from", T0.isoformat(), "--to", (T0 + timedelta(days=400)).isoformat(),
           "--out", str(out), "--feeds", "river-forecast", "--workers", str(workers)]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    summary = json.loads((out / "outputs" / "summary.json").read_text("utf-8"))
    assert summary["assessed"] == items, summary
    caps = {p.name: p.read_bytes() for p in (out / "outputs" / "cap").glob("*.xml")}
    return {"workers": workers, "items": items, "partitions": summary["plan"]["partitions"],
            "assess_s": summary["assess_s"], "wall_s": round(wall_s, 2),
            "items_per_min": round(60.0 * items / summary["assess_s"], 1),
            "items_per_min_wall": round(60.0 * items / wall_s, 1),
            "messages": summary["messages"], "_caps": caps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="80 cells, 4 chains")
    parser.add_argument("--size", type=int, default=None, help="region cells a side")
    parser.add_argument("--chains", type=int, default=None, help="independent flood events")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    size = args.size or (80 if args.quick else 240)
    chains = args.chains or (4 if args.quick else 8)
    root = build_inputs(HERE / ".data" / f"replay-{size}", size, chains)
    items = 3 * chains
    runs = [run_replay(root, n, items) for n in args.workers]
    caps = [r.pop("_caps") for r in runs]
    identical = all(c == caps[0] for c in caps)
    by_workers = {r["workers"]: r for r in runs}
    ratio = (by_workers[2]["items_per_min"] / by_workers[1]["items_per_min"]
             if 1 in by_workers and 2 in by_workers else None)
    results = {"size": size, "chains": chains, "items": items, "cpu_count": os.cpu_count(),
               "load_average": [round(x, 2) for x in os.getloadavg()],
               "numba_num_threads": os.environ.get("NUMBA_NUM_THREADS", "auto"),
               "runs": runs, "scaling_ratio": round(ratio, 2) if ratio else None,
               "cap_identical": identical}
    name = "replay-quick.json" if args.quick else "replay.json"
    path = HERE / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\n{size} x {size} region, {chains} chains x 3 flood runs = {items} items; "
          f"{os.cpu_count()} cores, load average {results['load_average']}")
    print(f"{'workers':>8} {'assess s':>9} {'items/min':>10} {'wall s':>8} "
          f"{'items/min (wall)':>17}")
    for r in runs:
        print(f"{r['workers']:>8} {r['assess_s']:>9.1f} {r['items_per_min']:>10.1f} "
              f"{r['wall_s']:>8.1f} {r['items_per_min_wall']:>17.1f}")
    if ratio:
        print(f"scaling ratio (2 workers / 1): {ratio:.2f}")
    print(f"CAP bytes identical across worker counts: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
