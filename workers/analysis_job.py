"""An analyst's overlay job from the store: claim it, run the overlay, record what came out.

The API records the job (inputs, options) and hands its id to the ``analysis`` queue; a
worker calls :func:`run_analysis_job` with that id. The same function runs without Celery
(tests, a notebook). Progress is written to the job's row step by step, each in its own
transaction, so the API shows it while the overlay runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from feeds.errors import FeedError
from geo.errors import GeoError
from geo.types import HazardKind
from store import jobs_repo
from store.db import session_scope

if TYPE_CHECKING:
    from feeds.base import ReadOptions

log = logging.getLogger("tocsin.analysis")

RESULT_FILES: Mapping[str, str] = {
    "exposure.csv": "text/csv; charset=utf-8",
    "access.csv": "text/csv; charset=utf-8",
    "footprint.gpkg": "application/geopackage+sqlite3",
    "map.png": "image/png",
    "report.html": "text/html; charset=utf-8",
}
"""The result files of an overlay job and their media types (nothing else is served)."""

REDUCTIONS = ("max", "mean", "min", "exceedance")
JOB_STALE_S = 2 * 3600.0
"""A job running longer than this is taken to have lost its worker and may run again."""
JOB_MAX_ATTEMPTS = 3
JOB_REDRIVE_AFTER_S = 600.0
"""A job queued longer than this is handed to the broker again (its message may be lost)."""


@dataclass(frozen=True, slots=True)
class JobRun:
    """What became of one call: ``done``, ``failed`` or ``skipped`` (not claimed)."""

    job_id: str
    status: str
    error: str | None = None


def read_options_of(options: Mapping[str, Any]) -> ReadOptions:
    """The reader's options of a job's stored options (``variable``, ``time``, ``member``...).

    ``member`` is an index, a member value, or a reduction over members (max, mean, min,
    exceedance with ``threshold``).

    Raises:
        ValueError: the combination is not valid (e.g. exceedance without threshold).
    """
    from feeds.base import ReadOptions  # xarray: loaded only where hazards are read

    member = options.get("member")
    selected: int | str | None = None
    reduce = None
    if isinstance(member, str) and member.lower() in REDUCTIONS:
        reduce = member.lower()
    elif isinstance(member, str):
        selected = int(member) if member.lstrip("-").isdigit() else member
    time = options.get("time")
    if isinstance(time, str) and time.lstrip("-").isdigit():
        time = int(time)
    kind = options.get("kind")
    return ReadOptions(variable=options.get("variable"), time=time, member=selected,
                       reduce=reduce, threshold=options.get("threshold"),  # type: ignore[arg-type]
                       kind=HazardKind(kind) if kind else None, units=options.get("units"),
                       nodata=options.get("nodata"))


def _breaks(options: Mapping[str, Any]) -> tuple[float, ...] | None:
    breaks = options.get("breaks")
    return tuple(float(b) for b in breaks) if breaks else None


def run_analysis_job(sessions: sessionmaker[Session], job_id: str, *,
                     now: Callable[[], datetime], stale_s: float = JOB_STALE_S,
                     max_attempts: int = JOB_MAX_ATTEMPTS) -> JobRun:
    """Claim the job, run its overlay, and record the result files or the failure.

    A job another worker holds, or one already finished, is skipped (``status="skipped"``).
    Bad inputs (a raster that cannot be read, a hazard that misses the region, a region pack
    that does not load) fail the job with the reason; so does anything unexpected, logged
    with its traceback. The job's row is never left ``running`` by an exception.
    """
    # Imported here: the overlay's libraries (plotting, vectors) take seconds to load, and
    # the API and dispatch-only workers import this module without running overlays.
    from workers.overlay_job import STEPS, OverlayJob, run_overlay_job

    with session_scope(sessions) as session:
        job = jobs_repo.claim_job(session, job_id, now=now(), stale_s=stale_s,
                                  max_attempts=max_attempts)
    if job is None:
        return JobRun(job_id, "skipped")
    out_dir = Path(job.options["results_dir"])

    def progress(step: str) -> None:
        done = STEPS.index(step) if step in STEPS else 0
        with session_scope(sessions) as session:
            jobs_repo.record_progress(session, job_id, progress=done / len(STEPS), step=step)

    try:
        overlay = OverlayJob(hazard_path=Path(job.hazard_path), out_dir=out_dir,
                             region_manifest=Path(job.options["region_manifest"]),
                             breaks=_breaks(job.options),
                             impassable_from_class=job.options.get("impassable_from_class"))
        run_overlay_job(overlay, read_options_of(job.options), progress=progress)
    except (FeedError, GeoError, ValueError, OSError) as exc:
        folders = (Path(job.hazard_path).parent, out_dir,
                   Path(job.options["region_manifest"]).parent)
        return _failed(sessions, job_id, _reason(exc, folders), now())
    except Exception:
        log.exception("overlay job %s failed unexpectedly", job_id)
        return _failed(sessions, job_id, "internal error while running the overlay; the "
                                         "operators have the details in the worker log", now())
    results = [name for name in RESULT_FILES if (out_dir / name).is_file()]
    with session_scope(sessions) as session:
        jobs_repo.finish_job(session, job_id, results=results, at=now())
    return JobRun(job_id, jobs_repo.DONE)


def _reason(exc: BaseException, folders: tuple[Path, ...] = ()) -> str:
    """The failure as an analyst reads it: what kind of problem, and the library's message.

    Server paths are reduced to file names: the job's own folders are cut off, and so is
    the folder part of any other absolute path.
    """
    if isinstance(exc, FeedError):
        what = "the hazard could not be read"
    elif isinstance(exc, GeoError):
        what = "the overlay could not be computed"
    elif isinstance(exc, OSError):
        what = "a file could not be read or written"
    else:
        what = "invalid input"
    text = str(exc)
    for folder in sorted({str(f) for f in folders} | {str(f.resolve()) for f in folders},
                         key=len, reverse=True):
        text = text.replace(folder + "/", "")
    return f"{what}: {_strip_dirs(text)}"


def _strip_dirs(text: str) -> str:
    words = []
    for word in text.split(" "):
        bare = word.strip("'\"(),:;")
        if bare.startswith("/") and len(bare) > 1:
            word = word.replace(bare, Path(bare).name)
        words.append(word)
    return " ".join(words)


def _failed(sessions: sessionmaker[Session], job_id: str, reason: str, at: datetime) -> JobRun:
    with session_scope(sessions) as session:
        jobs_repo.fail_job(session, job_id, error=reason, at=at)
    return JobRun(job_id, jobs_repo.FAILED, reason)


def redrive_jobs(sessions: sessionmaker[Session], send: Callable[[str], None], *,
                 now: datetime, queued_for_s: float = JOB_REDRIVE_AFTER_S,
                 stale_s: float = JOB_STALE_S, max_attempts: int = JOB_MAX_ATTEMPTS
                 ) -> list[str]:
    """Hand again to the workers every job whose message may be lost; the ids sent.

    Jobs still running after their last attempt fail ("the worker stopped"). Sending a job
    twice is harmless: only one worker can claim it.
    """
    with session_scope(sessions) as session:
        to_send, to_fail = jobs_repo.jobs_to_redrive(
            session, now=now, queued_for_s=queued_for_s, stale_s=stale_s,
            max_attempts=max_attempts)
        for job_id in to_fail:
            jobs_repo.fail_job(session, job_id, at=now, error=(
                f"the worker running this job stopped {max_attempts} times; the hazard may "
                "be too large for the workers' memory"))
    for job_id in to_send:
        send(job_id)
    return to_send

