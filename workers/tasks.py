"""The Celery tasks: thin, idempotent, taking ids only; the work is in ``workers/dispatch.py``.

``deliver`` runs one outbox row; a retryable failure re-queues it with the backoff the
pipeline chose (the row, not the message, holds the truth). ``sweep`` runs on a beat: it
makes digests and escalations and enqueues whatever is due, including deliveries whose
messages a broker lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from alerts.model import Level
from store.db import make_engine, make_session_factory
from store.models import DeliveryRecord
from workers.dispatch import DispatchContext, deliver_one, sweep
from workers.names import TaskNames, message_priority, queue_for
from workers.settings import Settings


def utc_now() -> datetime:
    """The clock of the workers (the core never reads it)."""
    return datetime.now(UTC)


def enqueue_delivery(app: Celery, record: DeliveryRecord, *, producer: Any = None) -> None:
    """Send one delivery to its level's queue, with its level's priority."""
    level = record.level.value if record.level else None
    app.send_task(TaskNames.DELIVER, kwargs={"key": record.idempotency_key, "level": level},
                  queue=queue_for(record.level), producer=producer,
                  priority=message_priority(record.level, broker_url=str(app.conf.broker_url)))


def enqueue_due(app: Celery, records: list[DeliveryRecord]) -> int:
    """Send every delivery of ``records`` to the workers over one connection."""
    with app.connection_for_write() as connection, app.producer_or_acquire() as producer:
        del connection
        for record in records:
            enqueue_delivery(app, record, producer=producer)
    return len(records)


def register_tasks(app: Celery, settings: Settings,
                   context_factory: Callable[[], DispatchContext] | None = None) -> None:
    """Register the dispatch tasks on ``app``; the context is built lazily in each worker.

    Built after the fork, so every worker process has its own database connections.
    """
    state: dict[str, DispatchContext] = {}

    def context() -> DispatchContext:
        if "ctx" not in state:
            state["ctx"] = (context_factory or (lambda: build_context(settings)))()
        return state["ctx"]

    # shared=False: a shared task would be added to every later app of the process too.
    @app.task(name=TaskNames.DELIVER, bind=True, acks_late=True, reject_on_worker_lost=True,
              shared=False,
              max_retries=None, ignore_result=True)
    def deliver(self: Any, *, key: str, level: str | None = None) -> str:
        outcome = deliver_one(key, context(), now=utc_now)
        if outcome.outcome in ("retry", "waiting") and outcome.retry_in_s is not None:
            lv = Level(level) if level else None
            raise self.retry(countdown=outcome.retry_in_s, queue=queue_for(lv),
                             priority=message_priority(lv, broker_url=str(app.conf.broker_url)))
        return outcome.outcome

    @app.task(name=TaskNames.SWEEP, ignore_result=True, shared=False)
    def sweep_outbox() -> int:
        report = sweep(context(), now=utc_now())
        for record in report.due:
            enqueue_delivery(app, record)
        return len(report.due)


def build_context(settings: Settings) -> DispatchContext:
    """The dispatch context of a deployment: its store and its configured channels."""
    from workers.channel_setup import build_registry, dispatch_policy

    engine = make_engine(settings.resolved_database_url())
    return DispatchContext(sessions=make_session_factory(engine),
                           registry=build_registry(settings), policy=dispatch_policy(settings))
