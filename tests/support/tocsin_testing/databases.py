"""Store fixtures shared by the store and API tests: SQLite, and PostgreSQL + PostGIS.

SQLite uses a file in ``tmp_path``. PostgreSQL uses ``TOCSIN_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``, trust auth) with a fresh schema per
test, dropped afterwards, so runs never collide. When PostgreSQL is unreachable those tests
skip, except in CI (``CI=true``), where they fail. A conftest imports these fixtures.
"""


from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store.db import make_engine, make_session_factory, upgrade

POSTGRES_URL = os.environ.get(
    "TOCSIN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the test PostgreSQL database, checked reachable with PostGIS available."""
    engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
    except OperationalError as exc:
        engine.dispose()
        msg = f"PostgreSQL + PostGIS not usable at {POSTGRES_URL}: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (required in CI: run .ci/postgis.sh)")
        pytest.skip(msg)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def empty_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """An engine on an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        engine = make_engine(data_dir=tmp_path / "data")
        yield engine
        engine.dispose()
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    schema = f"tocsin_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    # PostGIS lives in public: keep it on the search path, after the test's own schema.
    engine = make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema},public"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def engine(empty_engine: Engine) -> Engine:
    """An engine on a database migrated to head."""
    upgrade(empty_engine)
    return empty_engine


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on the migrated database."""
    return make_session_factory(engine)
