"""Engines, sessions and migrations.

SQLite is the embedded default (one file under the data directory); PostgreSQL + PostGIS is
the production back end. The schema is created and changed only by the Alembic migrations in
``store/migrations``, run from code (:func:`upgrade`): no ``alembic.ini`` is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DB_FILENAME = "tocsin.db"
"""Name of the SQLite file created under the data directory when no URL is given."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def default_url(data_dir: Path | str) -> str:
    """SQLite URL of the default database file under ``data_dir``."""
    return f"sqlite:///{Path(data_dir) / DEFAULT_DB_FILENAME}"


def make_engine(
    url: str | URL | None = None,
    *,
    data_dir: Path | str | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """Build an engine for ``url``, or for the SQLite file under ``data_dir`` when no URL.

    SQLite connections get foreign keys switched on and proper transactions (BEGIN emitted
    by SQLAlchemy, so SAVEPOINTs work: a refused repo call undoes only its own changes).

    Args:
        url: database URL (``sqlite:///...``, ``postgresql+psycopg://...``).
        data_dir: folder of the default SQLite file; created if missing. Used when ``url`` is
            None.
        **engine_kwargs: passed on to :func:`sqlalchemy.create_engine`.

    Returns:
        The engine.

    Raises:
        ValueError: neither ``url`` nor ``data_dir`` was given.
    """
    if url is None:
        if data_dir is None:
            raise ValueError("make_engine needs a database URL or a data directory")
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        url = default_url(data_dir)
    parsed = make_url(url)
    engine = create_engine(parsed, **engine_kwargs)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's transaction before giving up."""


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys on, WAL, and SQLAlchemy (not pysqlite) in charge of BEGIN.

    Transactions start with ``BEGIN IMMEDIATE``: they take the write lock at once, waiting
    up to :data:`SQLITE_BUSY_TIMEOUT_MS` for it. A deferred transaction that has read and
    then writes cannot wait for a concurrent writer (SQLite answers "database is locked" at
    once), which failed the claims of parallel workers. WAL lets readers go on meanwhile.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's implicit BEGIN breaks savepoints
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY_OPTION = "tocsin_read_only"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine`` (objects stay readable after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_only_sessions(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """A factory on the same engine for transactions that only read.

    On SQLite they begin deferred, so with WAL they never wait for a writer (an assessment
    holding the write lock) and never hold one up. A write in such a transaction fails at
    once when another writer is active, so only reads may use it. PostgreSQL is unchanged.
    """
    engine = sessions.kw.get("bind")
    if engine is None:  # an unbound factory (a schema-only app): nothing to change
        return sessions
    return sessionmaker(bind=engine.execution_options(**{READ_ONLY_OPTION: True}),
                        expire_on_commit=False)


@contextmanager
def session_scope(engine_or_factory: Engine | sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back on any exception.

    Args:
        engine_or_factory: an engine, or a factory from :func:`make_session_factory`.

    Yields:
        The session.
    """
    factory = (
        make_session_factory(engine_or_factory)
        if isinstance(engine_or_factory, Engine)
        else engine_or_factory
    )
    with factory() as session, session.begin():
        yield session


def alembic_config() -> Config:
    """An Alembic configuration pointing at the packaged migrations (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (``head`` by default), in one transaction.

    Args:
        engine_or_url: the database, as an engine or a URL.
        revision: the Alembic revision to reach.
    """
    _run_alembic(engine_or_url, lambda config: command.upgrade(config, revision))


def downgrade(engine_or_url: Engine | str | URL, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (``base``: drop every table).

    Args:
        engine_or_url: the database, as an engine or a URL.
        revision: the Alembic revision to reach.
    """
    _run_alembic(engine_or_url, lambda config: command.downgrade(config, revision))


def current_revision(engine_or_url: Engine | str | URL) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = _as_engine(engine_or_url)
    try:
        with engine.connect() as connection:
            opts = {"version_table_schema": _version_table_schema(connection)}
            return MigrationContext.configure(connection, opts=opts).get_current_revision()
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def _run_alembic(engine_or_url: Engine | str | URL, run: Any) -> None:
    """Run one Alembic command on a connection of ``engine_or_url`` and commit."""
    engine = _as_engine(engine_or_url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            run(config)
    finally:
        if engine is not engine_or_url:
            engine.dispose()


def _as_engine(engine_or_url: Engine | str | URL) -> Engine:
    """The engine itself, or a new one for a URL."""
    return engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)


def _version_table_schema(connection: Any) -> str | None:
    """On PostgreSQL the current schema, so another schema's alembic_version is never read."""
    if connection.dialect.name != "postgresql":
        return None
    return str(connection.exec_driver_sql("SELECT current_schema()").scalar_one())
