"""API keys, the alert index and keyset pages in the store, on both back ends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing.api import EAST, WEST, seed_alert
from tocsin_testing.records import T0

from alerts.model import Agency
from store import api_store, repo
from store.api_models import ApiKeyRow
from store.db import session_scope


def _agency(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        repo.add_agency(session, Agency("north", "North"))


def test_a_key_authenticates_and_only_a_hash_of_its_secret_is_stored(
        sessions: sessionmaker[Session]) -> None:
    _agency(sessions)
    with session_scope(sessions) as session:
        key, token = api_store.create_api_key(session, role="agency", agency_id="north",
                                              label="duty", now=T0)
    secret = token.rsplit("_", 1)[1]
    with session_scope(sessions) as session:
        stored = session.scalars(select(ApiKeyRow)).one()
        assert secret not in stored.secret_sha256 and len(stored.secret_sha256) == 64
        assert api_store.authenticate(session, token, now=T0).agency_id == "north"
        with pytest.raises(api_store.InvalidApiKeyError, match="unknown"):
            api_store.authenticate(session, token[:-1] + ("A" if token[-1] != "A" else "B"),
                                   now=T0)
        with pytest.raises(api_store.InvalidApiKeyError, match="malformed"):
            api_store.authenticate(session, "Bearer nonsense", now=T0)
    assert key.role == "agency"


def test_a_revoked_or_expired_key_is_refused_saying_which(
        sessions: sessionmaker[Session]) -> None:
    _agency(sessions)
    with session_scope(sessions) as session:
        short, short_token = api_store.create_api_key(
            session, role="agency", agency_id="north", label="short", now=T0,
            expires_at=T0 + timedelta(hours=1))
        gone, gone_token = api_store.create_api_key(session, role="agency", agency_id="north",
                                                    label="gone", now=T0)
        api_store.revoke_api_key(session, gone.key_id, now=T0 + timedelta(minutes=5))
    with session_scope(sessions) as session:
        assert api_store.authenticate(session, short_token, now=T0).key_id == short.key_id
        with pytest.raises(api_store.InvalidApiKeyError, match="expired"):
            api_store.authenticate(session, short_token, now=T0 + timedelta(hours=2))
        with pytest.raises(api_store.InvalidApiKeyError, match="revoked"):
            api_store.authenticate(session, gone_token, now=T0)


def test_an_agency_key_needs_a_stored_agency(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session, pytest.raises(ValueError, match="no agency"):
        api_store.create_api_key(session, role="agency", agency_id="nobody", label="x", now=T0)


def test_storing_an_alert_indexes_its_area_kind_and_level(
        sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        west = seed_alert(session, "ev-w", [], sent=T0, area=WEST)
        east = seed_alert(session, "ev-e", [], sent=T0 + timedelta(minutes=1), area=EAST,
                          kind="rainfall")
    with session_scope(sessions) as session:
        summary = api_store.alert_summary(session, west)
        assert summary is not None and summary.bbox == WEST.bounds
        assert summary.hazard_kind == "flood_depth" and summary.level == "red"
        rain, _ = api_store.list_alerts(session, api_store.AlertFilter(
            hazard_kinds=("rainfall",)), agency_id=None)
    assert [a.identifier for a in rain] == [east]


def test_pages_of_alerts_sent_at_the_same_time_neither_skip_nor_repeat(
        sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        made = {seed_alert(session, f"ev-{i}", [], sent=T0) for i in range(5)}
    seen: list[str] = []
    cursor = None
    with session_scope(sessions) as session:
        while True:
            page, cursor = api_store.list_alerts(session, api_store.AlertFilter(),
                                                 agency_id=None, cursor=cursor, limit=2)
            seen += [a.identifier for a in page]
            if cursor is None:
                break
    assert sorted(seen) == sorted(made) and len(seen) == 5


def test_a_cursor_not_handed_out_is_refused(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        for bad in ("%%%", "bm90IGpzb24", api_store.encode_cursor(1, 2, 3),
                    api_store.encode_cursor("not a time", "x")):
            with pytest.raises(api_store.BadCursorError):
                api_store.list_alerts(session, api_store.AlertFilter(), agency_id=None,
                                      cursor=bad)
