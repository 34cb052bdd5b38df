"""Alembic migrations of the store, run from code by :func:`store.db.upgrade`."""
