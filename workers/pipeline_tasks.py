"""The pipeline's Celery tasks: thin, taking ids, each on its own queue.

``poll_feeds`` (on the beat) finds feeds due for a poll and items whose assessment was lost;
``poll_feed`` (queue ``ingest``) polls one feed and hands each new item on; ``assess_item``
(queue ``analysis``) assesses one item and hands the alert's deliveries to the dispatch
queues at once. A slow raster on ``analysis`` never holds back ``dispatch.red``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from celery import Celery

from store import outbox
from store.db import make_engine, make_session_factory, session_scope
from workers.names import QueueNames, TaskNames
from workers.pipeline import (
    PipelineContext,
    assess_item,
    due_feeds,
    open_pipeline,
    pending_items,
    poll_feed,
)
from workers.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


def register_pipeline_tasks(app: Celery, settings: Settings) -> None:
    """Register the pipeline tasks on ``app`` (the context is built lazily per process)."""
    state: dict[str, PipelineContext] = {}

    def context() -> PipelineContext:
        if "ctx" not in state:
            engine = make_engine(settings.resolved_database_url())
            state["ctx"] = open_pipeline(settings, make_session_factory(engine))
        return state["ctx"]

    @app.task(name=TaskNames.POLL_FEEDS, ignore_result=True, shared=False)
    def poll_feeds() -> int:
        ctx = context()
        now = _now()
        due = due_feeds(ctx, now=now)
        for feed_id in due:
            app.send_task(TaskNames.POLL_FEED, kwargs={"feed_id": feed_id},
                          queue=QueueNames.INGEST)
        for item_id in pending_items(ctx, now=now):
            app.send_task(TaskNames.ASSESS_ITEM, kwargs={"item_id": item_id},
                          queue=QueueNames.ANALYSIS)
        return len(due)

    @app.task(name=TaskNames.POLL_FEED, ignore_result=True, shared=False, acks_late=True)
    def poll_one_feed(*, feed_id: str) -> int:
        outcome = poll_feed(context(), feed_id, now=_now())
        if outcome is None:
            return 0
        for item_id in outcome.item_ids:
            app.send_task(TaskNames.ASSESS_ITEM, kwargs={"item_id": item_id},
                          queue=QueueNames.ANALYSIS)
        return len(outcome.item_ids)

    @app.task(name=TaskNames.ASSESS_ITEM, ignore_result=True, shared=False, acks_late=True)
    def assess_one_item(*, item_id: int) -> str:
        ctx = context()
        outcome = assess_item(ctx, item_id, now=_now())
        if outcome is None:
            return "skipped"
        if outcome.alert_identifier:
            from workers.tasks import enqueue_due

            now = _now()
            with session_scope(ctx.sessions) as session:
                due = [d for d in outbox.list_outbox(
                    session, alert_identifier=outcome.alert_identifier, limit=100_000)
                    if d.status.value == "pending" and (d.not_before is None
                                                        or d.not_before <= now)]
                outbox.mark_enqueued(session, [d.idempotency_key for d in due], at=now)
            enqueue_due(app, due)
        return outcome.status
