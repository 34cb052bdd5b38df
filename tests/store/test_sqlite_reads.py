"""Read-only sessions on SQLite never wait for a writer holding the write lock."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from alerts.model import Agency
from store import repo
from store.db import make_engine, make_session_factory, read_only_sessions, session_scope, upgrade


def test_a_read_only_session_reads_while_another_process_holds_the_write_lock(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tocsin.sqlite'}"
    upgrade(url)
    writer_engine, reader_engine = make_engine(url), make_engine(url)
    sessions = make_session_factory(reader_engine)
    with session_scope(sessions) as session:
        repo.add_agency(session, Agency("north", "North"))
    try:
        with writer_engine.connect() as writer:
            writer.execute(text("INSERT INTO agencies (agency_id, name) VALUES ('south', 'S')"))
            # The writer's BEGIN IMMEDIATE holds the lock until this block ends.
            started = time.monotonic()
            with session_scope(read_only_sessions(sessions)) as session:
                seen = [a.agency_id for a in repo.list_agencies(session)]
            waited_s = time.monotonic() - started
            writer.rollback()
    finally:
        writer_engine.dispose()
        reader_engine.dispose()
    assert seen == ["north"]  # the writer's row is not committed
    assert waited_s < 5, f"the read waited {waited_s:.1f} s for the writer"
