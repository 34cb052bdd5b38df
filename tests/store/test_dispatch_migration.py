"""Migration 0003 (dispatch) keeps the outbox rows written before it, on both back ends."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from store.db import current_revision, downgrade, make_session_factory, upgrade
from store.db import session_scope as scope
from store.models import DeliveryStatus
from store.outbox import get_delivery

_ROWS = [
    "INSERT INTO agencies (agency_id, name) VALUES ('ag-1', 'Valley')",
    "INSERT INTO subscriptions (subscription_id, agency_id, areas_wkt, zone_codes, "
    "hazard_kinds, min_level, channels, languages, content_sha256) VALUES ('s-1', 'ag-1', "
    "'[]', '[\"Z1\"]', '[]', 'yellow', '[]', '[\"en\"]', 'x')",
    "INSERT INTO events (event_id, kind, first_seen, last_seen) VALUES ('ev-1', "
    "'flood_depth', '2026-05-12 06:00:00+00', '2026-05-12 06:00:00+00')",
    "INSERT INTO alerts (identifier, event_id, sender, msg_type, level, priority, sent, "
    "expires, cap_bytes, cap_sha256) VALUES ('a-1', 'ev-1', 's', 'Alert', 'orange', '{}', "
    "'2026-05-12 06:00:00+00', '2026-05-12 18:00:00+00', :cap, 'h')",
    "INSERT INTO deliveries (idempotency_key, alert_identifier, subscription_id, "
    "channel_kind, address, status, attempts, status_history) VALUES ('k-1', 'a-1', 's-1', "
    "'webhook', 'https://x.example/h', 'ack', 1, "
    "'[{\"status\": \"pending\", \"at\": \"2026-05-12T06:00:00+00:00\"}]')",
]


def test_deliveries_from_before_0003_keep_their_status_and_get_level_and_agency(
        empty_engine: Engine) -> None:
    upgrade(empty_engine, "0002_alert_matches")
    with empty_engine.begin() as connection:
        for sql in _ROWS:
            connection.execute(text(sql), {"cap": b"<alert/>"})
    upgrade(empty_engine, "0003_dispatch")
    assert current_revision(empty_engine) == "0003_dispatch"
    with scope(make_session_factory(empty_engine)) as session:
        record = get_delivery(session, "k-1")
    assert record.status is DeliveryStatus.ACK and record.attempts == 1
    assert record.level is not None and record.level.value == "orange"
    assert record.agency_id == "ag-1" and record.kind == "alert"
    assert "acknowledgements" in inspect(empty_engine).get_table_names()
    with pytest.raises(DBAPIError, match="immutable"), empty_engine.begin() as connection:
        connection.execute(text("UPDATE alerts SET cap_bytes = :b"), {"b": b"<changed/>"})
    downgrade(empty_engine, "0002_alert_matches")
    assert "acknowledgements" not in inspect(empty_engine).get_table_names()
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT status FROM deliveries")).scalar_one() == "ack"
