"""Benchmark: the HTTP API under load on loopback, on SQLite and on PostGIS (issue 6).

Run from the repository root::

    .venv/bin/python -m bench.bench_api [--quick] [--backends sqlite,postgis] [--out DIR]

Per backend: a fresh store (SQLite file in a temporary folder; PostgreSQL + PostGIS in a
fresh schema, dropped afterwards) seeded with 10,000 alerts of 5,000-odd events and 1,000
agencies, each with a subscription, an API key, and the alerts its area was matched to
(:mod:`bench._api_seed`); the public Atom feed rendered from the newest 500 events (the
CAP feed channel's ``max_entries``). Then, for 1 and 2 server processes, the real server
(``uvicorn api.serve:app``, as ``tocsin serve`` runs it, rate limits off, access log off)
on a free loopback port, and the load generator (:mod:`bench._loadgen`, its own process,
16 keep-alive connections; a minimal asyncio HTTP/1.1 client, or ``--client httpx``) on
each scenario in turn:

- ``list``: ``GET /v1/alerts?bbox=...&limit=50``, the token of a different agency each
  request (1,000 rotating), a bbox of 10-60 km around that agency's area;
- ``feed``: ``GET /feed/public.atom`` (the file the CAP feed channel wrote);
- peers: ``GET /docs`` (a static HTML answer of the same app: the framework ceiling),
  ``GET /health`` (one ``SELECT 1``), and the same ``public.atom`` bytes from Starlette
  ``StaticFiles`` under uvicorn with as many processes (and, with one process, from a
  threaded ``http.server`` with HTTP/1.1 keep-alive).

Ratios: ``list`` against ``/docs``; ``feed`` against ``StaticFiles``. Also per backend:
the listing query alone in this process (p50/p95), and its plan (EXPLAIN). The load
generator shares the host's cores with the server and the database: its CPU use, the
server's and the host's are reported with each figure. Writes ``api.json`` and
``api.md`` under ``--out`` (default: a new temporary folder, never the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dispatch import (  # noqa: E402
    postgres_reachable,
    postgres_schema_url,
    stop_group,
)

ROOT = Path(__file__).resolve().parents[1]
FEED_ENTRIES = 500
N_REQUESTS = 4096


# --- stores -----------------------------------------------------------------------------


@contextmanager
def sqlite_url(folder: Path) -> Iterator[str]:
    """A new SQLite file."""
    yield f"sqlite:///{folder / 'tocsin.sqlite'}"


def seed(url: str, world: Any) -> dict[str, Any]:
    """Migrate, bulk-insert the world, ANALYZE on PostgreSQL; the seconds each took."""
    from bench._api_seed import insert_world
    from store.db import make_engine, make_session_factory, upgrade

    t0 = time.perf_counter()
    upgrade(url)
    t1 = time.perf_counter()
    engine = make_engine(url)
    insert_world(make_session_factory(engine), world)
    t2 = time.perf_counter()
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return {"migrate_s": round(t1 - t0, 2), "insert_s": round(t2 - t1, 2),
            "analyze_s": round(time.perf_counter() - t2, 2)}


def write_feed(url: str, world: Any, folder: Path) -> dict[str, Any]:
    """``public.atom`` of the newest messages of the newest ``FEED_ENTRIES`` events."""
    from alerts.channels.atom import FeedEntry, render_atom_feed
    from alerts.channels.cap_feed import merge_entries
    from store import repo
    from store.db import make_engine, make_session_factory, session_scope
    from workers.dispatch import build_alert_content

    newest = sorted(world.index, key=lambda r: (r["sent"], r["identifier"]), reverse=True)
    latest: dict[str, str] = {}
    for row in newest:
        latest.setdefault(row["event_id"], row["identifier"])
        if len(latest) == FEED_ENTRIES:
            break
    engine = make_engine(url)
    t0 = time.perf_counter()
    with session_scope(make_session_factory(engine)) as session:
        entries = [FeedEntry.from_alert(build_alert_content(repo.get_alert(session, i), "en"))
                   for i in latest.values()]
    engine.dispose()
    oldest = min(e.sent for e in entries)
    kept = merge_entries([], entries, now=oldest, max_entries=FEED_ENTRIES)
    data = render_atom_feed("public", "Tocsin alerts: public", kept,
                            updated=max(e.sent for e in kept), base_url=None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "public.atom").write_bytes(data)
    return {"entries": len(kept), "bytes": len(data),
            "render_s": round(time.perf_counter() - t0, 2)}


# --- what the store does for one listing, in this process --------------------------------


def store_alone(url: str, world: Any, requests: list[tuple[str, str | None]],
                agencies: list[str], bboxes: list[tuple[float, ...]]) -> dict[str, Any]:
    """Key check and listing query timed in this process; the listing's EXPLAIN."""
    from sqlalchemy import event

    from bench._loadgen import pct
    from store import api_store
    from store.db import make_engine, make_session_factory, session_scope

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    auth, query, items = [], [], []
    for (_, token), agency, bbox in list(zip(requests, agencies, bboxes, strict=True))[:300]:
        t0 = time.perf_counter()
        with session_scope(sessions) as session:
            api_store.authenticate(session, token or "", now=now)
        t1 = time.perf_counter()
        with session_scope(sessions) as session:
            page, _ = api_store.list_alerts(session, api_store.AlertFilter(bbox=bbox),
                                            agency_id=agency, limit=50)
        auth.append(t1 - t0)
        query.append(time.perf_counter() - t1)
        items.append(len(page))
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "alert_index" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    with session_scope(sessions) as session:
        api_store.list_alerts(session, api_store.AlertFilter(bbox=bboxes[0]),
                              agency_id=agencies[0], limit=50)
    event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = captured[0]
    prefix = ("EXPLAIN (ANALYZE, BUFFERS) " if engine.dialect.name == "postgresql"
              else "EXPLAIN QUERY PLAN ")
    with engine.connect() as connection:
        plan = [" | ".join(str(v) for v in row) for row in
                connection.exec_driver_sql(prefix + statement, parameters)]
    engine.dispose()
    ms = lambda v, q: round(1000 * pct(v, q), 2)  # noqa: E731
    return {"auth_p50_ms": ms(auth, 0.5), "auth_p95_ms": ms(auth, 0.95),
            "query_p50_ms": ms(query, 0.5), "query_p95_ms": ms(query, 0.95),
            "items_per_page_mean": round(sum(items) / len(items), 1),
            "full_pages_share": round(sum(i == 50 for i in items) / len(items), 2),
            "sql": statement, "plan": plan}


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def static_app() -> Any:
    """The static peer: Starlette ``StaticFiles`` over ``TOCSIN_BENCH_STATIC_DIR``."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/", StaticFiles(
        directory=os.environ["TOCSIN_BENCH_STATIC_DIR"]))])


def serve_http_static(directory: str, port: int) -> None:
    """The plain peer: a threaded ``http.server`` with HTTP/1.1 keep-alive, no logging."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=directory)
                        ).serve_forever()


