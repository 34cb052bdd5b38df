"""Benchmark: webhook deliveries per second through real workers on Redis, and alert latency.

Run from the repository root::

    .venv/bin/python -m bench.bench_dispatch [--quick] [--stores postgresql sqlite]

What runs, per store (PostgreSQL, the production store, in a fresh schema dropped
afterwards; SQLite, the embedded default, in a temporary file):

- a receiver: an asyncio HTTP/1.1 keep-alive server in its own process (written here, so
  that it is never the bottleneck), recording per ``Idempotency-Key`` the wall-clock time
  (``time.time()``) the whole request had arrived; repeats are counted, not re-timed;
- one ``tocsin worker --concurrency 2`` subprocess on Redis db 12 (flushed first): the
  Celery prefork pool, i.e. two worker processes taking tasks, as a deployment runs it; no
  beat (its sweep would re-enqueue the pending backlog every interval);
- the store: 100 real alerts (composed and rendered to CAP as ``tocsin assess`` does),
  each fanned out to the same 100 webhook subscriptions (one URL each), stored with
  ``repo.save_alert_with_deliveries`` one alert per transaction: 10,000 pending
  deliveries. An agency deployment issues few alerts to many subscribers (municipalities,
  utilities, schools, each with its own receiver), so fan-out, not alert count, makes the
  volume; levels cycle red, orange, yellow over the alerts, so all three queues are used.

Figures:

- backlog: every alert committed (its commit time recorded when the commit returned),
  then ``workers.tasks.enqueue_due`` of every due delivery; deliveries/s from the first
  enqueue to the last receipt, and p50/p95 of (receipt - commit of its alert). That
  latency is dominated by the backlog (the last delivery waits for 9,999 others);
- idle latency: afterwards, with the queues empty, one red alert with one webhook delivery
  at a time is committed, enqueued and waited for (40 of them, 50 ms apart): p50/p95 of
  (receipt - commit). This is the latency an alert sees when the system is not backlogged;
- peers, same run, same receiver, same body size: a bare loop of keep-alive POSTs from
  one process with ``httpx.Client`` (the ceiling of this machine for a Python sender), and
  ``deliver_batch`` called in batches in one process without a broker (what the dispatch code
  costs alone; it runs on a second batch of the same shape).

Target: at least 500 deliveries/s on PostgreSQL. Writes ``bench/results/dispatch.json``.
Skips (exit 0, with a message) when Redis is unreachable; skips the PostgreSQL store when
PostgreSQL is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "dispatch.json"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 12
POSTGRES_URL = os.environ.get("TOCSIN_BENCH_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_PER_S = 500.0
SECRET = "bench-dispatch-secret"
IDLE_SAMPLES = 40
IDLE_GAP_S = 0.05


# --- the receiver --------------------------------------------------------------------


def _serve(port_file: str, dump_file: str) -> None:
    """Receiver process: POST anything (200, empty body); ``GET /_count``; ``GET /_dump``."""
    received: dict[str, float] = {}
    stats = {"requests": 0, "bytes": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, target = lines[0].split(b" ", 2)[:2]
                length, key = 0, None
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"idempotency-key":
                        key = value.strip().decode()
                body = await reader.readexactly(length) if length else b""
                at = time.time()
                if method == b"POST":
                    stats["requests"] += 1
                    stats["bytes"] += len(body)
                    if key is not None and key not in received:
                        received[key] = at
                    answer = b""
                elif target == b"/_dump":
                    Path(dump_file).write_text(json.dumps(received))
                    answer = json.dumps({"keys": len(received), **stats}).encode()
                elif target == b"/_reset":
                    received.clear()
                    stats.update(requests=0, bytes=0)
                    answer = b"{}"
                else:
                    answer = json.dumps({"keys": len(received), **stats}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n"
                             + answer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512,
                                            limit=1 << 20)
        port = server.sockets[0].getsockname()[1]
        Path(port_file + ".tmp").write_text(str(port))
        os.replace(port_file + ".tmp", port_file)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


class Receiver:
    """The receiver process and a keep-alive client to ask it for its records."""

    def __init__(self, folder: Path) -> None:
        self.dump_file = folder / "received.json"
        port_file = folder / "receiver.port"
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.bench_dispatch",
                                      "--serve-receiver", str(port_file), str(self.dump_file)])
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        import httpx

        self._client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", trust_env=False)

    def url(self, path: str) -> str:
        """The receiver's URL for ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, int]:
        """Distinct keys received, requests and body bytes so far."""
        return self._client.get("/_count").json()

    def times(self) -> dict[str, float]:
        """Every key received -> the wall-clock time its first request arrived."""
        self._client.get("/_dump")
        return json.loads(self.dump_file.read_text())

    def reset(self) -> None:
        """Forget everything received."""
        self._client.get("/_reset")

    def wait_for(self, n_keys: int, timeout_s: float, poll_s: float = 0.02) -> bool:
        """Whether ``n_keys`` distinct keys arrived within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats()["keys"] >= n_keys:
                return True
            time.sleep(poll_s)
        return False

    def close(self) -> None:
        """Stop the receiver."""
        self._client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- the store -----------------------------------------------------------------------


def compose_record(event_id: str, sequence: int, level: Any, sent: datetime) -> Any:
    """A real alert record: composed, rendered to XSD-valid CAP, with its en/fr texts."""
    import shapely

    from alerts.cap import render_cap
    from alerts.compose import compose_alert
    from alerts.model import (
        Certainty,
        ClassExposure,
        ExposureSummary,
        HazardSummary,
        MsgType,
        Priority,
        Severity,
        Urgency,
    )
    from store.models import AlertRecord

    hazard = HazardSummary(
        kind="flood_depth", nature="forecast", units="m", n_classes=3, max_class=3,
        max_class_label="1.5 m and above", issued_at=sent, onset=sent + timedelta(hours=6),
        exceedance_share=None, source="flood.tif", checksum=f"sha256:{event_id}{sequence}",
    )
    exposure = ExposureSummary(population=12_400, disability=1_300, older=2_100,
                               area_km2=18.5, by_class=(ClassExposure(3, "1.5 m and above",
                                                                      12_400, area_km2=18.5),))
    priority = Priority(level=level, score=0.9, severity=Severity.EXTREME,
                        urgency=Urgency.EXPECTED, certainty=Certainty.LIKELY,
                        reasons=("12,400 people in deep water",), rules_version="v1")
    composed = compose_alert(
        event_id=event_id, sequence=sequence, sender="tocsin@example.invalid", sent=sent,
        msg_type=MsgType.ALERT, hazard=hazard, exposure=exposure, priority=priority,
        footprint_lonlat=shapely.box(7.40, 46.90, 7.50, 46.97), area_name="Aare valley",
        languages=("en", "fr"), expires=sent + timedelta(hours=12), references=[],
        map_png=b"\x89PNG\r\n\x1a\n" + bytes(32),
    )
    return AlertRecord(identifier=composed.event.identifier, event_id=event_id,
                       sender="tocsin@example.invalid", msg_type=MsgType.ALERT,
                       priority=priority, sent=sent, expires=sent + timedelta(hours=12),
                       cap_bytes=render_cap(composed.event), texts=composed.texts)


class Store:
    """A migrated database, its session factory, and alert batches written into it."""

    def __init__(self, url: str) -> None:
        from store.db import make_engine, make_session_factory, upgrade

        self.url = url
        upgrade(url)
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine)
        self._records: dict[tuple[str, int], Any] = {}

    def add_alerts(self, tag: str, n_alerts: int, n_subs: int, hook: Callable[[int], str],
                   levels: tuple[Any, ...]) -> dict[str, tuple[float, str]]:
        """``n_alerts`` alerts x ``n_subs`` webhook deliveries, one transaction per alert.

        Returns:
            Every delivery key -> (commit time of its alert, its level).
        """
        from alerts.model import ChannelAddress, ChannelKind
        from store import repo
        from store.db import session_scope
        from store.models import PlannedDelivery, StoredEvent

        now = datetime.now(UTC)
        records = [compose_record(f"{tag}-{i:04d}", 1, levels[i % len(levels)], now)
                   for i in range(n_alerts)]  # composed first: only the writes are timed
        planned = [PlannedDelivery(f"sub-{s:03d}", ChannelAddress(ChannelKind.WEBHOOK, hook(s)),
                                   agency_id=f"ag-{s % 10}", language="en")
                   for s in range(n_subs)]
        committed: dict[str, tuple[float, str]] = {}
        for record in records:
            with session_scope(self.sessions) as session:
                repo.save_event(session, StoredEvent(record.event_id, "flood_depth",
                                                     first_seen=now, last_seen=now))
                saved = repo.save_alert_with_deliveries(session, record, planned)
            at = time.time()
            committed.update((d.idempotency_key, (at, record.level.value)) for d in saved)
        return committed

    def due(self) -> list[Any]:
        """Every delivery due now, as ``enqueue_due`` takes them."""
        from store import outbox
        from store.db import session_scope

        with session_scope(self.sessions) as session:
            return outbox.due_deliveries(session, now=datetime.now(UTC), limit=1_000_000)

    def acked(self, keys: list[str]) -> int:
        """How many of ``keys`` are ``ack`` in the store."""
        from sqlalchemy import func, select

        from store.db import session_scope
        from store.models import DeliveryRow

        with session_scope(self.sessions) as session:
            return int(session.scalar(select(func.count()).where(
                DeliveryRow.idempotency_key.in_(keys), DeliveryRow.status == "ack")) or 0)

    def close(self) -> None:
        """Dispose of the engine."""
        self.engine.dispose()


@contextmanager
def postgres_store() -> Iterator[Store]:
    """A store on a fresh schema of the test PostgreSQL, dropped afterwards."""
    with postgres_schema_url() as url:
        store = Store(url)
        try:
            yield store
        finally:
            store.close()


@contextmanager
def sqlite_store(folder: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{folder / 'tocsin.db'}")
    try:
        yield store
    finally:
        store.close()


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 20.0) -> None:
    """Stop a process started with ``start_new_session=True``, its children too.

    SIGTERM to the group, then SIGKILL when it has not exited after ``grace_s``.
    """
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def postgres_schema_url(prefix: str = "tocsin_bench") -> Iterator[str]:
    """A fresh schema on the test PostgreSQL (PostGIS from ``public``), dropped afterwards."""
    from sqlalchemy import make_url

    from store.db import make_engine

    admin = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield make_url(POSTGRES_URL).update_query_dict(
            {"options": f"-csearch_path={schema},public"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    from sqlalchemy.exc import OperationalError

    from store.db import make_engine

    engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        return f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.orig}"
    finally:
        engine.dispose()
    return None


def redis_reachable() -> str | None:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1):
            pass
    except OSError as exc:
        return f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}"
    return None


# --- workers and the broker ------------------------------------------------------------


def broker_url() -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def flush_broker() -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    client.close()


def worker_env(data_dir: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update({
        "TOCSIN_DATA_DIR": str(data_dir), "TOCSIN_DATABASE_URL": db_url,
        "TOCSIN_BROKER_URL": broker_url(), "TOCSIN_WEBHOOK_SECRET": SECRET,
        "TOCSIN_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "TOCSIN_WEBHOOK_TIMEOUT_S": "10",
    })
    return env


@contextmanager
def running_worker(env: dict[str, str], log: Path, concurrency: int) -> Iterator[None]:
    """``tocsin worker --concurrency N`` in its own process group, stopped afterwards."""
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from workers.cli.main import main; main()", "worker",
         "--concurrency", str(concurrency), "--loglevel", "WARNING"],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    try:
        yield
    finally:
        stop_group(proc)


def make_app(data_dir: Path) -> Any:
    from workers.celery_app import make_celery
    from workers.settings import Settings

    return make_celery(Settings(data_dir=data_dir, broker_url=broker_url()))


# --- measurements ----------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, linear between order statistics."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(committed: dict[str, tuple[float, str]], times: dict[str, float]
                    ) -> dict[str, Any]:
    lat = [times[k] - c for k, (c, _) in committed.items() if k in times]
    summary: dict[str, Any] = {"p50_ms": round(1000 * pct(lat, 0.5), 1),
                               "p95_ms": round(1000 * pct(lat, 0.95), 1),
                               "max_ms": round(1000 * max(lat), 1)}
    by_level = {}
    for level in dict.fromkeys(lv for _, lv in committed.values()):
        sub = [times[k] - c for k, (c, lv) in committed.items() if lv == level and k in times]
        if sub:
            by_level[level] = {"p50_ms": round(1000 * pct(sub, 0.5), 1),
                               "p95_ms": round(1000 * pct(sub, 0.95), 1)}
    if len(by_level) > 1:
        summary["by_level"] = by_level
    return summary


def sample_body(hook: str) -> tuple[bytes, dict[str, str]]:
    """A real webhook body and headers of one delivery (for the bare loop's size)."""
    from alerts.channels.base import OutgoingMessage
    from alerts.channels.webhook import sign, webhook_body, webhook_secret_for
    from alerts.model import ChannelAddress, ChannelKind, Level
    from workers.dispatch import build_alert_content

    record = compose_record("sample", 1, Level.RED, datetime.now(UTC))
    message = OutgoingMessage(
        idempotency_key="x" * 64, channel=ChannelAddress(ChannelKind.WEBHOOK, hook),
        agency_id="ag-0", subscription_id="sub-000", language="en",
        alerts=(build_alert_content(record, "en"),), kind="alert", attempt=1)
    body = webhook_body(message)
    ts = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "Tocsin-Webhook/1",
               "Tocsin-Timestamp": str(ts),
               "Tocsin-Signature": sign(webhook_secret_for(SECRET.encode(), "ag-0"), ts, body)}
    return body, headers


