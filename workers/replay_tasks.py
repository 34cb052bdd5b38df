"""The replay's Celery app and tasks, on a broker private to the run.

The embedded default is kombu's filesystem transport under ``RUN/broker`` (no server, and
nothing shared with the live workers); ``--broker`` may name Redis or RabbitMQ instead.
Each run uses the queue ``replay.<run id>``. Two thin tasks, ids in:

- ``tocsin.replay.scan(item_id)``: read one item, write its scan;
- ``tocsin.replay.assess(item_id)``: assess one item as of its own time.

``tocsin replay`` sends one group of scans, then one group of chains of assessments (a
chain per partition, in order). No task waits on another: an assessment whose predecessor
is not finished yet (a message left over from a killed run) is retried a moment later.

Run a worker of a run (``tocsin replay`` starts ``--workers N`` of them itself)::

    python -m workers.replay_tasks RUN [--broker URL]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from celery import Celery, chain, group
from kombu import Queue

from workers.celery_app import _transport_options, broker_transport
from workers.names import TaskNames
from workers.replay_manifest import read_manifest
from workers.settings import Settings

RETRY_NOT_YET_S = 0.5


def queue_name(run_id: str) -> str:
    """The queue of one run's tasks."""
    return f"replay.{run_id}"


def make_replay_celery(run_dir: Path, run_id: str, broker_url: str | None = None) -> Celery:
    """The Celery app of one run, its tasks registered (the context is built lazily)."""
    url = broker_url or "filesystem://"
    app = Celery("tocsin-replay", broker=url, set_as_current=False)
    queue = queue_name(run_id)
    app.conf.update(
        broker_transport=broker_transport(url),
        broker_transport_options=_transport_options(
            Settings(data_dir=run_dir, broker_url=broker_url or ""), url),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(queue, routing_key=queue)],
        task_default_queue=queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
    )
    _register(app, run_dir)
    return app


def _register(app: Celery, run_dir: Path) -> None:
    from workers.replay_run import (
        NotYetError,
        ReplayContext,
        assess_one,
        mark_failed,
        open_context,
        scan_item,
    )

    state: dict[str, ReplayContext] = {}

    def context() -> ReplayContext:
        if "ctx" not in state:
            state["ctx"] = open_context(run_dir)
        return state["ctx"]

    @app.task(name=TaskNames.REPLAY_SCAN, ignore_result=True, shared=False, acks_late=True)
    def scan(*, item_id: int) -> str:
        try:
            scan_item(context(), item_id)
        except Exception as exc:
            _scan_failed(run_dir, item_id, exc)
            raise
        return "scanned"

    @app.task(name=TaskNames.REPLAY_ASSESS, bind=True, ignore_result=True, shared=False,
              acks_late=True, max_retries=None)
    def assess(self: Any, *, item_id: int) -> str:
        try:
            return assess_one(context(), item_id)
        except NotYetError as exc:
            raise self.retry(countdown=RETRY_NOT_YET_S, exc=exc, max_retries=None) from exc
        except Exception as exc:
            mark_failed(context(), item_id, exc)
            raise


def scan_failed_path(run_dir: Path, item_id: int) -> Path:
    """Where an unexpected scan failure is written (removed when the run resumes)."""
    return run_dir / "scan" / f"{item_id}.failed"


def _scan_failed(run_dir: Path, item_id: int, exc: BaseException) -> None:
    path = scan_failed_path(run_dir, item_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")


def send_scans(app: Celery, run_id: str, item_ids: list[int]) -> None:
    """One group of scan tasks."""
    q = queue_name(run_id)
    group([app.signature(TaskNames.REPLAY_SCAN, kwargs={"item_id": i}, immutable=True,
                         queue=q) for i in item_ids], app=app).apply_async()


def send_chains(app: Celery, run_id: str, partitions: list[list[int]]) -> None:
    """One group of chains: each partition's items assessed in order, partitions in parallel."""
    q = queue_name(run_id)
    chains = [chain(*[app.signature(TaskNames.REPLAY_ASSESS, kwargs={"item_id": i},
                                    immutable=True, queue=q) for i in items], app=app)
              for items in partitions if items]
    if chains:
        group(chains, app=app).apply_async()


def purge(app: Celery, run_id: str) -> int:
    """Drop messages a killed run left on its queue; how many."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            return int(channel.queue_purge(queue_name(run_id)) or 0)
        except Exception:  # noqa: BLE001 - a queue never declared has nothing to purge
            return 0


def main(argv: list[str] | None = None) -> None:
    """Run a solo-pool worker of one run (one process: ``--workers N`` starts N)."""
    parser = argparse.ArgumentParser(description="A worker of one replay run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--broker", default=None)
    parser.add_argument("--name", default=f"replay-{os.getpid()}")
    parser.add_argument("--loglevel", default="WARNING")
    args = parser.parse_args(argv)
    manifest = read_manifest(args.run_dir)
    if manifest is None:
        parser.error(f"{args.run_dir}: no replay manifest (run.json)")
    app = make_replay_celery(args.run_dir.resolve(), manifest.run_id, args.broker)
    app.worker_main(["worker", "-P", "solo", "-Q", queue_name(manifest.run_id),
                     "-n", f"{args.name}@%h", "--loglevel", args.loglevel,
                     "--without-gossip", "--without-mingle", "--without-heartbeat"])


if __name__ == "__main__":
    main()
