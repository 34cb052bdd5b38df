"""``create_app(settings)``: the FastAPI application for agencies, analysts and the public.

Thin routes over the store functions the CLI uses; one error table (:mod:`api.errors`);
keys checked on every request (:mod:`api.security`); bodies bounded before they are read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from api import routes_admin, routes_agency, routes_jobs, routes_public
from api.convert import Resolver
from api.errors import install_error_handlers
from api.feed_file import FeedFile
from api.security import BodyLimitMiddleware, RateLimiter
from api.settings import ApiSettings
from store.db import make_engine, make_session_factory, read_only_sessions, upgrade
from workers.metrics import build_registry

JOB_PREFIX = "/v1/jobs"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: ApiSettings | None = None,
    *,
    sessions: sessionmaker[Session] | None = None,
    clock: Callable[[], datetime] = _utc_now,
    resolve: Resolver | None = None,
    migrate: bool = True,
) -> FastAPI:
    """Build the API.

    Args:
        settings: the deployment's settings (from the environment when None).
        sessions: the store; by default the settings' database, migrated when ``migrate``.
        clock: the current time (aware); tests pass their own.
        resolve: ``(host, port) -> addresses`` for webhook checks; the system resolver
            when None.
        migrate: bring the database schema up to date first (the embedded default).
    """
    settings = settings or ApiSettings()
    if sessions is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        if migrate:
            upgrade(engine)
        sessions = make_session_factory(engine)
    app = FastAPI(
        title="Tocsin API",
        version="1",
        summary="Alerts for emergency agencies, overlays for analysts, CAP for the public.",
        description=(
            "Agencies manage their subscriptions (GeoJSON areas), read the alerts that "
            "matched them (JSON, or the exact CAP 1.2 XML), follow their deliveries and "
            "acknowledge alerts (which stops escalation). Analysts submit overlay jobs. "
            "The public reads the CAP Atom feed. Every key sees only its own agency's "
            "records. Errors are `{detail, errors: [{field, message}]}`."),
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.read_sessions = read_only_sessions(sessions)
    app.state.clock = clock
    app.state.resolve = resolve
    app.state.rate_limiter = RateLimiter(settings.api_rate_per_min, settings.api_rate_burst)
    app.state.metrics_registry = build_registry(sessions)
    app.state.public_feed = FeedFile(settings.resolved_cap_feed_dir()
                                     / f"{routes_public.PUBLIC_FEED}.atom")
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes,
                       max_upload_bytes=settings.api_max_upload_bytes,
                       upload_prefixes=(JOB_PREFIX,))
    app.include_router(routes_public.router)
    app.include_router(routes_agency.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_jobs.router)
    return app
