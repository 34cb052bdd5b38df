"""Analysts' routes: submit an overlay job, follow it, download its results.

A job belongs to the submitting key's agency (every key of the agency sees it) or, when an
admin key submits it, to that admin key alone; to anyone else it does not exist (404). The
job is recorded first, then handed to the ``analysis`` queue; when the broker cannot be
reached the job stays ``queued`` and the beat's re-drive hands it over later
(docs/api-jobs.md).
"""

from __future__ import annotations

import logging
import shutil
import threading
import unicodedata
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel

from api.errors import ApiError, responses
from api.regions import pack_manifest
from api.routes_agency import Db
from api.security import AnyKey
from api.uploads import ACCEPTED, refuse, save_upload
from geo.classes import validate_breaks
from geo.errors import InvalidBreaksError
from geo.types import HazardKind
from store import feeds_repo, jobs_repo
from store.api_store import ApiKey
from store.db import session_scope
from store.repo import RecordNotFoundError
from workers.analysis_job import RESULT_FILES, read_options_of

log = logging.getLogger("tocsin.api")
router = APIRouter(prefix="/v1", tags=["analyst"])
_KEYED = (401, 429, 503)
MAX_BREAKS = 20
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job's id.")]
_PUBLIC_OPTIONS = ("breaks", "variable", "time", "member", "threshold", "kind", "units",
                   "nodata", "impassable_from_class", "feed_item")
_lock = threading.Lock()


class JobOut(BaseModel):
    """An overlay job: what it overlays, how far it is, and its results once done."""

    job_id: str
    url: str
    status: str
    progress: float
    step: str | None
    region: str
    hazard: str
    options: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    attempts: int
    results: dict[str, str]


class JobPage(BaseModel):
    """One page of jobs, newest first; ``next`` is the cursor of the following page."""

    items: list[JobOut]
    next: str | None


def owner_of(key: ApiKey) -> jobs_repo.JobOwner:
    """Whose jobs a key sees: its agency's, or (an admin key) its own."""
    return jobs_repo.JobOwner(key.key_id, key.agency_id if key.role == "agency" else None)


def job_out(job: jobs_repo.OverlayJobRecord) -> JobOut:
    """The API's view of a job (server paths are never shown)."""
    url = f"/v1/jobs/{job.job_id}"
    return JobOut(
        job_id=job.job_id, url=url, status=job.status, progress=job.progress, step=job.step,
        region=job.region, hazard=job.hazard_name,
        options={k: v for k, v in job.options.items() if k in _PUBLIC_OPTIONS and v is not None},
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        error=job.error, attempts=job.attempts,
        results={name: f"{url}/results/{name}" for name in job.results})


def parse_breaks(text: str | None) -> list[float] | None:
    """Class breaks from ``"0.15,0.5,1.5"``: finite, strictly increasing, at most 20.

    Raises:
        ApiError: 422 naming ``breaks``.
    """
    if text is None or not text.strip():
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
        if len(values) > MAX_BREAKS:
            raise InvalidBreaksError(f"at most {MAX_BREAKS} breaks, got {len(values)}")
        validate_breaks(values)
    except (ValueError, InvalidBreaksError) as exc:
        raise refuse(422, "breaks", f"give increasing numbers separated by commas, e.g. "
                                    f"0.15,0.5,1.5 ({exc})") from None
    return values


