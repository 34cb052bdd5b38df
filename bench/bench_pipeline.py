"""Benchmark: a hazard file lands in a watched folder; time until every webhook has arrived.

Run from the repository root::

    .venv/bin/python -m bench.bench_pipeline [--quick] [--stores embedded redis] [--profile]

What runs, per store, through the real live workers (``tocsin worker --beat --concurrency
2``: the Celery prefork pool with two processes and the beat, as a deployment runs it):

- ``embedded``: the embedded default, no server: kombu's filesystem broker and a SQLite
  file, both under the data directory;
- ``redis``: Redis db 13 (flushed first) as broker and PostgreSQL in a fresh schema
  (dropped afterwards) as store.

Inputs (deterministic, under ``bench/.data/pipeline-<size>/``, ignored by git, reused):

- a region pack: population (``bench._data.population_block``, float32, tiled 512 x 512,
  deflate) on the EPSG:3035 100 m grid, 2,000 Voronoi zones (GeoPackage), and a manifest
  with only ``[region]``, ``[population]`` and ``[zones]``: no groups, facilities or
  friction, so the access-to-care step is skipped;
- three flood-depth GeoTIFFs of the same size (``bench._data.make_hazard``, float32, tiled,
  deflate, ``TOCSIN_ISSUED_AT`` one hour apart): the flood (an Alert), the same flood 1.6x
  deeper (more people and area: an Update), then receded below the lowest break (0.04x;
  the decision is reported as the store made it);
- 10,000 subscriptions of 100 agencies (webhook to the local receiver, ``/hook/<agency>``,
  min level yellow): nine in ten a lon/lat box of 2 to 6 km somewhere over the region, one
  in ten two or three zone codes; half of them for floods only. Stored in one transaction
  with ``repo.add_agency`` / ``repo.add_subscription`` (no ``validate_subscription``).

One feeds TOML with one directory feed (``poll_interval_s = 1``, ``settle_s = 0.5``) and
``TOCSIN_FEEDS_TICK_S=1``. The workers are warmed first: four all-dry hazard files (every
pool process loads the region pack and rasterises the zones; no alert) and a few webhook
deliveries of an unrelated alert (every process builds its dispatch context). Then, per
round, the hazard is copied to a hidden temporary name in the watched folder and renamed
into place at t0 (``time.time()``); the round ends when its feed item is assessed and every
webhook delivery of its alert has reached the receiver (an asyncio HTTP/1.1 server in its
own process, ``bench.bench_dispatch``'s, recording the wall-clock arrival of each
``Idempotency-Key``).

Stages, from the store's own timestamps (same machine, same clock): t0 -> ``fetched_at``
(the poll that archived the file started: detection, settle), -> ``assessed_at`` (the
archive copy and the hand-off to the ``analysis`` queue), -> ``assessed_at + assess_s``
(read, overlay, decision, CAP, matching, the alert and its outbox committed), -> first
receipt (enqueue, dispatch start), -> last receipt (the dispatch drain). Latency per
delivery is receipt - t0; target p95 under 10 s.

Peers, same inputs, this process: ``read_hazard`` + ``geo.overlay.run_overlay`` alone (warm
cache), ``run_assess`` alone on a SQLite store with the same subscriptions (``--profile``
also runs it under cProfile and prints the top functions), and a bare keep-alive
``httpx`` POST loop to the same receiver (the ceiling of a Python sender here).

The peers run first. When the assessment is estimated (matched subscriptions x the time
of ``alerts.matching.exposure_for`` on a sample of five) to outlast the round timeout
(240 s; 90 s with ``--quick``), the live rounds are skipped with that reason
(``--force-live`` runs them anyway): at 10,000 x 10,000 it is hours, see bench/README.md.

``--quick``: 1,000 x 1,000 cells, 200 subscriptions, about 3 minutes (the per-subscriber
exposure makes 1,000 subscriptions on 2,000 x 2,000 cells take over two minutes a round).
Redis or PostgreSQL unreachable: that store is skipped with a message, the embedded one
still runs.
Writes ``bench/results/pipeline.json`` (``pipeline-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dispatch import (  # noqa: E402
    REDIS_HOST,
    REDIS_PORT,
    Receiver,
    bare_loop,
    compose_record,
    pct,
    postgres_reachable,
    postgres_schema_url,
    redis_reachable,
    sample_body,
    stop_group,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RESULTS = HERE / "results" / "pipeline.json"
REDIS_DB = 13
SECRET = "bench-pipeline-secret"
FEED_ID = "bench-river"
TARGET_P95_S = 10.0
N_AGENCIES = 100
N_ZONES = 2000
BLOCK = 512
ISSUED_BASE = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
ROUNDS = (("flood (Alert)", 1.0), ("grown flood (Update)", 1.6),
          ("receded below the lowest break", 0.04))
N_WARM_FILES = 4
EXPOSURE_SAMPLE = 5  # matched subscriptions timed through exposure_for for the estimate
DONE = ("assessed", "skipped", "quarantined")


# --- inputs ------------------------------------------------------------------------------


def _profile(size: int) -> dict[str, Any]:
    from bench._data import make_grid

    grid = make_grid((size, size))
    return {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "float32",
            "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": float("nan"),
            "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
            "zlevel": 1, "predictor": 1, "num_threads": "all_cpus",
            "bigtiff": "IF_SAFER"}


def ensure_pack(size: int) -> Path:
    """The region pack of ``size`` x ``size`` cells (written once, then reused)."""
    import rasterio
    from rasterio.windows import Window

    from bench._data import make_zone_polygons, population_block

    root = DATA / f"pipeline-{size}"
    manifest = root / "region.toml"
    if manifest.exists():
        return manifest
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = root / "population.partial.tif"
    with rasterio.Env(), rasterio.open(tmp, "w", **_profile(size)) as dst:
        for row_off in range(0, size, BLOCK):
            rows = min(BLOCK, size - row_off)
            dst.write(population_block((size, size), 0, row_off, rows), 1,
                      window=Window(0, row_off, size, rows))
    tmp.replace(root / "population.tif")
    zones = make_zone_polygons((size, size), N_ZONES)
    zones.to_file(root / "zones.gpkg", layer="zones", driver="GPKG")
    text = ('[region]\nname = "Bench plain"\nmin_public_count = 5\n\n'
            '[population]\npath = "population.tif"\nkind = "counts"\n\n'
            '[zones]\npath = "zones.gpkg"\nlayer = "zones"\nid = "zone_id"\nname = "name"\n')
    manifest.with_suffix(".tmp").write_text(text, encoding="utf-8")
    manifest.with_suffix(".tmp").replace(manifest)
    print(f"region pack written in {time.perf_counter() - started:.1f} s: {root}", flush=True)
    return manifest


def ensure_hazards(size: int) -> tuple[list[Path], list[Path]]:
    """The round files and the all-dry warm-up files (written once, then reused)."""
    import numpy as np
    import rasterio

    from bench._data import make_hazard

    root = DATA / f"pipeline-{size}" / "hazards"
    root.mkdir(parents=True, exist_ok=True)
    rounds = [root / f"round{i + 1}.tif" for i in range(len(ROUNDS))]
    warm = [root / f"warm{i + 1}.tif" for i in range(N_WARM_FILES)]
    if all(p.exists() for p in rounds + warm):
        return rounds, warm
    depth = make_hazard((size, size), seed=0)
    dry = np.where(np.isnan(depth), np.nan, 0.0).astype(np.float32)
    jobs = [(p, depth * factor, i) for i, (p, (_, factor)) in enumerate(zip(rounds, ROUNDS,
                                                                            strict=True))]
    jobs += [(p, dry, -1 - i) for i, p in enumerate(warm)]
    for path, values, hour in jobs:
        tmp = path.with_suffix(".partial.tif")
        with rasterio.Env(), rasterio.open(tmp, "w", **_profile(size)) as dst:
            dst.write(values.astype(np.float32), 1)
            issued = ISSUED_BASE + timedelta(hours=hour)
            dst.update_tags(TOCSIN_ISSUED_AT=issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            TOCSIN_NATURE="forecast", units="m")
        tmp.replace(path)
    return rounds, warm


def make_subscriptions(manifest: Path, n_subs: int, base_url: str) -> list[Any]:
    """``n_subs`` webhook subscriptions of 100 agencies over the region (deterministic)."""
    import numpy as np
    import shapely
    from pyproj import Transformer

    from alerts.model import ChannelAddress, ChannelKind, Level, Subscription
    from feeds.region import load_region_pack  # noqa: F401 (the grid comes from _data)

    size = int(manifest.parent.name.split("-")[-1])
    from bench._data import make_grid

    grid = make_grid((size, size))
    minx, miny, maxx, maxy = grid.bounds
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(11)
    subs = []
    for i in range(n_subs):
        agency = f"ag-{i % N_AGENCIES:03d}"
        channel = ChannelAddress(ChannelKind.WEBHOOK, f"{base_url}/hook/{agency}")
        kinds = frozenset({"flood_depth"}) if i % 2 else frozenset()
        if i % 10 == 9:
            codes = tuple(f"Z{z:05d}" for z in rng.choice(N_ZONES, rng.integers(2, 4),
                                                          replace=False))
            subs.append(Subscription(f"sub-{i:05d}", agency, zone_codes=codes,
                                     hazard_kinds=kinds, min_level=Level.YELLOW,
                                     channels=(channel,), languages=("en",)))
            continue
        half = rng.uniform(1000, 3000)
        cx = rng.uniform(minx + half, maxx - half)
        cy = rng.uniform(miny + half, maxy - half)
        xs = np.array([cx - half, cx + half, cx + half, cx - half])
        ys = np.array([cy - half, cy - half, cy + half, cy + half])
        lon, lat = to_lonlat.transform(xs, ys)
        area = shapely.Polygon(zip(lon, lat, strict=True))
        subs.append(Subscription(f"sub-{i:05d}", agency, areas_wkt=(area.wkt,),
                                 hazard_kinds=kinds, min_level=Level.YELLOW,
                                 channels=(channel,), languages=("en",)))
    return subs


def store_subscriptions(sessions: Any, subs: list[Any]) -> float:
    """Agencies and subscriptions in one transaction; seconds taken."""
    from alerts.model import Agency
    from store import repo
    from store.db import session_scope

    started = time.perf_counter()
    with session_scope(sessions) as session:
        for a in sorted({s.agency_id for s in subs}):
            repo.add_agency(session, Agency(a, f"Agency {a}"))
        for sub in subs:
            repo.add_subscription(session, sub)
    return time.perf_counter() - started


def feeds_toml(path: Path, manifest: Path, incoming: Path) -> None:
    incoming.mkdir(parents=True, exist_ok=True)
    path.write_text(f'''region = "{manifest.resolve()}"

[[feed]]
id = "{FEED_ID}"
kind = "flood_depth"
nature = "forecast"
units = "m"
poll_interval_s = 1
[feed.source]
type = "directory"
path = "{incoming.resolve()}"
pattern = "*.tif"
settle_s = 0.5
''', encoding="utf-8")


# --- stores, workers ---------------------------------------------------------------------


def flush_broker() -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    client.close()


def worker_env(data_dir: Path, feeds: Path, db_url: str, broker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update({"TOCSIN_DATA_DIR": str(data_dir), "TOCSIN_FEEDS_CONFIG": str(feeds),
                "TOCSIN_FEEDS_TICK_S": "1", "TOCSIN_WEBHOOK_SECRET": SECRET,
                "TOCSIN_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"})
    if db_url:
        env["TOCSIN_DATABASE_URL"] = db_url
    if broker:
        env["TOCSIN_BROKER_URL"] = broker
    return env


@contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``tocsin worker --beat --concurrency 2`` in its own process group, stopped after."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--beat", "--concurrency", "2",
         "--loglevel", "WARNING"], env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True)
    out.close()
    try:
        yield proc
    finally:
        stop_group(proc, grace_s=30.0)


def drop(src: Path, incoming: Path, name: str) -> float:
    """Copy ``src`` to a hidden temporary name, rename it into place; the rename time."""
    part = incoming / f".{name}.part"
    shutil.copyfile(src, part)
    t0 = time.time()
    os.replace(part, incoming / name)
    return t0


def item_row(sessions: Any, checksum: str) -> Any:
    from sqlalchemy import select

    from store.db import session_scope
    from store.feed_models import FeedItemRow

    with session_scope(sessions) as session:
        row = session.scalar(select(FeedItemRow).where(FeedItemRow.feed_id == FEED_ID,
                                                       FeedItemRow.checksum == checksum))
        if row is not None:
            session.expunge(row)
        return row


def webhook_deliveries(sessions: Any, identifier: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from store.db import session_scope
    from store.models import DeliveryRow

    with session_scope(sessions) as session:
        rows = session.execute(select(
            DeliveryRow.idempotency_key, DeliveryRow.subscription_id, DeliveryRow.status,
            DeliveryRow.created_at, DeliveryRow.delivered_at, DeliveryRow.level).where(
            DeliveryRow.alert_identifier == identifier,
            DeliveryRow.channel_kind == "webhook"))
        return [dict(r._mapping) for r in rows]


def count_matches(sessions: Any, identifier: str) -> int:
    from sqlalchemy import func, select

    from store.db import session_scope
    from store.models import AlertMatchRow

    with session_scope(sessions) as session:
        return int(session.scalar(select(func.count()).where(
            AlertMatchRow.alert_identifier == identifier)) or 0)


def wait_items(sessions: Any, checksums: list[str], proc: subprocess.Popen, log: Path,
               timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [item_row(sessions, c) for c in checksums]
        if all(r is not None and r.status in DONE for r in rows):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the workers did not assess the warm-up files; log "
                               f"{log}:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(0.5)


def warm_dispatch(sessions: Any, app: Any, receiver: Receiver, log: Path, n: int = 8) -> None:
    """An unrelated red alert (event kind shaking_mmi) with ``n`` webhook deliveries."""
    from alerts.model import ChannelAddress, ChannelKind, Level
    from store import outbox, repo
    from store.db import session_scope
    from store.models import PlannedDelivery, StoredEvent
    from workers.tasks import enqueue_due

    now = datetime.now(UTC)
    record = compose_record("bench-warmup", 1, Level.RED, now)
    planned = [PlannedDelivery(f"warm-{s}", ChannelAddress(ChannelKind.WEBHOOK,
                                                           receiver.url(f"/hook/warm{s}")),
                               agency_id="ag-000", language="en") for s in range(n)]
    with session_scope(sessions) as session:
        repo.save_event(session, StoredEvent(record.event_id, "shaking_mmi", first_seen=now,
                                             last_seen=now))
        repo.save_alert_with_deliveries(session, record, planned)
    with session_scope(sessions) as session:
        due = [d for d in outbox.due_deliveries(session, now=datetime.now(UTC), limit=1000)
               if d.alert_identifier == record.identifier]
        outbox.mark_enqueued(session, [d.idempotency_key for d in due], at=datetime.now(UTC))
    # One message per delivery, so both pool processes take some.
    for d in due:
        enqueue_due(app, [d])
    if not receiver.wait_for(n, 60):
        raise RuntimeError(f"the warm-up deliveries did not arrive ({receiver.stats()}); log "
                           f"{log}:\n" + log.read_text(errors="replace")[-3000:])


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def run_round(label: str, src: Path, name: str, ctx: dict[str, Any], timeout_s: float
              ) -> dict[str, Any]:
    """Drop one hazard file and wait until its alert's webhooks have all arrived."""
    from feeds.base import file_checksum

    sessions, receiver, proc = ctx["sessions"], ctx["receiver"], ctx["proc"]
    checksum = file_checksum(src)
    receiver.reset()
    t0 = drop(src, ctx["incoming"], name)
    deadline = time.monotonic() + timeout_s
    item, expected, complete = None, None, False
    while time.monotonic() < deadline and proc.poll() is None:
        if item is None or item.status not in DONE:
            item = item_row(sessions, checksum)
            time.sleep(0.1)
            continue
        if not item.alert_identifier:
            complete = True
            break
        if expected is None:
            expected = len(webhook_deliveries(sessions, item.alert_identifier))
        if receiver.stats()["keys"] >= expected:
            complete = True
            break
        time.sleep(0.05)
    result: dict[str, Any] = {"round": label, "file_mb": round(src.stat().st_size / 2**20, 1),
                              "complete": complete}
    if item is None:
        result["error"] = "the file was never fetched"
        return result
    result.update(status=item.status, decision=item.decision, reason=item.reason,
                  alert=item.alert_identifier)
    if item.status not in DONE:
        result["error"] = f"item still {item.status} after {timeout_s:.0f} s"
        return result
    fetched, assess_start = _ts(item.fetched_at), _ts(item.assessed_at)
    assessed = assess_start + (item.assess_s or 0.0)
    marks = {"t0": t0, "fetched": fetched, "assess_started": assess_start,
             "committed": assessed}
    if item.alert_identifier:
        times = receiver.times()
        rows = webhook_deliveries(sessions, item.alert_identifier)
        got = [times[r["idempotency_key"]] for r in rows if r["idempotency_key"] in times]
        result.update(matched_subscriptions=count_matches(sessions, item.alert_identifier),
                      webhook_deliveries=len(rows), received=len(got),
                      levels=sorted({r["level"] for r in rows if r["level"]}),
                      ack_in_store=sum(r["status"] == "ack" for r in rows))
        if got:
            lat = [g - t0 for g in got]
            marks["first_receipt"], marks["last_receipt"] = min(got), max(got)
            result["latency_s"] = {"p50": round(pct(lat, 0.5), 2),
                                   "p95": round(pct(lat, 0.95), 2),
                                   "max": round(max(lat), 2)}
            drain = max(got) - min(got)
            result["drain_per_s"] = round(len(got) / drain, 1) if drain > 0 else None
            result["meets_target"] = pct(lat, 0.95) < TARGET_P95_S
    end = max(v for v in marks.values() if v is not None)
    total = end - t0
    names = [("detect (t0 -> poll that archived it)", "t0", "fetched"),
             ("archive + hand-off to analysis", "fetched", "assess_started"),
             ("assess + alert and outbox committed", "assess_started", "committed"),
             ("enqueue -> first receipt", "committed", "first_receipt"),
             ("dispatch drain (first -> last receipt)", "first_receipt", "last_receipt")]
    stages = {}
    for title, a, b in names:
        if marks.get(a) is not None and marks.get(b) is not None:
            sec = marks[b] - marks[a]
            stages[title] = {"s": round(sec, 2), "share": round(sec / total, 3) if total else 0}
    result["total_s"] = round(total, 2)
    result["stages"] = stages
    return result


