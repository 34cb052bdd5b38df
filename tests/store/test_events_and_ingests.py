"""Events follow the alert lifecycle; ingests detect the same file twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import shapely
from sqlalchemy.orm import Session, sessionmaker

from alerts.errors import InvalidTransition
from alerts.model import AlertStatus, ClassExposure, ExposureSummary, FacilityHit, Level
from store.db import session_scope
from store.repo import (
    RecordNotFoundError,
    StoredEvent,
    get_event,
    open_events,
    record_ingest,
    save_event,
)

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
EXPOSURE = ExposureSummary(
    population=1234.5, disability=210.25, older=300.0, electricity_dependent=4.0,
    cut_off_population=99.0, cut_off_disability=7.5,
    facilities_hit=(FacilityHit("St Mary", "hospital", "1.5 m and above", cut_off=True),
                    FacilityHit("North school", "school", "0.5 - 1.5 m")),
    area_km2=12.75,
    by_class=(ClassExposure(1, "0.5 - 1.5 m", 1000.0, 200.0, 250.0, 3.0, 10.0),
              ClassExposure(2, "1.5 m and above", 234.5, 10.25, 50.0, 1.0, 2.75)),
)
FOOTPRINT = shapely.MultiPolygon([shapely.box(7.1, 46.2, 7.3, 46.4),
                                  shapely.box(7.5, 46.5, 7.51, 46.51)])


def _event(event_id: str = "ev-1", **changes) -> StoredEvent:
    fields = {"kind": "flood_depth", "first_seen": T0, "last_seen": T0, **changes}
    return StoredEvent(event_id=event_id, **fields)


def test_an_event_with_every_field_set_round_trips(sessions: sessionmaker[Session]) -> None:
    full = _event(source_event_id="efas-2026-03", footprint=FOOTPRINT,
                  last_seen=T0 + timedelta(hours=6), status=AlertStatus.ISSUED,
                  last_level=Level.RED, last_exposure=EXPOSURE, last_checksum="sha256:ab12")
    with session_scope(sessions) as session:
        save_event(session, full)
        save_event(session, _event("ev-bare"))
    with session_scope(sessions) as session:
        assert get_event(session, "ev-1") == full
        assert get_event(session, "ev-bare") == _event("ev-bare")
        with pytest.raises(RecordNotFoundError, match="no event 'ev-9'"):
            get_event(session, "ev-9")


def test_a_polygon_footprint_comes_back_as_the_same_area_in_a_multipolygon(
        sessions: sessionmaker[Session]) -> None:
    polygon = shapely.box(7.1, 46.2, 7.3, 46.4)
    with session_scope(sessions) as session:
        save_event(session, _event(footprint=polygon))
    with session_scope(sessions) as session:
        stored = get_event(session, "ev-1").footprint
    assert stored.geom_type == "MultiPolygon"
    assert shapely.equals_exact(stored.geoms[0], polygon, tolerance=0)


def test_an_event_moves_along_the_lifecycle_and_never_out_of_cancelled(
        sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        save_event(session, _event())
        save_event(session, _event(status=AlertStatus.ISSUED))
        save_event(session, _event(status=AlertStatus.UPDATED, last_level=Level.ORANGE))
        save_event(session, _event(status=AlertStatus.CANCELLED))
    with pytest.raises(InvalidTransition, match="cancelled cannot become updated"):
        with session_scope(sessions) as session:
            save_event(session, _event(status=AlertStatus.UPDATED, last_level=Level.RED))
    with pytest.raises(InvalidTransition):
        with session_scope(sessions) as session:
            save_event(session, _event(status=None))
    with session_scope(sessions) as session:
        assert get_event(session, "ev-1") == _event(status=AlertStatus.CANCELLED)


def test_open_events_are_of_the_kind_seen_since_and_not_final(
        sessions: sessionmaker[Session]) -> None:
    hour = timedelta(hours=1)
    events = [
        _event("a-quiet", last_seen=T0 + 2 * hour),                        # open, no alert yet
        _event("b-issued", status=AlertStatus.ISSUED, last_seen=T0 + hour),  # open
        _event("c-old", status=AlertStatus.UPDATED, last_seen=T0 - hour),   # seen too long ago
        _event("d-cancelled", status=AlertStatus.CANCELLED, last_seen=T0 + hour),
        _event("e-expired", status=AlertStatus.EXPIRED, last_seen=T0 + hour),
        _event("f-wind", kind="wind_gust", last_seen=T0 + hour),            # other kind
        _event("g-at-since", status=AlertStatus.UPDATED, first_seen=T0 - 2 * hour),  # == since
    ]
    with session_scope(sessions) as session:
        for stored in events:
            save_event(session, stored)
    with session_scope(sessions) as session:
        found = open_events(session, "flood_depth", since=T0)
    # Ordered by first seen: g-at-since began two hours before the others.
    assert [e.event_id for e in found] == ["g-at-since", "a-quiet", "b-issued"]


def test_the_same_file_ingested_twice_is_detected(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        assert record_ingest(session, "sha256:aa", "feeds/a.tif", T0, issued_at=T0) is True
        assert record_ingest(session, "sha256:aa", "feeds/a-copy.tif", T0 + timedelta(1)) is False
        assert record_ingest(session, "sha256:bb", "feeds/b.tif", T0) is True
    with session_scope(sessions) as session:
        assert record_ingest(session, "sha256:aa", "feeds/a.tif", T0) is False
        with pytest.raises(ValueError, match="empty checksum"):
            record_ingest(session, "", "feeds/c.tif", T0)
