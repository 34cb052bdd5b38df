"""Run every benchmark, each in its own process so peak memory is measured alone.

Usage: ``.venv/bin/python -m bench.run_all [NAME ...]``. Each benchmark prints its table and
writes ``bench/results/<name>.json``; run one alone (``python -m bench.bench_footprints
--size 2000``) to change its inputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = (
    "bench_exposure", "bench_footprints", "bench_access", "bench_matching", "bench_memory",
    "bench_dispatch", "bench_pipeline", "bench_replay", "bench_api",
)


def main() -> int:
    """Run the benchmarks in turn; exit non-zero if any failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help="benchmarks to run")
    args = parser.parse_args()
    failed = []
    for name in args.names:
        cmd = [sys.executable, "-m", f"bench.{name}"]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(cmd)
        print(f"== {name}: exit {code} after {time.perf_counter() - started:.1f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