def bare_loop(receiver: Receiver, n: int, body: bytes, headers: dict[str, str]) -> dict:
    """POSTs in a loop from this process over one keep-alive connection."""
    import httpx

    receiver.reset()
    url = receiver.url("/hook/bare")
    with httpx.Client(trust_env=False, timeout=10) as client:
        for i in range(50):  # warm the connection and the code paths
            client.post(url, content=body, headers={**headers, "Idempotency-Key": f"w{i}"})
        receiver.reset()
        t0 = time.perf_counter()
        for i in range(n):
            answer = client.post(url, content=body,
                                 headers={**headers, "Idempotency-Key": f"bare-{i}"})
            if answer.status_code != 200:
                raise RuntimeError(f"receiver answered {answer.status_code}")
        elapsed = time.perf_counter() - t0
    got = receiver.stats()["keys"]
    receiver.reset()
    return {"posts": n, "received": got, "seconds": round(elapsed, 3),
            "per_s": round(n / elapsed, 1), "body_bytes": len(body)}


def in_process(store: Store, receiver: Receiver, n_alerts: int, n_subs: int,
               levels: tuple[Any, ...], data_dir: Path) -> dict:
    """``deliver_batch`` in batches, in this process, no broker: the dispatch code alone."""
    from workers.channel_setup import build_registry, dispatch_policy
    from workers.dispatch import DispatchContext, deliver_batch
    from workers.settings import Settings
    from workers.tasks import utc_now

    settings = Settings(data_dir=data_dir, webhook_secret=SECRET,
                        webhook_allow_hosts=("127.0.0.1",))
    ctx = DispatchContext(sessions=store.sessions, registry=build_registry(settings),
                          policy=dispatch_policy(settings))
    committed = store.add_alerts("inproc", n_alerts, n_subs,
                                 lambda s: receiver.url(f"/hook/{s:03d}"), levels)
    keys = [d.idempotency_key for d in store.due()]
    t0 = time.perf_counter()
    size = ctx.policy.batch_size
    outcomes = [o.outcome for start in range(0, len(keys), size)
                for o in deliver_batch(keys[start:start + size], ctx, now=utc_now)]
    elapsed = time.perf_counter() - t0
    ctx.close()
    return {"deliveries": len(keys), "delivered": outcomes.count("delivered"),
            "seconds": round(elapsed, 3), "per_s": round(len(keys) / elapsed, 1),
            "committed": len(committed)}


