"""Migrations build the schema from an empty database on both back ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from store.db import current_revision, downgrade, make_engine, upgrade
from store.models import Base

TABLES = {"agencies", "subscriptions", "events", "alerts", "ingests", "deliveries",
          "acknowledgements", "feeds", "feed_items",
          "alert_matches", "api_keys", "alert_index", "overlay_jobs"}


def _tables(engine: Engine) -> set[str]:
    # spatial_ref_sys belongs to PostGIS (schema public), not to Tocsin.
    return set(inspect(engine).get_table_names()) - {"spatial_ref_sys"}


def test_upgrade_creates_every_table_from_an_empty_database(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    assert _tables(empty_engine) == set()
    upgrade(empty_engine)
    assert current_revision(empty_engine) == "0005_api"
    assert _tables(empty_engine) == TABLES | {"alembic_version"}


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    postgres = engine.dialect.name == "postgresql"

    def include(obj, name, type_, _reflected, _compare_to) -> bool:
        if type_ == "table" and name not in TABLES:
            return False  # PostGIS's own tables in public
        # GiST indexes exist only on PostGIS (ddl_if in the models, a branch in 0001).
        return not (type_ == "index" and not postgres and name.endswith("_gist"))

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": include, "compare_type": False}
        )
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_upgrade_again_changes_nothing_and_downgrade_drops_every_table(engine: Engine) -> None:
    upgrade(engine)
    assert current_revision(engine) == "0005_api"
    downgrade(engine)
    assert current_revision(engine) is None
    assert _tables(engine) == {"alembic_version"}
    upgrade(engine)
    assert _tables(engine) == TABLES | {"alembic_version"}


def test_areas_are_indexed_for_spatial_search(engine: Engine) -> None:
    reflected = inspect(engine).get_indexes("subscriptions")
    indexes = {ix["name"]: ix["column_names"] for ix in reflected}
    assert indexes["ix_subscriptions_bbox"] == ["minx", "miny", "maxx", "maxy"]
    if engine.dialect.name != "postgresql":
        assert "ix_subscriptions_area_gist" not in indexes
        return
    with engine.connect() as connection:
        column = connection.execute(text(
            "SELECT type, srid FROM geometry_columns "
            "WHERE f_table_schema = current_schema() AND f_table_name = 'subscriptions'"
        )).one()
        indexdef = connection.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND indexname = 'ix_subscriptions_area_gist'"
        )).scalar_one()
    assert tuple(column) == ("MULTIPOLYGON", 4326)
    assert "USING gist (area)" in indexdef


def test_default_database_is_a_sqlite_file_under_the_data_directory(tmp_path: Path) -> None:
    engine = make_engine(data_dir=tmp_path / "new" / "data")
    try:
        upgrade(engine)
        assert engine.dialect.name == "sqlite"
        assert (tmp_path / "new" / "data" / "tocsin.db").is_file()
    finally:
        engine.dispose()


def test_an_engine_needs_a_url_or_a_data_directory() -> None:
    with pytest.raises(ValueError, match="URL or a data directory"):
        make_engine()


def test_upgrade_accepts_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'by-url.sqlite'}"
    upgrade(url)
    assert current_revision(url) == "0005_api"
