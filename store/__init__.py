"""Persistence adapter: SQLAlchemy 2 on SQLite (default) or PostgreSQL + PostGIS (production).

The only package that imports SQLAlchemy. :mod:`store.db` builds engines and sessions and runs
the Alembic migrations; :mod:`store.models` declares the tables; :mod:`store.repo` maps rows to
and from the core values of :mod:`alerts.model`.
"""