def run_store(name: str, store: Store, receiver: Receiver, folder: Path, *, n_alerts: int,
              n_subs: int, concurrency: int, bare_per_s: float) -> dict:
    """Backlog throughput and idle latency through real workers, then the in-process peer."""
    from alerts.model import Level
    from workers.tasks import enqueue_due

    levels = (Level.RED, Level.ORANGE, Level.YELLOW)
    hook = lambda s: receiver.url(f"/hook/{s:03d}")  # noqa: E731
    data_dir = folder / f"data-{name}"
    data_dir.mkdir()
    flush_broker()
    app = make_app(data_dir)
    env = worker_env(data_dir, store.url)
    log = folder / f"worker-{name}.log"
    result: dict[str, Any] = {"store": name}
    with running_worker(env, log, concurrency):
        # Warm-up: both pool processes build their context (engine, channels, imports).
        receiver.reset()
        warm = store.add_alerts(f"warm-{name}", 2, 20, hook, levels)
        enqueue_due(app, store.due())
        if not receiver.wait_for(len(warm), 45):
            raise RuntimeError(f"the worker did not deliver the warm-up; see {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
        receiver.reset()

        t0 = time.time()
        committed = store.add_alerts(f"bl-{name}", n_alerts, n_subs, hook, levels)
        commit_s = time.time() - t0
        due = store.due()
        first_enqueue = time.time()
        enqueue_due(app, due)
        enqueue_s = time.time() - first_enqueue
        n = len(committed)
        done = receiver.wait_for(n, timeout_s=max(60.0, n / 20))
        times = receiver.times()
        stats = receiver.stats()
        got = [times[k] for k in committed if k in times]
        last = max(got)
        per_s = len(got) / (last - first_enqueue)
        result["backlog"] = {
            "alerts": n_alerts, "subscriptions": n_subs, "deliveries": n,
            "received": len(got), "complete": done, "posts_received": stats["requests"],
            "acked_in_store": store.acked(list(committed)),
            "commit_s": round(commit_s, 2), "enqueue_s": round(enqueue_s, 2),
            "drain_s": round(last - first_enqueue, 2), "per_s": round(per_s, 1),
            "ratio_to_bare_loop": round(per_s / bare_per_s, 3),
            "meets_target": per_s >= TARGET_PER_S,
            "commit_to_receipt": latency_summary(committed, times),
        }

        # Idle latency: one red alert, one delivery, at a time; the queues are empty.
        receiver.reset()
        idle: dict[str, tuple[float, str]] = {}
        for i in range(IDLE_SAMPLES):
            one = store.add_alerts(f"idle-{name}-{i:03d}", 1, 1, hook, (Level.RED,))
            enqueue_due(app, store.due())
            idle.update(one)
            if not receiver.wait_for(len(idle), 30, poll_s=0.002):
                raise RuntimeError("an idle-latency alert was not delivered")
            time.sleep(IDLE_GAP_S)
        result["idle"] = {"samples": IDLE_SAMPLES,
                          "commit_to_receipt": latency_summary(idle, receiver.times())}
    app.close()
    receiver.reset()
    # Peer: the dispatch code alone (same batch shape; queues idle, workers stopped).
    peer_alerts = max(1, n_alerts // 5)
    result["in_process"] = in_process(store, receiver, peer_alerts, n_subs, levels, data_dir)
    receiver.reset()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 deliveries (10 alerts x 100 subscriptions), PostgreSQL only")
    parser.add_argument("--alerts", type=int, default=None)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--stores", nargs="+", choices=["postgresql", "sqlite"], default=None)
    parser.add_argument("--serve-receiver", nargs=2, metavar=("PORT_FILE", "DUMP_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        _serve(*args.serve_receiver)
        return 0
    n_alerts = args.alerts or (10 if args.quick else 100)
    stores = args.stores or (["postgresql"] if args.quick else ["postgresql", "sqlite"])
    why = redis_reachable()
    if why:
        print(f"SKIPPED bench_dispatch: {why} (the benchmark needs a Redis broker)")
        return 0
    skipped = {}
    if "postgresql" in stores:
        why = postgres_reachable()
        if why:
            print(f"SKIPPED the PostgreSQL store: {why}")
            skipped["postgresql"] = why
            stores = [s for s in stores if s != "postgresql"]
    if not stores:
        return 0
    n = n_alerts * args.subscriptions
    results: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "target_per_s": TARGET_PER_S, "deliveries": n,
        "worker": f"tocsin worker --concurrency {args.concurrency} (prefork), Redis db "
                  f"{REDIS_DB}, no beat", "skipped": skipped, "stores": {},
    }
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-dispatch-") as tmp:
        folder = Path(tmp)
        receiver = Receiver(folder)
        try:
            body, headers = sample_body(receiver.url("/hook/000"))
            results["bare_loop"] = bare_loop(receiver, n, body, headers)
            bare_per_s = results["bare_loop"]["per_s"]
            for name in stores:
                opener = postgres_store() if name == "postgresql" else sqlite_store(folder)
                try:
                    with opener as store:
                        results["stores"][name] = run_store(
                            name, store, receiver, folder, n_alerts=n_alerts,
                            n_subs=args.subscriptions, concurrency=args.concurrency,
                            bare_per_s=bare_per_s)
                except Exception as exc:  # noqa: BLE001 - report it, measure the others
                    results["stores"][name] = {"store": name, "error": str(exc)[-1500:]}
                    print(f"FAILED the {name} store: {str(exc)[-1500:]}", file=sys.stderr)
        finally:
            receiver.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = RESULTS.with_name("dispatch-quick.json") if args.quick else RESULTS
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"written {out}")
    return 1 if any("error" in r for r in results["stores"].values()) else 0


def print_table(results: dict) -> None:
    bare = results["bare_loop"]
    print(f"\n{results['deliveries']:,} webhook deliveries, {results['worker']}; "
          f"body {bare['body_bytes']:,} bytes")
    print("| method | deliveries/s | ratio to bare loop | commit->receipt p50 / p95 |")
    print("| --- | --- | --- | --- |")
    print(f"| bare httpx POST loop, one process | {bare['per_s']:,.0f} | 1 | |")
    for name, r in results["stores"].items():
        if "error" in r:
            print(f"| workers, {name} | failed: {r['error'].splitlines()[0][:120]} | | |")
            continue
        b, idle, ip = r["backlog"], r["idle"]["commit_to_receipt"], r["in_process"]
        lat = b["commit_to_receipt"]
        print(f"| workers, {name}, backlog of {b['deliveries']:,} | {b['per_s']:,.0f} | "
              f"{b['ratio_to_bare_loop']:.3f} | {lat['p50_ms'] / 1000:.2f} s / "
              f"{lat['p95_ms'] / 1000:.2f} s |")
        print(f"| workers, {name}, one red alert at a time (idle) | | | "
              f"{idle['p50_ms']:.0f} ms / {idle['p95_ms']:.0f} ms |")
        print(f"| deliver_batch in batches, {name}, one process, no broker | {ip['per_s']:,.0f} | "
              f"{ip['per_s'] / bare['per_s']:.3f} | |")


if __name__ == "__main__":
    sys.exit(main())
