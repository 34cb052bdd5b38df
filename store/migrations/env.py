"""Alembic environment: runs the migrations on the connection :func:`store.db.upgrade` passes.

There is no ``alembic.ini``: the configuration is built in code. From the ``alembic``
command line, set ``sqlalchemy.url`` with ``-x url=...`` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from store.db import _version_table_schema, make_engine
from store.models import Base


def _run_on(connection: Connection) -> None:
    """Configure the migration context on ``connection`` and run the pending revisions."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # On PostgreSQL keep the version table in the schema being migrated, never a
        # same-named table in another schema of the search_path.
        version_table_schema=_version_table_schema(connection),
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    """Use the caller's connection, or open one from ``-x url=...``."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("store migrations: pass the database as -x url=... (no alembic.ini)")
    engine = make_engine(url)
    try:
        with engine.begin() as own_connection:
            _run_on(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("store migrations: offline (SQL script) mode is not supported")
_run_online()