def _display_name(name: str | None) -> str:
    """The client's file name, for display only: its last part, printable, bounded."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in base if unicodedata.category(c)[0] not in "CZ" or c == " ")
    return text.strip()[:200] or "upload"


def _enqueue(request: Request, job_id: str) -> None:
    """Hand the job to the workers; a broker that cannot be reached leaves it queued."""
    state = request.app.state
    try:
        send: Callable[[str], None] | None = getattr(state, "enqueue_overlay_job", None)
        if send is None:
            send = _celery_sender(request)
        send(job_id)
    except Exception as exc:  # noqa: BLE001 - the job is stored; the re-drive sends it later
        log.warning("overlay job %s stays queued: the broker could not be reached (%s); the "
                    "beat's re-drive hands it over", job_id, exc)


def _celery_sender(request: Request) -> Callable[[str], None]:
    from workers.analysis_tasks import send_overlay_job
    from workers.celery_app import make_celery

    state = request.app.state
    with _lock:
        if not hasattr(state, "overlay_celery"):
            state.overlay_celery = make_celery(state.settings)
    celery = state.overlay_celery
    return lambda job_id: send_overlay_job(celery, job_id, retry=False)


@router.post("/jobs", status_code=202, response_model=JobOut,
             responses=responses(*_KEYED, 413, 415, 422))
def submit_job(
    request: Request, response: Response, key: AnyKey,
    region: Annotated[str, Form(min_length=1, max_length=100,
                                description="A region pack's name (an unknown name is "
                                            "answered with the installed ones).")],
    hazard: Annotated[UploadFile | None, File(description=f"The hazard raster: {ACCEPTED}. "
                                                          "Or give feed_item.")] = None,
    feed_item: Annotated[int | None, Form(ge=1, le=2**62,
                                          description="A stored feed item's id.")] = None,
    breaks: Annotated[str | None, Form(max_length=1000, description=(
        "Class lower bounds, increasing, comma-separated (e.g. 0.15,0.5,1.5); default: the "
        "hazard kind's classes."))] = None,
    variable: Annotated[str | None, Form(min_length=1, max_length=200, description=(
        "NetCDF variable, GRIB shortName, ShakeMap field (MMI, PGA, PGV) or band=N."))] = None,
    time: Annotated[str | None, Form(min_length=1, max_length=64,
                                     description="A time (ISO 8601) or an index.")] = None,
    member: Annotated[str | None, Form(min_length=1, max_length=64, description=(
        "An ensemble member (index or value), or max, mean, min, exceedance."))] = None,
    threshold: Annotated[float | None, Form(allow_inf_nan=False, description=(
        "With member=exceedance: the share of members at or above this value."))] = None,
    kind: Annotated[HazardKind | None, Form(description="The hazard kind, when the file does "
                                                        "not say.")] = None,
    units: Annotated[str | None, Form(min_length=1, max_length=32)] = None,
    nodata: Annotated[float | None, Form(allow_inf_nan=False)] = None,
    impassable_from_class: Annotated[int | None, Form(ge=1, le=MAX_BREAKS)] = None,
) -> JobOut:
    """Submit an overlay job: a hazard (an upload or a stored feed item) over a region pack.

    Answers 202 at once; follow the job at its ``Location``. Nothing is stored when the
    request is refused.
    """
    settings = request.app.state.settings
    if (hazard is None) == (feed_item is None):
        raise refuse(422, "hazard", "give either hazard (a file) or feed_item (an id), "
                                    "exactly one")
    try:
        manifest = pack_manifest(settings.resolved_region_packs_dir(), region)
    except ApiError as exc:
        raise refuse(422, "region", exc.detail.removeprefix("region: ")) from None
    options: dict[str, Any] = {
        "breaks": parse_breaks(breaks), "variable": variable, "time": time, "member": member,
        "threshold": threshold, "kind": kind.value if kind else None, "units": units,
        "nodata": nodata, "impassable_from_class": impassable_from_class}
    try:
        read_options_of(options)
    except ValueError as exc:
        raise refuse(422, "threshold" if "threshold" in str(exc) else "member", str(exc)) \
            from None
    if impassable_from_class is not None and options["breaks"] is not None \
            and impassable_from_class > len(options["breaks"]):
        raise refuse(422, "impassable_from_class", f"there are only {len(options['breaks'])} "
                                                   "classes")
    job_id = uuid.uuid4().hex
    job_dir = settings.resolved_jobs_dir() / job_id
    options.update(feed_item=feed_item, region_manifest=str(FilePath(manifest).resolve()),
                   results_dir=str((job_dir / "results").resolve()))
    sessions = request.app.state.sessions
    try:
        if hazard is not None:
            path, _size = save_upload(hazard.file, job_dir / "input",
                                      max_bytes=settings.api_max_upload_bytes)
            hazard_path, hazard_name = str(path.resolve()), _display_name(hazard.filename)
        else:
            with session_scope(sessions) as session:
                try:
                    item = feeds_repo.get_item(session, int(feed_item or 0))
                except RecordNotFoundError:
                    raise refuse(422, "feed_item", f"no feed item {feed_item}") from None
            hazard_path = item.archive_path
            hazard_name = (f"feed {item.feed_id} item {item.id} "
                           f"({_display_name(item.original_name)})")
        with session_scope(sessions) as session:
            job = jobs_repo.create_job(session, job_id=job_id, owner=owner_of(key),
                                       hazard_path=hazard_path, hazard_name=hazard_name,
                                       region=region, options=options,
                                       now=request.app.state.clock())
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    _enqueue(request, job_id)  # after the commit: a worker always finds the row
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return job_out(job)


@router.get("/jobs", response_model=JobPage, responses=responses(*_KEYED, 400, 422))
def list_jobs(
    request: Request, key: AnyKey, session: Db,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> JobPage:
    """The jobs this key sees (its agency's; an admin key's own), newest first."""
    limit = min(limit, request.app.state.settings.api_page_max)
    page, after = jobs_repo.list_jobs(session, owner_of(key), cursor=cursor, limit=limit)
    return JobPage(items=[job_out(j) for j in page], next=after)


def _visible(session: Any, key: ApiKey, job_id: str) -> jobs_repo.OverlayJobRecord:
    try:
        return jobs_repo.get_job(session, job_id, owner_of(key))
    except RecordNotFoundError:
        raise ApiError(404, f"no overlay job {job_id!r}") from None


@router.get("/jobs/{job_id}", response_model=JobOut, responses=responses(*_KEYED, 404, 422))
def get_job(job_id: JobId, key: AnyKey, session: Db) -> JobOut:
    """One job: its status, progress (0 to 1) and step, its error, links to its results."""
    return job_out(_visible(session, key, job_id))


_SAFE_HEADERS = {"X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "default-src 'none'; img-src data:; "
                                            "style-src 'unsafe-inline'; sandbox"}


@router.get("/jobs/{job_id}/results/{name}", responses={
    200: {"content": {media.split(";")[0]: {} for media in RESULT_FILES.values()},
          "description": "The result file."},
    **responses(*_KEYED, 404, 409, 422)})
def get_result(job_id: JobId, name: Annotated[str, Path(max_length=100)], key: AnyKey,
               session: Db) -> FileResponse:
    """One result of a done job: exposure.csv, access.csv, footprint.gpkg, map.png, report.html.

    409 while the job is queued or running, or when it failed; 404 for any other name.
    """
    job = _visible(session, key, job_id)
    if name not in RESULT_FILES:
        raise ApiError(404, f"no result {name!r}; results are {', '.join(RESULT_FILES)}")
    if job.status != jobs_repo.DONE:
        state = f"failed ({job.error})" if job.status == jobs_repo.FAILED else \
            f"{job.status} ({job.progress:.0%}, {job.step or 'waiting'})"
        raise ApiError(409, f"job {job_id} has no results: it is {state}")
    path = FilePath(job.options["results_dir"]) / name
    if name not in job.results or not path.is_file():
        raise ApiError(404, f"job {job_id} has no {name}")
    inline = name.endswith((".png", ".html"))
    return FileResponse(path, media_type=RESULT_FILES[name], filename=name,
                        content_disposition_type="inline" if inline else "attachment",
                        headers=_SAFE_HEADERS)
