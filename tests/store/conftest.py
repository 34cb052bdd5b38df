"""Store fixtures: every store test runs on SQLite and on PostgreSQL + PostGIS."""

from tocsin_testing.databases import (  # noqa: F401 - fixtures
    POSTGRES_URL,
    empty_engine,
    engine,
    postgres_admin,
    sessions,
)