@contextmanager
def server(cmd: list[str], env: dict[str, str], port: int, probe: str, log: Path
           ) -> Iterator[int]:
    """A server subprocess in its own process group, up when ``probe`` answers 200."""
    import httpx

    out = log.open("ab")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd)} did not start; see {log}:\n"
                                   + log.read_text(errors="replace")[-2000:])
            try:
                if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=2,
                             trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(1.0)  # the other worker processes, if any, come up meanwhile
        yield proc.pid
    finally:
        stop_group(proc)


def api_server(url: str, data_dir: Path, feed_dir: Path, workers: int, log: Path
               ) -> tuple[Any, int]:
    """The API as ``tocsin serve`` runs it, rate limits and the access log off."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update({"TOCSIN_DATA_DIR": str(data_dir), "TOCSIN_DATABASE_URL": url,
                "TOCSIN_CAP_FEED_DIR": str(feed_dir), "TOCSIN_API_RATE_PER_MIN": "0"})
    cmd = [sys.executable, "-m", "uvicorn", "api.serve:app", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--log-level", "warning",
           "--no-access-log"]
    return server(cmd, env, port, "/health", log), port


def static_server(feed_dir: Path, workers: int, log: Path) -> tuple[Any, int]:
    """``StaticFiles`` under uvicorn with ``workers`` processes."""
    port = free_port()
    env = {**os.environ, "TOCSIN_BENCH_STATIC_DIR": str(feed_dir)}
    cmd = [sys.executable, "-m", "uvicorn", "bench.bench_api:static_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning", "--no-access-log"]
    return server(cmd, env, port, "/public.atom", log), port


def http_server(feed_dir: Path, log: Path) -> tuple[Any, int]:
    """The threaded ``http.server`` peer."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.bench_api", "--serve-http-static", str(feed_dir),
           str(port)]
    return server(cmd, dict(os.environ), port, "/public.atom", log), port