def run_store(name: str, db_url: str, broker: str, manifest: Path, rounds: list[Path],
              warm: list[Path], subs: list[Any], receiver: Receiver, folder: Path,
              timeout_s: float) -> dict[str, Any]:
    import sqlalchemy

    from feeds.base import file_checksum
    from store.db import make_engine, make_session_factory, upgrade
    from workers.celery_app import make_celery
    from workers.settings import Settings

    data_dir = (folder / f"data-{name}").resolve()
    incoming = folder / f"incoming-{name}"
    feeds = folder / f"feeds-{name}.toml"
    feeds_toml(feeds, manifest, incoming)
    settings = Settings(data_dir=data_dir, database_url=db_url, broker_url=broker)
    url = settings.resolved_database_url()
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    # The benchmark only watches: on SQLite a plain engine (deferred BEGIN, WAL readers)
    # never waits for the write lock an assessment holds (make_engine's BEGIN IMMEDIATE
    # would, and gives up after the 30 s busy timeout).
    watch_engine = sqlalchemy.create_engine(url) if url.startswith("sqlite") else engine
    watch = make_session_factory(watch_engine)
    out: dict[str, Any] = {"store": name, "database": url.split("?")[0].split("@")[-1],
                           "broker": broker or "filesystem://"}
    out["subscriptions_stored_s"] = round(store_subscriptions(sessions, subs), 1)
    if broker:
        flush_broker()
    app = make_celery(settings)
    log = folder / f"worker-{name}.log"
    try:
        with running_worker(worker_env(data_dir, feeds, db_url, broker), log) as proc:
            started = time.perf_counter()
            for i, path in enumerate(warm):
                shutil.copyfile(path, incoming / f".warm{i}.part")
            for i in range(len(warm)):
                os.replace(incoming / f".warm{i}.part", incoming / f"warm{i}.tif")
            wait_items(watch, [file_checksum(p) for p in warm], proc, log, timeout_s * 2)
            warm_dispatch(sessions, app, receiver, log)
            out["warm_up_s"] = round(time.perf_counter() - started, 1)
            ctx = {"sessions": watch, "receiver": receiver, "proc": proc,
                   "incoming": incoming}
            out["rounds"] = []
            for i, ((label, _), src) in enumerate(zip(ROUNDS, rounds, strict=True)):
                r = run_round(label, src, f"run{i + 1}.tif", ctx, timeout_s)
                out["rounds"].append(r)
                print_round(name, r)
                time.sleep(1.0)
        out["worker_log_tail"] = log.read_text(errors="replace")[-1500:]
    finally:
        app.close()
        watch_engine.dispose()
        engine.dispose()
    return out


