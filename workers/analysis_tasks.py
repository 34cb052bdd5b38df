"""The analysts' Celery tasks: thin, taking a job id, on the ``analysis`` queue.

``overlay_job`` runs one overlay job (:func:`workers.analysis_job.run_analysis_job`).
``redrive_jobs`` runs on the beat: it hands again to the workers every job whose message was
never sent (the broker was down when the API recorded it) or was lost with its worker, so
a job recorded in the store is never lost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from store.db import make_engine, make_session_factory
from workers.analysis_job import redrive_jobs, run_analysis_job
from workers.names import QueueNames, TaskNames
from workers.settings import Settings

log = logging.getLogger("tocsin.analysis")

REDRIVE_INTERVAL_S = 300.0


def _now() -> datetime:
    return datetime.now(UTC)


def send_overlay_job(app: Celery, job_id: str, **options: Any) -> None:
    """Hand one job to the ``analysis`` queue (raises when the broker cannot be reached)."""
    app.send_task(TaskNames.OVERLAY_JOB, kwargs={"job_id": job_id}, queue=QueueNames.ANALYSIS,
                  **options)


def register_analysis_tasks(app: Celery, settings: Settings) -> None:
    """Register the analysis tasks on ``app`` and put the re-drive on its beat."""
    state: dict[str, sessionmaker[Session]] = {}

    def sessions() -> sessionmaker[Session]:
        # Built lazily, after the fork: every worker process has its own connections.
        if "sessions" not in state:
            state["sessions"] = make_session_factory(
                make_engine(settings.resolved_database_url()))
        return state["sessions"]

    @app.task(name=TaskNames.OVERLAY_JOB, ignore_result=True, shared=False, acks_late=True)
    def overlay_job(*, job_id: str) -> str:
        run = run_analysis_job(sessions(), job_id, now=_now)
        log.info("overlay job %s: %s", job_id, run.status,
                 extra={"job_id": job_id, "status": run.status})
        return run.status

    @app.task(name=TaskNames.REDRIVE_JOBS, ignore_result=True, shared=False)
    def redrive() -> int:
        return len(redrive_jobs(sessions(), lambda job_id: send_overlay_job(app, job_id),
                                now=_now()))

    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "redrive-overlay-jobs": {"task": TaskNames.REDRIVE_JOBS, "schedule": REDRIVE_INTERVAL_S,
                                 "options": {"queue": QueueNames.SWEEP}},
    }
