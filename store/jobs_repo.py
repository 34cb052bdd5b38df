"""Load and save functions of analysts' overlay jobs (table ``overlay_jobs``).

A job belongs to an agency (submitted with one of its keys: every key of the agency sees it)
or, submitted with an admin key, to that key alone. A job is claimed by one worker with a
conditional UPDATE (queued -> running), so two workers handed the same message never run it
twice; a job left running past a staleness limit (its worker died) may be claimed again.
Like :mod:`store.repo`, every function takes an open session and never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from store.api_models import OverlayJobRow
from store.api_store import BadCursorError, decode_cursor, encode_cursor
from store.repo import RecordNotFoundError

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass(frozen=True, slots=True)
class JobOwner:
    """Who may see a job: an agency (any of its keys), or one admin key (``agency_id`` None)."""

    key_id: str
    agency_id: str | None


@dataclass(frozen=True, slots=True)
class OverlayJobRecord:
    """One overlay job as stored."""

    job_id: str
    owner_key_id: str
    agency_id: str | None
    status: str
    progress: float
    step: str | None
    hazard_path: str
    hazard_name: str
    region: str
    options: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    results: tuple[str, ...]
    attempts: int


def _record(row: OverlayJobRow) -> OverlayJobRecord:
    return OverlayJobRecord(
        row.job_id, row.owner_key_id, row.agency_id, row.status, float(row.progress or 0.0),
        row.step, row.hazard_path, row.hazard_name, row.region, dict(row.options or {}),
        row.created_at, row.started_at, row.finished_at, row.error,
        tuple(row.results or ()), int(row.attempts or 0))


def _visible_to(owner: JobOwner) -> Any:
    if owner.agency_id is not None:
        return OverlayJobRow.agency_id == owner.agency_id
    return and_(OverlayJobRow.agency_id.is_(None), OverlayJobRow.owner_key_id == owner.key_id)


def create_job(session: Session, *, job_id: str, owner: JobOwner, hazard_path: str,
               hazard_name: str, region: str, options: dict[str, Any],
               now: datetime) -> OverlayJobRecord:
    """Record a new job, queued."""
    row = OverlayJobRow(job_id=job_id, owner_key_id=owner.key_id, agency_id=owner.agency_id,
                        status=QUEUED, progress=0.0, step="queued", hazard_path=hazard_path,
                        hazard_name=hazard_name, region=region, options=options,
                        created_at=now, results=[], attempts=0)
    session.add(row)
    session.flush()
    return _record(row)


def get_job(session: Session, job_id: str, owner: JobOwner | None = None) -> OverlayJobRecord:
    """The job ``job_id`` (only when ``owner`` may see it, if given).

    Raises:
        RecordNotFoundError: no such job, or not ``owner``'s (the same answer, on purpose).
    """
    row = session.get(OverlayJobRow, job_id)
    if row is None or (owner is not None and not _owned(row, owner)):
        raise RecordNotFoundError(f"no overlay job {job_id!r}")
    return _record(row)


def _owned(row: OverlayJobRow, owner: JobOwner) -> bool:
    if owner.agency_id is not None:
        return row.agency_id == owner.agency_id
    return row.agency_id is None and row.owner_key_id == owner.key_id


def list_jobs(session: Session, owner: JobOwner, *, cursor: str | None = None,
              limit: int = 50) -> tuple[list[OverlayJobRecord], str | None]:
    """One page of the owner's jobs, newest first, and the next page's cursor (None: last)."""
    stmt = select(OverlayJobRow).where(_visible_to(owner))
    if cursor is not None:
        created_iso, job_id = decode_cursor(cursor, 2)
        try:
            created = datetime.fromisoformat(str(created_iso))
        except ValueError:
            raise BadCursorError("cursor: not a cursor this API handed out") from None
        stmt = stmt.where(or_(OverlayJobRow.created_at < created,
                              and_(OverlayJobRow.created_at == created,
                                   OverlayJobRow.job_id < str(job_id))))
    stmt = stmt.order_by(OverlayJobRow.created_at.desc(), OverlayJobRow.job_id.desc())
    rows = list(session.scalars(stmt.limit(limit + 1)))
    page = [_record(r) for r in rows[:limit]]
    more = len(rows) > limit
    return page, (encode_cursor(page[-1].created_at.isoformat(), page[-1].job_id)
                  if more else None)


def claim_job(session: Session, job_id: str, *, now: datetime, stale_s: float,
              max_attempts: int) -> OverlayJobRecord | None:
    """Take a job to run it; None when it is finished, or another worker has it.

    A job ``running`` since more than ``stale_s`` (its worker went away) may be taken again,
    up to ``max_attempts`` runs in all.
    """
    stale = now - timedelta(seconds=stale_s)
    result = session.execute(
        update(OverlayJobRow)
        .where(OverlayJobRow.job_id == job_id, OverlayJobRow.attempts < max_attempts,
               or_(OverlayJobRow.status == QUEUED,
                   and_(OverlayJobRow.status == RUNNING, OverlayJobRow.started_at < stale)))
        .values(status=RUNNING, attempts=OverlayJobRow.attempts + 1, started_at=now,
                progress=0.0, step="started", error=None)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.expire_all()
    return get_job(session, job_id)


def record_progress(session: Session, job_id: str, *, progress: float, step: str) -> None:
    """Note how far a running job is (``progress`` 0..1) and the step it is on."""
    session.execute(
        update(OverlayJobRow)
        .where(OverlayJobRow.job_id == job_id, OverlayJobRow.status == RUNNING)
        .values(progress=min(1.0, max(0.0, progress)), step=step[:200])
        .execution_options(synchronize_session=False))


def finish_job(session: Session, job_id: str, *, results: Sequence[str], at: datetime) -> None:
    """Mark a job done with the names of its result files."""
    _end(session, job_id, DONE, at=at, results=list(results), error=None, progress=1.0,
         step="done")


def fail_job(session: Session, job_id: str, *, error: str, at: datetime) -> None:
    """Mark a job failed with the reason an analyst can act on."""
    _end(session, job_id, FAILED, at=at, results=[], error=error[:4000], progress=None,
         step="failed")


def _end(session: Session, job_id: str, status: str, *, at: datetime, results: list[str],
         error: str | None, progress: float | None, step: str) -> None:
    row = session.get(OverlayJobRow, job_id)
    if row is None:
        raise RecordNotFoundError(f"no overlay job {job_id!r}")
    row.status, row.finished_at, row.results, row.error, row.step = (
        status, at, results, error, step)
    if progress is not None:
        row.progress = progress
    session.flush()


def jobs_to_redrive(session: Session, *, now: datetime, queued_for_s: float, stale_s: float,
                    max_attempts: int, limit: int = 100) -> tuple[list[str], list[str]]:
    """Jobs whose message may be lost, and jobs out of attempts: ``(to_send, to_fail)``.

    ``to_send``: queued for more than ``queued_for_s`` (the broker was down, or lost the
    message), or running for more than ``stale_s`` (the worker died) with attempts left.
    ``to_fail``: running past ``stale_s`` with no attempt left.
    """
    queued_before = now - timedelta(seconds=queued_for_s)
    stale = now - timedelta(seconds=stale_s)
    waiting = or_(and_(OverlayJobRow.status == QUEUED, OverlayJobRow.created_at < queued_before),
                  and_(OverlayJobRow.status == RUNNING, OverlayJobRow.started_at < stale))
    rows = list(session.execute(
        select(OverlayJobRow.job_id, OverlayJobRow.attempts).where(waiting)
        .order_by(OverlayJobRow.created_at).limit(limit)))
    to_send = [job_id for job_id, attempts in rows if attempts < max_attempts]
    to_fail = [job_id for job_id, attempts in rows if attempts >= max_attempts]
    return to_send, to_fail
