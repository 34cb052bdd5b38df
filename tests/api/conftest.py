"""API fixtures: the app on a fresh, seeded store (SQLite, and PostgreSQL + PostGIS).

The seeded world (agencies, keys, subscriptions, alerts) is :mod:`tocsin_testing.api`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing.api import NOW, ApiWorld, bearer, public_resolver, seed
from tocsin_testing.databases import (  # noqa: F401 - fixtures
    empty_engine,
    engine,
    postgres_admin,
    sessions,
)

from api import create_app
from api.settings import ApiSettings


@pytest.fixture
def world(sessions: sessionmaker[Session], tmp_path: Path) -> Iterator[ApiWorld]:  # noqa: F811
    """The API on a seeded store; rate limits off (a test that wants them builds its own)."""
    settings = ApiSettings(data_dir=tmp_path / "data", api_rate_per_min=0)
    ids = seed(sessions, NOW)
    app = create_app(settings, sessions=sessions, clock=lambda: NOW, resolve=public_resolver)
    with TestClient(app) as client:
        yield ApiWorld(client, sessions, bearer(ids["admin"]), bearer(ids["north"]),
                       bearer(ids["south"]), ids["north_key_id"], ids["north_alert"],
                       ids["south_alert"], ids["shared_alert"], settings.data_dir)
