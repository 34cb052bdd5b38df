"""Worker fixtures: a migrated store with real alerts in it, and their outbox rows.

``store_alert`` composes and renders a real CAP message (as ``tocsin assess`` does), stores
it with its texts and one delivery per planned channel, and returns the delivery keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing.records import compose_record

from alerts.model import (
    Agency,
    Subscription,
)
from store import repo
from store.db import make_engine, make_session_factory, session_scope, upgrade
from store.models import PlannedDelivery, StoredEvent


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A migrated SQLite store in ``tmp_path``."""
    url = f"sqlite:///{tmp_path / 'tocsin.db'}"
    upgrade(url)
    return url


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the migrated store."""
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


StoreAlert = Callable[..., list[str]]


@pytest.fixture
def store_alert(sessions: sessionmaker[Session]) -> StoreAlert:
    """``store_alert(planned, event_id=..., sequence=..., level=..., msg_type=..., sent=...)``."""

    def _store(planned: Sequence[PlannedDelivery], *, event_id: str = "ev-1",
               sequence: int = 1, **changes: Any) -> list[str]:
        record = compose_record(event_id, sequence, **changes)
        with session_scope(sessions) as session:
            try:
                repo.get_event(session, event_id)
            except repo.RecordNotFoundError:
                repo.save_event(session, StoredEvent(event_id, "flood_depth",
                                                     first_seen=record.sent,
                                                     last_seen=record.sent))
            saved = repo.save_alert_with_deliveries(session, record, planned)
        return [d.idempotency_key for d in saved]

    return _store


@pytest.fixture
def add_subscription(sessions: sessionmaker[Session]) -> Callable[[Subscription], None]:
    """Store a subscription (and its agency when new)."""

    def _add(sub: Subscription) -> None:
        with session_scope(sessions) as session:
            if sub.agency_id not in {a.agency_id for a in repo.list_agencies(session)}:
                repo.add_agency(session, Agency(sub.agency_id, sub.agency_id.title()))
            repo.add_subscription(session, sub)

    return _add