# --- peers -------------------------------------------------------------------------------


def peers(manifest: Path, rounds: list[Path], subs: list[Any], folder: Path,
          profile: bool, max_assess_s: float) -> dict[str, Any]:
    """Overlay alone and ``run_assess`` alone, in this process, on the same inputs."""
    from alerts.matching import build_index, exposure_for, match
    from feeds.feed_config import load_feed_config, to_read_options
    from feeds.read import read_hazard
    from feeds.region import load_region_pack
    from geo.overlay import OverlayCache, run_overlay
    from store.db import make_engine, make_session_factory, upgrade
    from workers.assess_job import run_assess
    from workers.settings import Settings

    feeds = folder / "feeds-peer.toml"
    feeds_toml(feeds, manifest, folder / "incoming-peer")
    options = to_read_options(load_feed_config(feeds).get(FEED_ID))
    out: dict[str, Any] = {}
    t = time.perf_counter()
    region = load_region_pack(manifest)
    out["load_region_pack_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    hazard = read_hazard(rounds[0], options)
    out["read_hazard_s"] = round(time.perf_counter() - t, 2)
    cache = OverlayCache()
    t = time.perf_counter()
    run_overlay(hazard, region, None, cache)
    out["overlay_cold_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    result = run_overlay(hazard, region, None, cache)
    out["overlay_warm_s"] = round(time.perf_counter() - t, 2)
    del hazard
    # Matching, then the per-subscriber exposure run_assess computes for every match.
    zone_raster = cache.zone_rasters[region.population.grid]
    t = time.perf_counter()
    index = build_index(subs, result.population_grid, zone_raster=zone_raster)
    found = match(index, result.class_index, hazard_kind="flood_depth")
    out["build_index_and_match_s"] = round(time.perf_counter() - t, 2)
    out["matched_round1"] = len(found.subscription_ids)
    by_id = {s.subscription_id: s for s in subs}
    sample = [by_id[i] for i in found.subscription_ids[:EXPOSURE_SAMPLE]]
    t = time.perf_counter()
    for sub in sample:
        exposure_for(sub, result, zone_raster, region=region)
    per_sub = (time.perf_counter() - t) / max(1, len(sample))
    out["exposure_for_per_match_s"] = round(per_sub, 3)
    out["exposure_for_sampled"] = len(sample)
    out["exposure_for_estimate_s"] = round(per_sub * len(found.subscription_ids), 1)
    del result
    if out["exposure_for_estimate_s"] > max_assess_s:
        out["run_assess_skipped"] = (f"estimated {out['exposure_for_estimate_s']:,.0f} s in "
                                     "exposure_for alone")
        return out

    def assess(tag: str) -> tuple[float, Any]:
        url = f"sqlite:///{folder / f'peer-{tag}.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        store_subscriptions(sessions, subs)
        settings = Settings(data_dir=folder / f"peer-{tag}", database_url=url)
        t = time.perf_counter()
        outcome = run_assess(rounds[0], manifest, options, settings=settings,
                             sessions=sessions, now=datetime.now(UTC), region=region,
                             cache=cache)
        elapsed = time.perf_counter() - t
        engine.dispose()
        return elapsed, outcome

    elapsed, outcome = assess("plain")
    out["run_assess_s"] = round(elapsed, 2)
    out["run_assess_deliveries"] = outcome.deliveries
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        elapsed, _ = assess("profiled")
        prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats("cumulative")
        stats.print_stats(45)
        out["profile_top"] = buf.getvalue()
        print(buf.getvalue())
    return out


# --- report ------------------------------------------------------------------------------


def print_round(store: str, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"[{store}] {r['round']}: {r['error']}", flush=True)
        return
    lat = r.get("latency_s")
    head = (f"[{store}] {r['round']}: {r['decision']} ({(r.get('reason') or '')[:80]}), "
            f"{r.get('matched_subscriptions', 0):,} matched, {r.get('received', 0):,}/"
            f"{r.get('webhook_deliveries', 0):,} webhooks received, total {r['total_s']:.2f} s")
    if lat:
        head += f", receipt - t0 p50 {lat['p50']:.2f} s / p95 {lat['p95']:.2f} s"
    print(head, flush=True)
    for title, s in r["stages"].items():
        print(f"    {title}: {s['s']:.2f} s ({100 * s['share']:.0f} %)", flush=True)


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{results['size']:,} x {results['size']:,} hazard, {results['subscriptions']:,} "
          f"subscriptions; load average {results['load_average']}")
    print("| store | round | matched subs | webhooks received | p50 / p95 (s) | "
          "detect | archive+hand-off | assess+commit | first receipt | drain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in results["stores"].items():
        if "error" in s:
            print(f"| {name} | failed: {s['error'].splitlines()[0][:100]} |")
            continue
        for r in s["rounds"]:
            lat = r.get("latency_s")
            cells = [f"{v['s']:.2f} ({100 * v['share']:.0f} %)" for v in r.get("stages",
                                                                             {}).values()]
            cells += [""] * (5 - len(cells))
            print(f"| {name} | {r['round']} | {r.get('matched_subscriptions', 0):,} | "
                  f"{r.get('received', 0):,} / {r.get('webhook_deliveries', 0):,} | "
                  + (f"{lat['p50']:.2f} / {lat['p95']:.2f}" if lat else "-") + " | "
                  + " | ".join(cells) + " |")
    p = results.get("peers", {})
    if p and "run_assess_s" in p:
        print(f"peers: load_region_pack {p['load_region_pack_s']} s, read_hazard "
              f"{p['read_hazard_s']} s, run_overlay {p['overlay_warm_s']} s warm "
              f"({p['overlay_cold_s']} s cold), run_assess alone {p['run_assess_s']} s "
              f"({p['run_assess_deliveries']:,} deliveries)")
    if "bare_loop" in results:
        print(f"bare httpx POST loop: {results['bare_loop']['per_s']:,.0f}/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 x 2,000 cells and 1,000 subscriptions")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--subscriptions", type=int, default=None)
    parser.add_argument("--stores", nargs="+", choices=["embedded", "redis"],
                        default=["embedded", "redis"])
    parser.add_argument("--profile", action="store_true",
                        help="also run_assess under cProfile in this process")
    parser.add_argument("--force-live", action="store_true",
                        help="run the live rounds even when the assessment is estimated "
                             "to outlast the round timeout")
    args = parser.parse_args()
    size = args.size or (1000 if args.quick else 10_000)
    n_subs = args.subscriptions or (200 if args.quick else 10_000)
    timeout_s = 90.0 if args.quick else 240.0
    started = time.perf_counter()
    manifest = ensure_pack(size)
    rounds, warm = ensure_hazards(size)
    results: dict[str, Any] = {"size": size, "subscriptions": n_subs, "agencies": N_AGENCIES,
                               "zones": N_ZONES, "cpu_count": os.cpu_count(),
                               "load_average": [round(x, 2) for x in os.getloadavg()],
                               "worker": "tocsin worker --beat --concurrency 2 (prefork)",
                               "target_p95_s": TARGET_P95_S, "skipped": {}, "stores": {}}
    stores = list(args.stores)
    if "redis" in stores:
        why = redis_reachable() or postgres_reachable()
        if why:
            print(f"SKIPPED the Redis + PostgreSQL store: {why}")
            results["skipped"]["redis"] = why
            stores.remove("redis")
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-pipeline-") as tmp:
        folder = Path(tmp)
        receiver = Receiver(folder)
        try:
            subs = make_subscriptions(manifest, n_subs, receiver.url(""))
            results["peers"] = p = peers(manifest, rounds, subs, folder, args.profile,
                                         timeout_s)
            print(f"peers: {json.dumps({k: v for k, v in p.items() if k != 'profile_top'})}",
                  flush=True)
            if p["exposure_for_estimate_s"] > timeout_s and not args.force_live:
                why = (f"run_assess would spend about {p['exposure_for_estimate_s']:,.0f} s in "
                       f"alerts.matching.exposure_for ({p['exposure_for_per_match_s']:.2f} s "
                       f"for each of {p['matched_round1']:,} matched subscriptions), over the "
                       f"{timeout_s:.0f} s round timeout (--force-live runs it anyway)")
                print(f"SKIPPED the live rounds: {why}", flush=True)
                results["skipped"]["live"] = why
                stores = []
            for name in stores:
                try:
                    if name == "embedded":
                        results["stores"][name] = run_store(
                            name, "", "", manifest, rounds, warm, subs, receiver, folder,
                            timeout_s)
                    else:
                        with postgres_schema_url() as url:
                            results["stores"][name] = run_store(
                                name, url, f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
                                manifest, rounds, warm, subs, receiver, folder, timeout_s)
                except Exception as exc:  # noqa: BLE001 - report it, measure the others
                    results["stores"][name] = {"store": name, "error": str(exc)[-2000:]}
                    print(f"FAILED the {name} store: {str(exc)[-2000:]}", file=sys.stderr)
            n_bare = max((r.get("webhook_deliveries", 0) for s in results["stores"].values()
                          for r in s.get("rounds", [])), default=0)
            body, headers = sample_body(receiver.url("/hook/bare"))
            results["bare_loop"] = bare_loop(receiver, max(200, min(n_bare, 3000)), body,
                                             headers)
        finally:
            receiver.close()
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = RESULTS.with_name("pipeline-quick.json") if args.quick else RESULTS
    if args.size or args.subscriptions:
        out = RESULTS.with_name(f"pipeline-{size}-{n_subs}.json")
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print_table(results)
    print(f"written {out} ({results['wall_s']} s)")
    return 1 if any("error" in s for s in results["stores"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
