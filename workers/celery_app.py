"""Build the Celery application from settings (no module-level app: tests pass settings in).

The embedded default needs no server: kombu's filesystem transport under the data directory
(with atomic writes, :mod:`workers.fs_broker`).
That transport, like the SQLAlchemy one, loses the messages a SIGKILLed worker had taken
and ignores priorities; neither matters for correctness because the outbox in the store is
the source of truth and the sweeper re-drives whatever is still pending. Production sets
``TOCSIN_BROKER_URL`` to Redis or RabbitMQ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

from workers.fs_broker import TRANSPORT
from workers.names import QueueNames, TaskNames
from workers.settings import Settings


def broker_url(settings: Settings) -> str:
    """The broker URL: ``TOCSIN_BROKER_URL``, else the filesystem transport."""
    return settings.broker_url or "filesystem://"


def _transport_options(settings: Settings, url: str) -> dict[str, Any]:
    if url.startswith("filesystem://"):
        folder = Path(settings.data_dir).resolve() / "broker"
        (folder / "queue").mkdir(parents=True, exist_ok=True)
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        (folder / "control").mkdir(parents=True, exist_ok=True)
        # control_folder too: kombu's default is ./control, wherever the worker was started.
        return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"), "store_processed": False,
                "control_folder": str(folder / "control"), "polling_interval": 0.2}
    if url.startswith(("redis", "rediss")):
        # Unacked messages come back after the visibility timeout; the outbox lease does the
        # same job faster, so this only needs to outlast the longest retry countdown.
        return {"visibility_timeout": max(3600, 2 * settings.dispatch_retry_max_s),
                "queue_order_strategy": "priority", "priority_steps": list(range(10)),
                "sep": ":"}
    return {}


def broker_transport(url: str) -> str | None:
    """The kombu transport for ``url``: the atomic filesystem one for ``filesystem://``."""
    return TRANSPORT if url.startswith("filesystem://") else None


def make_celery(settings: Settings) -> Celery:
    """The Celery app of a deployment, with its queues and the dispatch tasks registered."""
    url = broker_url(settings)
    app = Celery("tocsin", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport=broker_transport(url),
        broker_transport_options=_transport_options(settings, url),
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name, routing_key=name, queue_arguments={"x-max-priority": 10}
                           if url.startswith(("amqp", "pyamqp")) else None)
                     for name in QueueNames.ALL],
        task_default_queue=QueueNames.DISPATCH_ROUTINE,
        task_routes={TaskNames.SWEEP: {"queue": QueueNames.SWEEP}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,  # a worker never sits on messages another could run
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        beat_schedule=_beat_schedule(settings),
    )
    from workers.tasks import register_tasks

    register_tasks(app, settings)
    from workers.analysis_tasks import register_analysis_tasks

    register_analysis_tasks(app, settings)
    if settings.feeds_config is not None:
        from workers.pipeline_tasks import register_pipeline_tasks

        register_pipeline_tasks(app, settings)
    return app


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    """The sweep always; the feed polls when a feeds file is configured."""
    schedule: dict[str, Any] = {"sweep-outbox": {
        "task": TaskNames.SWEEP, "schedule": settings.dispatch_sweep_interval_s,
        "options": {"queue": QueueNames.SWEEP}}}
    if settings.feeds_config is not None:
        schedule["poll-feeds"] = {"task": TaskNames.POLL_FEEDS,
                                  "schedule": settings.feeds_tick_s,
                                  "options": {"queue": QueueNames.SWEEP}}
    return schedule
