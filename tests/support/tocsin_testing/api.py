"""The API tests' world: two agencies with keys and subscriptions, an admin key, alerts.

North watches the west box, South the east box; one red flood alert each, plus one orange
earthquake alert matched to both. Tokens are passed as headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import shapely
from fastapi.testclient import TestClient
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session, sessionmaker

from alerts.model import Agency, AlertStatus, ChannelAddress, ChannelKind, Level, Subscription
from store import api_store, repo
from store.db import session_scope
from store.models import AlertMatch, PlannedDelivery, StoredEvent
from tocsin_testing.records import T0, compose_record

WEST = shapely.box(7.0, 46.0, 7.5, 46.5)
EAST = shapely.box(8.0, 46.0, 8.5, 46.5)


def seed_alert(session: Session, event_id: str, subscribers: list[tuple[str, str]], *,
               sent: datetime = T0, level: Level = Level.RED, area: BaseGeometry = WEST,
               kind: str = "flood_depth", sequence: int = 1) -> str:
    """Store one alert of a new event matched to ``(agency, subscription)`` pairs; its id.

    Each subscriber gets one webhook delivery (pending) and one match with the figures of
    :func:`tocsin_testing.records.compose_record` (12,400 people).
    """
    record = compose_record(event_id, sequence, level=level, sent=sent)
    repo.save_event(session, StoredEvent(event_id, kind, first_seen=sent, last_seen=sent,
                                         footprint=area, status=AlertStatus.ISSUED,
                                         last_level=level))
    planned = [PlannedDelivery(sub, ChannelAddress(ChannelKind.WEBHOOK,
                                                   f"https://{agency}.example/hook?token=s3"),
                               agency_id=agency, language="en")
               for agency, sub in subscribers]
    repo.save_alert_with_deliveries(session, record, planned)
    exposure = _exposure()
    repo.save_matches(session, [AlertMatch(record.identifier, sub, agency, level, 3, exposure)
                                for agency, sub in subscribers])
    return record.identifier


def _exposure():  # noqa: ANN202 - ExposureSummary
    from alerts.model import ClassExposure, ExposureSummary

    return ExposureSummary(population=4_000, disability=400, older=700, area_km2=6.0,
                           by_class=(ClassExposure(3, "1.5 m and above", 4_000, area_km2=6.0),))


NOW = T0 + timedelta(hours=1)


def public_resolver(host: str, port: int) -> list[str]:
    """Every host resolves to a public address, except names saying otherwise."""
    if host.startswith("internal"):
        return ["10.0.0.5"]
    return ["93.184.216.34"]


@dataclass
class ApiWorld:
    """The app, its store, and who is who."""

    client: TestClient
    sessions: sessionmaker[Session]
    admin: dict[str, str]
    north: dict[str, str]
    south: dict[str, str]
    north_key_id: str
    north_alert: str
    south_alert: str
    shared_alert: str
    data_dir: Path


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def seed(sessions: sessionmaker[Session], now: datetime) -> dict[str, str]:
    """Agencies, keys, subscriptions and alerts; the tokens and alert ids by name."""
    out: dict[str, str] = {}
    with session_scope(sessions) as session:
        for agency, area in (("north", WEST), ("south", EAST)):
            repo.add_agency(session, Agency(agency, agency.title()))
            repo.add_subscription(session, Subscription(
                f"{agency}-floods", agency, areas_wkt=(area.wkt,),
                channels=(ChannelAddress(ChannelKind.WEBHOOK, f"https://{agency}.example/h"),)))
            key, token = api_store.create_api_key(session, role="agency", agency_id=agency,
                                                  label="test", now=now)
            out[agency] = token
            out[f"{agency}_key_id"] = key.key_id
        _, out["admin"] = api_store.create_api_key(session, role="admin", agency_id=None,
                                                   label="ops", now=now)
        out["north_alert"] = seed_alert(session, "ev-north", [("north", "north-floods")],
                                        sent=T0, area=WEST)
        out["south_alert"] = seed_alert(session, "ev-south", [("south", "south-floods")],
                                        sent=T0 + timedelta(minutes=1), area=EAST)
        out["shared_alert"] = seed_alert(
            session, "ev-quake", [("north", "north-floods"), ("south", "south-floods")],
            sent=T0 + timedelta(minutes=2), area=WEST.union(EAST), kind="shaking_mmi",
            level=Level.ORANGE)
    return out
