"""Each matched alert keeps the exposure inside that subscriber's own area, on both back ends."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from alerts.model import (
    Agency,
    Certainty,
    ClassExposure,
    ExposureSummary,
    FacilityHit,
    Level,
    MsgType,
    Priority,
    Severity,
    Subscription,
    Urgency,
)
from store.db import current_revision, downgrade, session_scope, upgrade
from store.models import AlertMatchRow, Base, EventRow
from store.repo import (
    AlertMatch,
    AlertRecord,
    DuplicateRecordError,
    RecordNotFoundError,
    StoredEvent,
    add_agency,
    add_subscription,
    list_matches,
    remove_subscription,
    save_alert_with_deliveries,
    save_event,
    save_matches,
)

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
# Figures a text or float32 round trip would change: 0.1 + 0.2, a tiny and a huge value.
AREA_EXPOSURE = ExposureSummary(
    population=0.1 + 0.2, disability=1e-7, older=12_345_678.901, electricity_dependent=4.0,
    cut_off_population=99.0, cut_off_disability=7.5,
    facilities_hit=(FacilityHit("St Mary", "hospital", "1.5 m and above", cut_off=True),
                    FacilityHit("École du Nord", "school", "0.5 - 1.5 m")),
    area_km2=12.75,
    by_class=(ClassExposure(1, "0.5 - 1.5 m", 0.2, 1e-7, 250.0, 3.0, 10.0),
              ClassExposure(2, "1.5 m and above", 0.1, 0.0, 12_345_428.901, 1.0, 2.75)),
)
SMALL = ExposureSummary(population=5.0, area_km2=0.5,
                        by_class=(ClassExposure(1, "0.5 - 1.5 m", 5.0, area_km2=0.5),))
PRIORITY = Priority(level=Level.ORANGE, score=0.7, severity=Severity.SEVERE,
                    urgency=Urgency.EXPECTED, certainty=Certainty.LIKELY,
                    reasons=("St Mary hospital cut off",), rules_version="2026.1")


def _alert(identifier: str, sent: datetime) -> AlertRecord:
    return AlertRecord(identifier=identifier, event_id="ev-1", sender="tocsin@example.org",
                       msg_type=MsgType.ALERT, priority=PRIORITY, sent=sent,
                       expires=sent + timedelta(hours=6), cap_bytes=b"<alert/>")


def _match(alert: str, subscription: str, agency: str = "cp", **changes) -> AlertMatch:
    fields = {"level": Level.ORANGE, "max_class": 2, "exposure": AREA_EXPOSURE, **changes}
    return AlertMatch(alert_identifier=alert, subscription_id=subscription, agency_id=agency,
                      **fields)


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AlertMatchRow))


@pytest.fixture
def with_alerts(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Event ev-1 and its alerts a-2 (sent at T0 + 1 h) and a-1 (sent at T0)."""
    with session_scope(sessions) as session:
        save_event(session, StoredEvent("ev-1", "flood_depth", first_seen=T0, last_seen=T0))
        save_alert_with_deliveries(session, _alert("a-2", T0 + timedelta(hours=1)), [])
        save_alert_with_deliveries(session, _alert("a-1", T0), [])
    return sessions


def test_a_match_with_a_full_exposure_round_trips_exactly(
        with_alerts: sessionmaker[Session]) -> None:
    match = _match("a-1", "cp-river", level=Level.RED, max_class=2)
    with session_scope(with_alerts) as session:
        save_matches(session, [match])
    with session_scope(with_alerts) as session:
        (stored,) = list_matches(session)
    assert stored == match
    assert stored.exposure.by_class[0].k == 1 and isinstance(stored.exposure.by_class[0].k, int)
    assert stored.exposure.population == 0.1 + 0.2  # 0.30000000000000004, not 0.3
    assert stored.exposure.facilities_hit[0].cut_off is True
    assert isinstance(stored.level, Level) and isinstance(stored.max_class, int)


def test_the_exposure_is_stored_as_an_events_last_exposure_is(
        with_alerts: sessionmaker[Session]) -> None:
    with session_scope(with_alerts) as session:
        save_event(session, StoredEvent("ev-2", "flood_depth", first_seen=T0, last_seen=T0,
                                        last_exposure=AREA_EXPOSURE))
        save_matches(session, [_match("a-1", "cp-river")])
    with session_scope(with_alerts) as session:
        event_json = session.scalar(select(EventRow.last_exposure)
                                    .where(EventRow.event_id == "ev-2"))
        match_json = session.scalar(select(AlertMatchRow.exposure))
    assert match_json == event_json
    assert {"by_class", "facilities_hit", "population", "area_km2"} <= set(match_json)


def test_a_stored_match_is_refused_again_and_nothing_of_the_batch_is_written(
        with_alerts: sessionmaker[Session]) -> None:
    with session_scope(with_alerts) as session:
        save_matches(session, [_match("a-1", "cp-river")])
    with session_scope(with_alerts) as session:
        with pytest.raises(DuplicateRecordError, match=r"already stored.*'a-1', 'cp-river'"):
            save_matches(session, [_match("a-1", "cp-lake"),
                                   _match("a-1", "cp-river", exposure=SMALL)])
        assert _count(session) == 1  # the caller's transaction is still usable
    with session_scope(with_alerts) as session:
        assert list_matches(session) == [_match("a-1", "cp-river")]


