"""Task and queue names in one place, so a rename can never strand messages in flight."""

from __future__ import annotations

from alerts.model import Level


class TaskNames:
    """Registered Celery task names (set with ``name=``, never derived from the module)."""

    DELIVER = "tocsin.dispatch.deliver"
    SWEEP = "tocsin.dispatch.sweep"
    POLL_FEEDS = "tocsin.pipeline.poll_feeds"
    POLL_FEED = "tocsin.pipeline.poll_feed"
    ASSESS_ITEM = "tocsin.pipeline.assess_item"
    REPLAY_SCAN = "tocsin.replay.scan"
    REPLAY_ASSESS = "tocsin.replay.assess"
    OVERLAY_JOB = "tocsin.analysis.overlay_job"
    REDRIVE_JOBS = "tocsin.analysis.redrive_jobs"


class QueueNames:
    """Queues: red alerts have their own, so they never wait behind lower levels or bulk work."""

    DISPATCH_RED = "dispatch.red"
    DISPATCH_ORANGE = "dispatch.orange"
    DISPATCH_ROUTINE = "dispatch.routine"  # yellow, green, digests of them, cancels
    SWEEP = "dispatch.sweep"
    INGEST = "ingest"
    ANALYSIS = "analysis"

    DISPATCH = (DISPATCH_RED, DISPATCH_ORANGE, DISPATCH_ROUTINE)
    ALL = (DISPATCH_RED, DISPATCH_ORANGE, DISPATCH_ROUTINE, SWEEP, INGEST, ANALYSIS)


_QUEUE_BY_LEVEL = {
    Level.RED: QueueNames.DISPATCH_RED,
    Level.ORANGE: QueueNames.DISPATCH_ORANGE,
    Level.YELLOW: QueueNames.DISPATCH_ROUTINE,
    Level.GREEN: QueueNames.DISPATCH_ROUTINE,
}


def queue_for(level: Level | None) -> str:
    """The dispatch queue of a delivery at ``level`` (unknown level: routine)."""
    return _QUEUE_BY_LEVEL.get(level, QueueNames.DISPATCH_ROUTINE) if level else \
        QueueNames.DISPATCH_ROUTINE


def message_priority(level: Level | None, *, broker_url: str) -> int:
    """The broker message priority inside a queue: higher levels first.

    Redis (kombu's emulation) takes 0 as the highest priority, AMQP takes 9; serverless
    transports ignore priorities (which is why levels also get their own queues).
    """
    rank = level.rank if level else 0
    if broker_url.startswith(("amqp", "pyamqp")):
        return 3 * rank
    return 9 - 3 * rank
