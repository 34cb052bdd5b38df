"""Migration 0005 (API) indexes the alerts stored before it, on both back ends."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from store.api_store import AlertFilter, list_alerts
from store.db import current_revision, downgrade, make_session_factory, upgrade
from store.db import session_scope as scope

_ROWS = [
    "INSERT INTO events (event_id, kind, first_seen, last_seen, minx, miny, maxx, maxy) "
    "VALUES ('ev-1', 'flood_depth', '2026-05-12 06:00:00+00', '2026-05-12 06:00:00+00', "
    "7.0, 46.0, 7.5, 46.5)",
    "INSERT INTO alerts (identifier, event_id, sender, msg_type, level, priority, sent, "
    "expires, cap_bytes, cap_sha256) VALUES ('a-1', 'ev-1', 's', 'Alert', 'orange', '{}', "
    "'2026-05-12 06:00:00+00', '2026-05-12 18:00:00+00', :cap, 'h')",
]


def test_alerts_from_before_0005_are_found_by_bbox_hazard_and_level(
        empty_engine: Engine) -> None:
    upgrade(empty_engine, "0004_feeds")
    with empty_engine.begin() as connection:
        for sql in _ROWS:
            connection.execute(text(sql), {"cap": b"<alert/>"})
    upgrade(empty_engine, "0005_api")
    assert current_revision(empty_engine) == "0005_api"
    with scope(make_session_factory(empty_engine)) as session:
        inside, _ = list_alerts(session, AlertFilter(bbox=(7.2, 46.2, 7.3, 46.3),
                                                     hazard_kinds=("flood_depth",),
                                                     levels=("orange",)), agency_id=None)
        outside, _ = list_alerts(session, AlertFilter(bbox=(8.0, 46.0, 8.1, 46.1)),
                                 agency_id=None)
    assert [a.identifier for a in inside] == ["a-1"] and outside == []
    assert inside[0].msg_type == "Alert" and inside[0].bbox == (7.0, 46.0, 7.5, 46.5)
    downgrade(empty_engine, "0004_feeds")
    assert not {"api_keys", "alert_index", "overlay_jobs"} & set(
        inspect(empty_engine).get_table_names())
