"""Faults that must lose nothing, with real Celery workers in their own processes.

Each test stores alerts with webhook deliveries to a real receiver on 127.0.0.1, runs
``tocsin worker --beat`` as a subprocess on the embedded default broker (filesystem, no
server) and on the real Redis, and breaks something: the worker is killed with SIGKILL in
the middle of deliveries, the broker is restarted. Afterwards every delivery is delivered,
and the receiver processed each idempotency key's payload exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing import receiver as rx

from store import outbox
from store.db import session_scope
from store.models import DeliveryStatus, PlannedDelivery
from workers.demo_receivers import free_port, port_open
from workers.settings import Settings

REDIS_PORT = 6379
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = [pytest.mark.slow]








def _require(service: str, port: int) -> None:
    if not port_open("127.0.0.1", port):
        msg = f"{service} is not reachable on 127.0.0.1:{port}"
        if IN_CI:
            pytest.fail(msg + " (required in CI: .ci/run starts it)")
        pytest.skip(msg)


@pytest.fixture
def receiver() -> Iterator[object]:
    with rx.running() as server:
        yield server


@pytest.fixture(params=["filesystem", "redis"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded default (no server) and the real Redis (a database of its own)."""
    if request.param == "filesystem":
        return ""
    _require("Redis", REDIS_PORT)
    import redis

    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=11)
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:{REDIS_PORT}/11"


def _env(tmp_path: Path, db_url: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update({
        "TOCSIN_DATA_DIR": str(tmp_path / "data"), "TOCSIN_DATABASE_URL": db_url,
        "TOCSIN_BROKER_URL": broker_url, "TOCSIN_WEBHOOK_SECRET": "fault-test-secret",
        "TOCSIN_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "TOCSIN_WEBHOOK_TIMEOUT_S": "5",
        "TOCSIN_DISPATCH_LEASE_S": "4", "TOCSIN_DISPATCH_SWEEP_INTERVAL_S": "1",
        "TOCSIN_DISPATCH_RETRY_BASE_S": "0.5", "TOCSIN_DISPATCH_RETRY_MAX_S": "2",
    })
    return env


class Worker:
    """``tocsin worker --beat`` in its own process group (SIGKILL takes all its children)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from workers.cli.main import main; main()", "worker",
             "--concurrency", "2", "--beat", "--loglevel", "WARNING"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_env(tmp_path: Path, db_url: str, broker_url: str) -> dict[str, str]:
    return _env(tmp_path, db_url, broker_url)


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    made: list[Worker] = []

    def _make() -> Worker:
        worker = Worker(worker_env, tmp_path / "worker.log")
        made.append(worker)
        return worker

    yield _make
    for worker in made:
        worker.stop()


def _store_deliveries(store_alert: Callable[..., list[str]], url: str, n: int) -> list[str]:
    keys = []
    for i in range(n):
        planned = PlannedDelivery(f"sub-{i % 3}", _hook(url, i), agency_id="ag-1",
                                  language="en")
        keys += store_alert([planned], event_id=f"ev-{i:03d}", sent=_utc_now())
    return keys


def _hook(url: str, i: int):  # noqa: ANN202
    from alerts.model import ChannelAddress, ChannelKind

    return ChannelAddress(ChannelKind.WEBHOOK, f"{url}?n={i}")


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tail}")


def _statuses(sessions: sessionmaker[Session], keys: list[str]) -> list[DeliveryStatus]:
    with session_scope(sessions) as session:
        return [outbox.get_delivery(session, k).status for k in keys]


def _enqueue(worker_env: dict[str, str], sessions: sessionmaker[Session]) -> None:
    """Hand the due deliveries to the broker (as the pipeline does after an assessment)."""
    from workers.celery_app import make_celery
    from workers.tasks import enqueue_due

    settings = Settings(data_dir=Path(worker_env["TOCSIN_DATA_DIR"]),
                        broker_url=worker_env["TOCSIN_BROKER_URL"])
    app = make_celery(settings)
    with session_scope(sessions) as session:
        enqueue_due(app, outbox.due_deliveries(session, now=_utc_now()))
    app.close()


def _utc_now():  # noqa: ANN202
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_worker_killed_mid_delivery_loses_nothing_and_each_key_is_processed_once(
        sessions, store_alert, receiver, workers, worker_env, tmp_path) -> None:
    receiver.delay_s = 0.3  # deliveries are in flight when the worker dies
    keys = _store_deliveries(store_alert, receiver.url, 24)
    _enqueue(worker_env, sessions)
    first = workers()
    first.start()
    log = tmp_path / "worker.log"
    _wait(lambda: len(receiver.processed) >= 4, 60, "the first deliveries", log)
    first.kill()
    assert len(receiver.processed) < len(keys), "the kill came too late to test anything"
    second = workers()
    second.start()
    _wait(lambda: all(s is DeliveryStatus.ACK for s in _statuses(sessions, keys)), 120,
          "every delivery to be delivered after the restart", log)
    # Nothing arrived under any other key (a duplicate would), every key was processed.
    assert set(receiver.arrivals) == set(receiver.processed) == set(keys)


def test_a_receiver_failing_for_a_while_is_retried_by_the_workers_then_delivered(
        sessions, store_alert, receiver, workers, worker_env, tmp_path) -> None:
    receiver.script = [500, 503, 500, 502]
    keys = _store_deliveries(store_alert, receiver.url, 3)
    _enqueue(worker_env, sessions)
    workers().start()
    _wait(lambda: all(s is DeliveryStatus.ACK for s in _statuses(sessions, keys)), 90,
          "every delivery after the receiver recovers", tmp_path / "worker.log")
    assert set(receiver.arrivals) == set(receiver.processed) == set(keys)
    assert sum(receiver.arrivals.values()) == len(keys) + 4
    # The workers log JSON lines naming the delivery and the reason of each retry.
    records = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()
               if line.startswith("{")]
    retries = [r for r in records if r.get("message") == "delivery will be retried"]
    assert retries and all(r["delivery"] in keys and "50" in r["error"] for r in retries)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_broker_restarted_mid_run_loses_and_duplicates_nothing(
        sessions, store_alert, receiver, tmp_path, db_url) -> None:
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]
    broker = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    env = _env(tmp_path, db_url, f"redis://127.0.0.1:{port}/0")
    worker = Worker(env, tmp_path / "worker.log")
    try:
        _wait(lambda: port_open("127.0.0.1", port), 10, "the private Redis",
              tmp_path / "worker.log")
        receiver.delay_s = 0.2
        keys = _store_deliveries(store_alert, receiver.url, 16)
        _enqueue(env, sessions)
        worker.start()
        _wait(lambda: len(receiver.processed) >= 3, 60, "the first deliveries",
              tmp_path / "worker.log")
        broker.kill()  # everything queued in the broker is gone with it
        broker.wait(timeout=10)
        time.sleep(1)
        broker = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _wait(lambda: all(s is DeliveryStatus.ACK for s in _statuses(sessions, keys)), 120,
              "every delivery after the broker restart", tmp_path / "worker.log")
        assert set(receiver.arrivals) == set(receiver.processed) == set(keys)
    finally:
        worker.stop()
        broker.kill()
        broker.wait(timeout=10)
