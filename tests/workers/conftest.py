"""Worker fixtures: a migrated store with real alerts in it, and their outbox rows.

``store_alert`` composes and renders a real CAP message (as ``tocsin assess`` does), stores
it with its texts and one delivery per planned channel, and returns the delivery keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import shapely
from sqlalchemy.orm import Session, sessionmaker

from alerts.cap import render_cap
from alerts.compose import compose_alert
from alerts.model import (
    Agency,
    Certainty,
    ClassExposure,
    ExposureSummary,
    HazardSummary,
    Level,
    MsgType,
    Priority,
    Reference,
    Severity,
    Subscription,
    Urgency,
)
from store import repo
from store.db import make_engine, make_session_factory, session_scope, upgrade
from store.models import AlertRecord, PlannedDelivery, StoredEvent

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
AREA = shapely.box(7.40, 46.90, 7.50, 46.97)
SUB_AREA = "POLYGON ((7.3 46.8, 7.6 46.8, 7.6 47.0, 7.3 47.0, 7.3 46.8))"


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


def compose_record(event_id: str, sequence: int, *, level: Level = Level.RED,
                   msg_type: MsgType = MsgType.ALERT, sent: datetime = T0,
                   languages: Sequence[str] = ("en", "fr")) -> AlertRecord:
    """A real alert record: composed, rendered to XSD-valid CAP, with its texts."""
    hazard = HazardSummary(
        kind="flood_depth", nature="forecast", units="m", n_classes=3, max_class=3,
        max_class_label="1.5 m and above", issued_at=sent, onset=sent + timedelta(hours=6),
        exceedance_share=None, source="flood.tif", checksum=f"sha256:{event_id}{sequence}",
    )
    exposure = ExposureSummary(population=12_400, disability=1_300, older=2_100,
                               area_km2=18.5, by_class=(ClassExposure(3, "1.5 m and above",
                                                                      12_400, area_km2=18.5),))
    priority = Priority(level=level, score=0.9, severity=Severity.EXTREME,
                        urgency=Urgency.EXPECTED, certainty=Certainty.LIKELY,
                        reasons=("12,400 people in deep water",), rules_version="v1")
    references = [Reference("tocsin@example.invalid", f"tocsin-{event_id}-{i:03d}",
                            sent - timedelta(minutes=sequence - i)) for i in range(1, sequence)]
    composed = compose_alert(
        event_id=event_id, sequence=sequence, sender="tocsin@example.invalid", sent=sent,
        msg_type=msg_type, hazard=hazard, exposure=exposure, priority=priority,
        footprint_lonlat=AREA, area_name="Aare valley", languages=languages,
        expires=sent + timedelta(hours=12), references=references,
        map_png=b"\x89PNG\r\n\x1a\n" + bytes(32),
    )
    return AlertRecord(identifier=composed.event.identifier, event_id=event_id,
                       sender="tocsin@example.invalid", msg_type=msg_type, priority=priority,
                       sent=sent, expires=sent + timedelta(hours=12),
                       cap_bytes=render_cap(composed.event), texts=composed.texts)


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