def test_the_same_pair_twice_in_one_batch_is_refused_with_nothing_written(
        with_alerts: sessionmaker[Session]) -> None:
    with session_scope(with_alerts) as session:
        with pytest.raises(DuplicateRecordError, match="given twice"):
            save_matches(session, [_match("a-1", "cp-river"), _match("a-2", "cp-river"),
                                   _match("a-1", "cp-river", max_class=1)])
        assert _count(session) == 0


def test_a_match_of_an_unknown_alert_is_refused_with_nothing_written(
        with_alerts: sessionmaker[Session]) -> None:
    with session_scope(with_alerts) as session:
        with pytest.raises(RecordNotFoundError, match="'a-404'"):
            save_matches(session, [_match("a-1", "cp-river"), _match("a-404", "cp-river")])
        assert _count(session) == 0


@pytest.mark.parametrize("max_class", [-1, 1.5, True])
def test_a_max_class_that_is_not_a_non_negative_integer_is_refused(
        with_alerts: sessionmaker[Session], max_class: object) -> None:
    with session_scope(with_alerts) as session:
        with pytest.raises(ValueError, match=f"max_class {max_class!r}"):
            save_matches(session, [_match("a-1", "cp-river", max_class=max_class)])
        assert _count(session) == 0


def test_matches_are_listed_by_alert_and_by_agency_oldest_alert_first(
        with_alerts: sessionmaker[Session]) -> None:
    # a-1 was sent before a-2, although its identifier sorts first only by chance; a-2's
    # matches are saved first so the order cannot come from insertion.
    a2_fire = _match("a-2", "fire-z", agency="fire", level=Level.YELLOW, max_class=1,
                     exposure=SMALL)
    a2_cp = _match("a-2", "cp-river", level=Level.RED)
    a1_cp_lake = _match("a-1", "cp-lake", max_class=0, exposure=ExposureSummary(0.0))
    a1_cp_river = _match("a-1", "cp-river")
    with session_scope(with_alerts) as session:
        save_matches(session, [a2_fire, a2_cp])
        save_matches(session, [a1_cp_river, a1_cp_lake])
    with session_scope(with_alerts) as session:
        assert list_matches(session) == [a1_cp_lake, a1_cp_river, a2_cp, a2_fire]
        assert list_matches(session, alert_identifier="a-2") == [a2_cp, a2_fire]
        assert list_matches(session, agency_id="cp") == [a1_cp_lake, a1_cp_river, a2_cp]
        assert list_matches(session, alert_identifier="a-2", agency_id="fire") == [a2_fire]
        assert list_matches(session, alert_identifier="a-1", agency_id="fire") == []
        assert list_matches(session, agency_id="nobody") == []


def test_a_match_outlives_the_subscription_it_names(with_alerts: sessionmaker[Session]) -> None:
    subscription = Subscription("cp-river", "cp", zone_codes=("Z001",))
    match = _match("a-1", "cp-river")
    with session_scope(with_alerts) as session:
        add_agency(session, Agency("cp", "Civil Protection"))
        add_subscription(session, subscription)
        save_matches(session, [match])
    with session_scope(with_alerts) as session:
        remove_subscription(session, "cp-river")
    with session_scope(with_alerts) as session:
        assert list_matches(session, agency_id="cp") == [match]


def test_saving_no_matches_writes_nothing(with_alerts: sessionmaker[Session]) -> None:
    with session_scope(with_alerts) as session:
        save_matches(session, [])
        assert _count(session) == 0


def test_a_match_keeps_its_own_level_not_the_alerts(with_alerts: sessionmaker[Session]) -> None:
    match = replace(_match("a-1", "cp-river"), level=Level.GREEN)
    with session_scope(with_alerts) as session:
        save_matches(session, [match])
    with session_scope(with_alerts) as session:
        assert [m.level for m in list_matches(session)] == [Level.GREEN]


# --- migration 0002 -------------------------------------------------------------------------


def test_migration_0002_adds_alert_matches_on_top_of_0001_and_removes_only_it(
        empty_engine: Engine) -> None:
    upgrade(empty_engine, "0001_initial")
    assert "alert_matches" not in inspect(empty_engine).get_table_names()
    upgrade(empty_engine, "0002_alert_matches")
    assert current_revision(empty_engine) == "0002_alert_matches"
    schema = inspect(empty_engine)
    assert schema.get_pk_constraint("alert_matches")["constrained_columns"] == [
        "alert_identifier", "subscription_id"]
    (fk,) = schema.get_foreign_keys("alert_matches")
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["alert_identifier"], "alerts", ["identifier"])
    downgrade(empty_engine, "0001_initial")
    assert current_revision(empty_engine) == "0001_initial"
    tables = set(inspect(empty_engine).get_table_names())
    assert "alert_matches" not in tables and {"alerts", "deliveries"} <= tables


def test_migrated_alert_matches_table_matches_its_model(engine: Engine) -> None:
    def include(_obj, name, type_, _reflected, _compare_to) -> bool:
        if type_ == "table":
            return name == "alert_matches"
        return True

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": include, "compare_type": True}
        )
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []
