"""The Celery tasks: thin, idempotent, taking ids only; the work is in ``workers/dispatch.py``.

``deliver`` runs a batch of outbox rows of one level; rows to retry or still waiting are
handed back to the broker with their delay and marked so, and the sweep does not hand them
over a second time. ``sweep`` runs on a beat: it makes digests and escalations and enqueues
whatever is due, including deliveries whose messages a broker lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery

from alerts.model import Level
from store import outbox
from store.db import make_engine, make_session_factory, session_scope
from store.models import DeliveryRecord
from workers.dispatch import DispatchContext, deliver_batch
from workers.names import TaskNames, message_priority, queue_for
from workers.settings import Settings
from workers.sweep import sweep


def utc_now() -> datetime:
    """The clock of the workers (the core never reads it)."""
    return datetime.now(UTC)


def _send_keys(app: Celery, keys: Sequence[str], level: Level | None, *,
               countdown: float | None = None, producer: Any = None) -> None:
    app.send_task(TaskNames.DELIVER, kwargs={"keys": list(keys),
                                             "level": level.value if level else None},
                  queue=queue_for(level), producer=producer, countdown=countdown,
                  priority=message_priority(level, broker_url=str(app.conf.broker_url)))


def enqueue_due(app: Celery, records: Iterable[DeliveryRecord], *, batch_size: int = 50) -> int:
    """Hand deliveries to the workers: one message per batch of one level, on its queue.

    Highest levels are sent first, over one connection.

    Returns:
        The number of deliveries handed over.
    """
    by_level: dict[Level | None, list[str]] = defaultdict(list)
    for record in records:
        by_level[record.level].append(record.idempotency_key)
    order = sorted(by_level, key=lambda lv: lv.rank if lv else -1, reverse=True)
    with app.producer_or_acquire() as producer:
        for level in order:
            keys = by_level[level]
            for start in range(0, len(keys), batch_size):
                _send_keys(app, keys[start:start + batch_size], level, producer=producer)
    return sum(len(keys) for keys in by_level.values())


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
    @app.task(name=TaskNames.DELIVER, acks_late=True, reject_on_worker_lost=True,
              shared=False, ignore_result=True)
    def deliver(*, keys: list[str], level: str | None = None) -> dict[str, int]:
        ctx = context()
        outcomes = deliver_batch(keys, ctx, now=utc_now)
        later: dict[float, list[str]] = defaultdict(list)
        for outcome in outcomes:
            if outcome.outcome in ("retry", "waiting") and outcome.retry_in_s is not None:
                later[round(outcome.retry_in_s, 1)].append(outcome.key)
        lv = Level(level) if level else None
        for delay, again in later.items():
            with session_scope(ctx.sessions) as session:
                outbox.mark_enqueued(session, again, at=utc_now() + timedelta(seconds=delay))
            _send_keys(app, again, lv, countdown=delay)
        counts: dict[str, int] = defaultdict(int)
        for outcome in outcomes:
            counts[outcome.outcome] += 1
        return dict(counts)

    @app.task(name=TaskNames.SWEEP, ignore_result=True, shared=False)
    def sweep_outbox() -> int:
        ctx = context()
        report = sweep(ctx, now=utc_now(), enqueue_every_s=ctx.policy.lease_s)
        return enqueue_due(app, report.due, batch_size=ctx.policy.batch_size)


def build_context(settings: Settings) -> DispatchContext:
    """The dispatch context of a deployment: its store and its configured channels."""
    from workers.channel_setup import build_registry, dispatch_policy

    engine = make_engine(settings.resolved_database_url())
    return DispatchContext(sessions=make_session_factory(engine),
                           registry=build_registry(settings), policy=dispatch_policy(settings))