# --- load -------------------------------------------------------------------------------


def load(port: int, pid: int, requests: list[tuple[str, str | None]], folder: Path,
         knobs: dict[str, Any]) -> dict[str, Any]:
    """One load-generator run (its own process) against ``port``."""
    spec = {"base_url": f"http://127.0.0.1:{port}", "requests": requests,
            "server_pid": pid, **knobs}
    spec_file, out_file = folder / "spec.json", folder / "load.json"
    spec_file.write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "bench._loadgen", str(spec_file), str(out_file)],
                   cwd=ROOT, check=True, timeout=knobs["warmup_s"] + knobs["duration_s"] + 120)
    return json.loads(out_file.read_text())


def list_requests(world: Any, n: int, seed: int = 7
                  ) -> tuple[list[tuple[str, str | None]], list[str], list[tuple[float, ...]]]:
    """``n`` listing requests: a random agency's token and a bbox around its area."""
    import numpy as np

    rng = np.random.default_rng(seed)
    requests, agencies, bboxes = [], [], []
    for _ in range(n):
        a = int(rng.integers(len(world.tokens)))
        minx, miny, maxx, maxy = world.sub_bounds[a]
        cx = (minx + maxx) / 2 + rng.normal(0, 0.05)
        cy = (miny + maxy) / 2 + rng.normal(0, 0.035)
        half = float(rng.uniform(0.05, 0.3))
        bbox = (round(cx - half * 1.45, 4), round(cy - half, 4), round(cx + half * 1.45, 4),
                round(cy + half, 4))
        requests.append((f"/v1/alerts?bbox={','.join(str(v) for v in bbox)}&limit=50",
                         world.tokens[a]))
        agencies.append(world.agencies[a]["agency_id"])
        bboxes.append(bbox)
    return requests, agencies, bboxes


def run_backend(name: str, url: str, world: Any, folder: Path, feed: dict[str, Any],
                worker_counts: list[int], knobs: dict[str, Any]) -> dict[str, Any]:
    """Seed one backend and measure every scenario and peer for each server size."""
    out: dict[str, Any] = {"seed": seed(url, world)}
    feed_dir = folder / "feed"
    if not (feed_dir / "public.atom").exists():
        feed.update(write_feed(url, world, feed_dir))
    requests, agencies, bboxes = list_requests(world, N_REQUESTS)
    out["store_alone"] = store_alone(url, world, requests, agencies, bboxes)
    data_dir = folder / f"data-{name}"
    data_dir.mkdir(exist_ok=True)
    log = folder / f"server-{name}.log"
    plain = {"docs": [("/docs", None)], "health": [("/health", None)],
             "feed": [("/feed/public.atom", None)]}
    out["runs"] = {}
    for workers in worker_counts:
        runs: dict[str, Any] = {}
        context, port = api_server(url, data_dir, feed_dir, workers, log)
        with context as pid:
            for scenario, reqs in (("list", requests), *plain.items()):
                runs[scenario] = load(port, pid, reqs, folder, knobs)
                print(f"  {name} x{workers} {scenario}: {runs[scenario]['rps']} rps, p95 "
                      f"{runs[scenario]['p95_ms']} ms, errors {runs[scenario]['errors']}",
                      flush=True)
            if workers == worker_counts[0]:
                runs["list_1conn"] = load(port, pid, requests, folder,
                                          {**knobs, "concurrency": 1})
        context, port = static_server(feed_dir, workers, folder / "static.log")
        with context as pid:
            runs["static_feed"] = load(port, pid, [("/public.atom", None)], folder, knobs)
        if workers == 1:
            context, port = http_server(feed_dir, folder / "http.log")
            with context as pid:
                runs["http_server_feed"] = load(port, pid, [("/public.atom", None)], folder,
                                                knobs)
        out["runs"][str(workers)] = runs
    return out


