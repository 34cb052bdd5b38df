"""Public routes: health, Prometheus metrics, the public CAP Atom feed and each alert's CAP.

The feed is the file the CAP feed channel writes, served byte for byte; each CAP is the
stored message exactly as sent. Rate-limited per client address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from alerts.channels.atom import render_atom_feed
from api.errors import ApiError, responses
from api.feed_file import accepts_gzip
from api.schemas import Health
from api.security import public_rate_limit
from store import repo
from store.db import session_scope

router = APIRouter(tags=["public"], dependencies=[Depends(public_rate_limit)])
PUBLIC_FEED = "public"
_PUBLIC = (429, 503)


@router.get("/health", response_model=Health, responses=responses(*_PUBLIC))
def health(request: Request) -> Health:
    """``ok`` when the API answers and its store does (503 otherwise)."""
    with session_scope(request.app.state.read_sessions) as session:
        session.execute(text("SELECT 1"))
    return Health(status="ok", store="ok")


@router.get("/metrics", responses={
    200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition, computed from the store."},
    **responses(*_PUBLIC)})
def metrics(request: Request) -> Response:
    """The deployment's metrics (feeds, alerts, deliveries, latencies) from the store."""
    return Response(generate_latest(request.app.state.metrics_registry),
                    media_type=CONTENT_TYPE_LATEST)


def empty_feed(now: datetime, base_url: str | None) -> bytes:
    """The public feed before any alert was written to it: valid Atom, no entries."""
    return render_atom_feed(PUBLIC_FEED, f"Tocsin alerts: {PUBLIC_FEED}", [], updated=now,
                            base_url=base_url)


@router.get("/feed/public.atom", responses={
    200: {"content": {"application/atom+xml": {"schema": {"type": "string"}}},
          "description": "The Atom feed of current CAP alerts, as the CAP feed channel wrote "
                         "it (gzip when accepted; ETag and Last-Modified for polling)."},
    304: {"description": "Not modified since the client's copy (If-None-Match or "
                         "If-Modified-Since)."},
    **responses(*_PUBLIC)})
def public_feed(request: Request) -> Response:
    """The public Atom feed of current alerts (each entry embeds its CAP message).

    ``If-None-Match`` and ``If-Modified-Since`` are read as sent; a value no validator could
    match (too long, malformed) just means the full answer.
    """
    settings = request.app.state.settings
    if_none_match = request.headers.get("if-none-match")
    if_modified_since = request.headers.get("if-modified-since")
    try:
        version = request.app.state.public_feed.current()
    except OSError:
        raise ApiError(503, "the public feed cannot be read now; retry later",
                       headers={"Retry-After": "5"}) from None
    if version is None:
        data = empty_feed(request.app.state.clock(), settings.cap_feed_base_url or None)
        return Response(data, media_type="application/atom+xml",
                        headers={"Cache-Control": "public, max-age=30"})
    headers = {"Cache-Control": "public, max-age=30", "ETag": version.etag,
               "Last-Modified": version.last_modified_header(), "Vary": "Accept-Encoding"}
    if version.not_modified(if_none_match, if_modified_since):
        return Response(status_code=304, headers=headers)
    if accepts_gzip(request.headers.get("accept-encoding")):
        return Response(version.gzipped, media_type="application/atom+xml",
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(version.data, media_type="application/atom+xml", headers=headers)


@router.get("/cap/{identifier}.xml", responses={
    200: {"content": {"application/cap+xml": {"schema": {"type": "string"}}},
          "description": "The CAP 1.2 message exactly as stored and sent."},
    **responses(*_PUBLIC, 404, 422)})
def public_cap(
    identifier: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")],
    request: Request,
) -> Response:
    """One alert's CAP message, when the deployment publishes its alerts."""
    if not request.app.state.settings.cap_feed_public:
        raise ApiError(404, f"no public alert {identifier!r}")
    with session_scope(request.app.state.read_sessions) as session:
        try:
            record = repo.get_alert(session, identifier)
        except repo.RecordNotFoundError:
            raise ApiError(404, f"no public alert {identifier!r}") from None
    return Response(record.cap_bytes, media_type="application/cap+xml",
                    headers={"Cache-Control": "public, max-age=300"})