# --- report -------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    """The markdown table of every backend, server size and scenario."""
    lines = ["| backend | server processes | scenario | rps | p50 / p95 / p99 ms | errors | "
             "ratio to peer | cores: server / loadgen / host busy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    label = {"list": "`GET /v1/alerts?bbox` (limit 50, rotating tokens)",
             "list_1conn": "the same, 1 connection",
             "feed": "`GET /feed/public.atom`", "docs": "peer: `GET /docs` (no store)",
             "health": "peer: `GET /health` (`SELECT 1`)",
             "static_feed": "peer: same bytes, Starlette `StaticFiles`",
             "http_server_feed": "peer: same bytes, `http.server` (threads)"}
    peer = {"list": "docs", "list_1conn": None, "feed": "static_feed", "health": "docs"}
    for backend, res in results["backends"].items():
        if "error" in res:
            lines.append(f"| {backend} | | failed: {res['error'][:100]} | | | | | |")
            continue
        for workers, runs in res["runs"].items():
            for scenario, r in runs.items():
                ref = runs.get(peer.get(scenario) or "")
                ratio = f"{r['rps'] / ref['rps']:.3f} of {peer[scenario]}" if ref else ""
                cores = (f"{r['server_cores']:.2f} / {r['loadgen_cores']:.2f} / "
                         f"{2 * r['host_busy_share']:.2f}")
                lines.append(
                    f"| {backend} | {workers} | {label[scenario]} | {r['rps']:,.0f} | "
                    f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} / {r['p99_ms']:.1f} | "
                    f"{r['errors']} | {ratio} | {cores} |")
    return "\n".join(lines)


def main() -> int:
    """Parse the options, run every backend, write and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 alerts, 100 agencies, 1 server process, 2 s + 4 s a run")
    parser.add_argument("--backends", default="sqlite,postgis")
    parser.add_argument("--workers", default=None, help="server processes, e.g. 1,2")
    parser.add_argument("--alerts", type=int, default=None)
    parser.add_argument("--agencies", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=None, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=None, help="seconds not measured")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="the load generator's HTTP client (see bench._loadgen)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serve-http-static", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_http_static:
        serve_http_static(args.serve_http_static[0], int(args.serve_http_static[1]))
        return 0
    from bench._api_seed import build_world, check_sample

    n_alerts = args.alerts or (1_000 if args.quick else 10_000)
    n_agencies = args.agencies or (100 if args.quick else 1_000)
    worker_counts = [int(w) for w in (args.workers or ("1" if args.quick else "1,2")).split(",")]
    knobs = {"concurrency": args.concurrency, "client": args.client,
             "warmup_s": args.warmup or (2.0 if args.quick else 3.0),
             "duration_s": args.duration or (4.0 if args.quick else 10.0)}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="tocsin-bench-api-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(), "alerts": n_alerts, "agencies": n_agencies,
        "knobs": knobs, "server": "uvicorn api.serve:app (h11, asyncio loop), rate limits "
                                  "off, access log off", "backends": {}, "skipped": {}}
    t0 = time.perf_counter()
    world = build_world(n_alerts, n_agencies)
    results["world"] = {**world.counts(), "build_s": round(time.perf_counter() - t0, 1),
                        "cap_checked": check_sample(world)}
    print(f"world: {results['world']}", flush=True)
    feed: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-api-") as tmp:
        folder = Path(tmp)
        for name in backends:
            if name == "postgis" and (why := postgres_reachable()):
                print(f"SKIPPED the PostGIS backend: {why}")
                results["skipped"][name] = why
                continue
            print(f"== {name}", flush=True)
            opener = (postgres_schema_url("tocsin_bench_api") if name == "postgis"
                      else sqlite_url(folder))
            try:
                with opener as url:
                    results["backends"][name] = run_backend(name, url, world, folder, feed,
                                                            worker_counts, knobs)
            except Exception as exc:  # noqa: BLE001 - report it, measure the others
                results["backends"][name] = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
                print(f"FAILED the {name} backend: {exc}", file=sys.stderr)
    results["feed"] = feed
    results["load_average_end"] = os.getloadavg()
    (out_dir / "api.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = table(results)
    (out_dir / "api.md").write_text(text + "\n")
    print(f"\nfeed: {feed}")
    for name, res in results["backends"].items():
        if "store_alone" in res:
            alone = {k: v for k, v in res["store_alone"].items() if k not in ("sql", "plan")}
            print(f"{name}: seed {res['seed']}; in this process {alone}")
            print("  plan: " + "\n         ".join(res["store_alone"]["plan"]))
    print(text)
    print(f"written {out_dir / 'api.json'} and {out_dir / 'api.md'}")
    return 1 if any("error" in r for r in results["backends"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
