"""The store of the API benchmark: 10,000 alerts, 1,000 agencies, matches, written fast.

A deterministic world over a 350 x 220 km region (Switzerland's bounding box): agencies
with one lon/lat box subscription each, clustered around cities; events of six hazard
kinds with elliptic footprints sized by kind, one to three messages each (Alert, Update,
Update or Cancel, three hours apart), sent over four weeks; every alert matched to the
subscriptions its footprint intersects (shapely STRtree), one acknowledged webhook
delivery per match.

Each alert's CAP is real: a few dozen messages are composed and rendered as ``tocsin
assess`` does (one per hazard kind x level x message position), and each alert gets a copy
of its template with its own event id and identifier, its times shifted, its own area
polygon and area name. Rows go in with SQLAlchemy Core bulk inserts, built with the same
:mod:`store.mapping` functions ``store.repo`` uses, so ``alert_index`` holds what
``repo.save_alert_with_deliveries`` would have written (the event's footprint bounds).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import shapely

REGION = (5.9, 45.8, 10.5, 47.8)
CITIES = ((8.54, 47.37, "Zurich"), (6.14, 46.20, "Geneva"), (7.59, 47.56, "Basel"),
          (7.45, 46.95, "Bern"), (6.63, 46.52, "Lausanne"), (8.95, 46.00, "Lugano"),
          (9.37, 47.42, "St. Gallen"), (8.31, 47.05, "Lucerne"), (7.36, 46.23, "Sion"),
          (9.53, 46.85, "Chur"))
T_END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SPAN = timedelta(days=28)
STEP = timedelta(hours=3)
LIFETIME = timedelta(hours=12)
SENDER = "tocsin@example.invalid"
TEMPLATE_EVENT = "TPLEVENT"
TEMPLATE_AREA = "TPLAREA"
# kind: (share of events, footprint radius range in degrees, units, top class label)
KINDS = {
    "flood_depth": (0.35, (0.02, 0.10), "m", "1.5 m and above"),
    "rainfall": (0.25, (0.04, 0.14), "mm", "100 mm and above"),
    "wind_gust": (0.15, (0.06, 0.18), "m/s", "33 m/s and above"),
    "heat": (0.10, (0.08, 0.22), "degC", "40 degC and above"),
    "fire": (0.10, (0.01, 0.05), "MW", "active fire"),
    "shaking_mmi": (0.05, (0.08, 0.25), "MMI", "VIII"),
}
LEVELS = (("yellow", 0.5), ("orange", 0.35), ("red", 0.15))
_TIME = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
_POLYGON = re.compile(rb"<polygon>[^<]*</polygon>")


@dataclass
class World:
    """Everything to store, as column dicts, and what the load generator needs."""

    agencies: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    api_keys: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    sub_bounds: list[tuple[float, float, float, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    index: list[dict[str, Any]] = field(default_factory=list)
    matches: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {name: len(getattr(self, name)) for name in (
            "agencies", "subscriptions", "api_keys", "events", "alerts", "index", "matches",
            "deliveries")}


def _ellipse(cx: float, cy: float, r: float, rng: np.random.Generator) -> Any:
    """A 16-vertex ellipse of radius ``r`` degrees (lon stretched for the latitude)."""
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.4, 1.0)
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    x, y = r * np.cos(t), r * aspect * np.sin(t)
    lon = cx + (x * np.cos(angle) - y * np.sin(angle)) / np.cos(np.radians(cy))
    lat = cy + x * np.sin(angle) + y * np.cos(angle)
    return shapely.Polygon(np.round(np.column_stack([lon, lat]), 5))


def _place(rng: np.random.Generator, clustered: float, spread: float) -> tuple[float, float]:
    minx, miny, maxx, maxy = REGION
    if rng.random() < clustered:
        cx, cy, _ = CITIES[rng.integers(len(CITIES))]
        x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread * 0.7)
    else:
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
    return float(np.clip(x, minx, maxx)), float(np.clip(y, miny, maxy))


# --- CAP templates ------------------------------------------------------------------


def _templates() -> dict[tuple[str, str, str, int], Any]:
    """(kind, level, msgType, sequence) -> a real AlertRecord of event ``TPLEVENT``."""
    from alerts.cap import render_cap
    from alerts.compose import compose_alert, message_identifier
    from alerts.model import (
        Certainty,
        ClassExposure,
        ExposureSummary,
        HazardSummary,
        Level,
        MsgType,
        Priority,
        Reference,
        Severity,
        Urgency,
    )
    from store.models import AlertRecord

    out = {}
    sent = T_END
    for kind, (_, _, units, label) in KINDS.items():
        for level, _ in LEVELS:
            for sequence, msg in ((1, "Alert"), (2, "Update"), (3, "Update"), (3, "Cancel")):
                hazard = HazardSummary(
                    kind=kind, nature="forecast", units=units, n_classes=3, max_class=3,
                    max_class_label=label, issued_at=sent, onset=sent + timedelta(hours=6),
                    exceedance_share=None, source=f"{kind}.tif", checksum=f"sha256:{kind}")
                exposure = ExposureSummary(
                    population=12_400, disability=1_300, older=2_100, area_km2=18.5,
                    by_class=(ClassExposure(3, label, 12_400, area_km2=18.5),))
                priority = Priority(level=Level(level), score=0.9, severity=Severity.SEVERE,
                                    urgency=Urgency.EXPECTED, certainty=Certainty.LIKELY,
                                    reasons=("12,400 people in the footprint",),
                                    rules_version="v1")
                refs = [Reference(SENDER, message_identifier(TEMPLATE_EVENT, i),
                                  sent - (sequence - i) * STEP) for i in range(1, sequence)]
                composed = compose_alert(
                    event_id=TEMPLATE_EVENT, sequence=sequence, sender=SENDER, sent=sent,
                    msg_type=MsgType(msg), hazard=hazard, exposure=exposure,
                    priority=priority, footprint_lonlat=shapely.box(7.4, 46.9, 7.5, 46.97),
                    area_name=TEMPLATE_AREA, languages=("en", "fr"),
                    expires=sent + LIFETIME, references=refs,
                    map_png=b"\x89PNG\r\n\x1a\n" + bytes(32))
                out[(kind, level, msg, sequence)] = AlertRecord(
                    identifier=composed.event.identifier, event_id=TEMPLATE_EVENT,
                    sender=SENDER, msg_type=MsgType(msg), priority=priority, sent=sent,
                    expires=sent + LIFETIME, cap_bytes=render_cap(composed.event),
                    texts=composed.texts)
    return out


def _shift_times(data: bytes, delta: timedelta) -> bytes:
    def shift(match: re.Match[bytes]) -> bytes:
        text = match.group().decode()
        moved = datetime.fromisoformat(text) + delta
        return (moved.replace(tzinfo=None).isoformat() + text[-6:]).encode()

    return _TIME.sub(shift, data)


def _polygon_xml(footprint: Any) -> bytes:
    """The CAP ``polygon`` of a simple footprint (``cap_polygons`` returns it unchanged)."""
    ring = " ".join(f"{lat!r},{lon!r}" for lon, lat in footprint.exterior.coords)
    return b"<polygon>" + ring.encode() + b"</polygon>"


def _instance(template: Any, columns: dict[str, Any], event_id: str, area_name: str,
              sent: datetime, footprint: Any) -> dict[str, Any]:
    """The alert columns of ``template`` made into its own message of ``event_id``."""
    cap = template.cap_bytes.replace(TEMPLATE_EVENT.encode(), event_id.encode())
    cap = cap.replace(TEMPLATE_AREA.encode(), area_name.encode())
    cap = _shift_times(cap, sent - template.sent)
    polygon = _polygon_xml(footprint)
    cap = _POLYGON.sub(lambda _m: polygon, cap)  # one ring per info in the template
    texts = json.loads(json.dumps(columns["texts"]).replace(TEMPLATE_EVENT, event_id)
                       .replace(TEMPLATE_AREA, area_name))
    return {**columns, "identifier": template.identifier.replace(TEMPLATE_EVENT, event_id),
            "event_id": event_id, "sent": sent, "expires": sent + LIFETIME, "cap_bytes": cap,
            "cap_sha256": hashlib.sha256(cap).hexdigest(), "texts": texts}


# --- the world ----------------------------------------------------------------------


def build_world(n_alerts: int, n_agencies: int, *, seed: int = 20261202) -> World:
    """The deterministic world of ``n_alerts`` alerts and ``n_agencies`` agencies."""
    from alerts.model import (
        AlertStatus,
        ChannelAddress,
        ChannelKind,
        ClassExposure,
        ExposureSummary,
        Level,
        Subscription,
    )
    from store import mapping
    from store.models import AlertMatch, DeliveryRecord, DeliveryStatus, StoredEvent

    rng = np.random.default_rng(seed)
    token_rng = secrets.SystemRandom()
    world = World()
    now = T_END
    areas = []
    for a in range(n_agencies):
        agency_id = f"ag-{a:04d}"
        cx, cy = _place(rng, 0.7, 0.35)
        half = float(rng.uniform(0.04, 0.14))
        area = shapely.box(round(cx - half * 1.45, 4), round(cy - half, 4),
                           round(cx + half * 1.45, 4), round(cy + half, 4))
        sub = Subscription(f"sub-{a:04d}", agency_id, areas_wkt=(area.wkt,),
                           channels=(ChannelAddress(ChannelKind.WEBHOOK,
                                                    f"https://{agency_id}.example/hook"),))
        union = mapping.union_of_areas(sub.areas_wkt, sub.subscription_id)
        world.agencies.append({"agency_id": agency_id, "name": f"Agency {a}",
                               "contact": f"duty@{agency_id}.example"})
        world.subscriptions.append({
            **mapping.subscription_to_columns(sub), "area": union,
            **mapping.bbox_columns(union),
            "content_sha256": mapping.subscription_fingerprint(sub, union)})
        key_id = f"{a:04x}{token_rng.getrandbits(48):012x}"
        secret = secrets.token_urlsafe(32)
        world.api_keys.append({"key_id": key_id, "role": "agency", "agency_id": agency_id,
                               "label": "bench",
                               "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
                               "created_at": now - SPAN, "expires_at": None,
                               "revoked_at": None})
        world.tokens.append(f"tsn_{key_id}_{secret}")
        world.sub_bounds.append(area.bounds)
        areas.append(area)
    tree = shapely.STRtree(areas)

    templates = _templates()
    template_columns = {k: mapping.alert_to_columns(t) for k, t in templates.items()}
    kinds = list(KINDS)
    kind_p = np.array([KINDS[k][0] for k in kinds])
    level_names = [lv for lv, _ in LEVELS]
    level_p = np.array([p for _, p in LEVELS])
    exposure = ExposureSummary(population=4_000, disability=400, older=700, area_km2=6.0,
                               by_class=(ClassExposure(3, "top class", 4_000, area_km2=6.0),))
    # One match and one delivery made with store.mapping; the others copy their columns.
    match_base = mapping.match_to_columns(AlertMatch("x", "x", "x", Level.RED, 3, exposure))
    delivery_base = mapping.delivery_to_columns(DeliveryRecord(
        idempotency_key="x", alert_identifier="x", subscription_id="x",
        channel=ChannelAddress(ChannelKind.WEBHOOK, "https://x.example/hook"),
        status=DeliveryStatus.ACK, attempts=1, history=(), agency_id="x", level=Level.RED,
        language="en", created_at=now, receipt="200"))
    e = 0
    while len(world.alerts) < n_alerts:
        event_id = f"ev-{e:05d}"
        e += 1
        kind = kinds[rng.choice(len(kinds), p=kind_p)]
        lo, hi = KINDS[kind][1]
        cx, cy = _place(rng, 0.6, 0.4)
        n_msgs = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
        n_msgs = min(n_msgs, n_alerts - len(world.alerts))
        first = T_END - SPAN * float(rng.random()) - STEP * (n_msgs - 1)
        first = first.replace(microsecond=0)
        level = level_names[rng.choice(len(level_names), p=level_p)]
        city = min(CITIES, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)[2]
        area_name = f"{city} area {e % 97}"
        radius = float(rng.uniform(lo, hi))
        footprint = None
        for seq in range(1, n_msgs + 1):
            msg = "Alert" if seq == 1 else (
                "Cancel" if seq == 3 and rng.random() < 0.5 else "Update")
            sent = first + STEP * (seq - 1)
            acked = sent + timedelta(seconds=2)
            footprint = _ellipse(cx, cy, radius * (1 + 0.2 * (seq - 1)), rng)
            key = (kind, level, msg, seq)
            row = _instance(templates[key], template_columns[key], event_id, area_name,
                            sent, footprint)
            world.alerts.append(row)
            ident = row["identifier"]
            world.index.append({"identifier": ident, "event_id": event_id,
                                "hazard_kind": kind, "level": level, "msg_type": msg,
                                "sent": sent, "expires": sent + LIFETIME,
                                **mapping.bbox_columns(footprint)})
            for s in sorted(int(i) for i in tree.query(footprint, predicate="intersects")):
                agency_id = world.agencies[s]["agency_id"]
                sub_id = f"sub-{s:04d}"
                address = f"https://{agency_id}.example/hook"
                channel = ChannelAddress(ChannelKind.WEBHOOK, address)
                world.matches.append({**match_base, "alert_identifier": ident,
                                      "subscription_id": sub_id, "agency_id": agency_id,
                                      "level": level})
                world.deliveries.append({
                    **delivery_base, "alert_identifier": ident, "subscription_id": sub_id,
                    "address": address, "agency_id": agency_id, "level": level,
                    "idempotency_key": mapping.delivery_idempotency_key(ident, sub_id, channel),
                    "status_history": [{"status": "pending", "at": sent.isoformat()},
                                       {"status": "ack", "at": acked.isoformat()}],
                    "created_at": sent, "delivered_at": acked})
        status = {"Alert": AlertStatus.ISSUED, "Update": AlertStatus.UPDATED,
                  "Cancel": AlertStatus.CANCELLED}[world.alerts[-1]["msg_type"]]
        world.events.append(mapping.event_to_columns(StoredEvent(
            event_id, kind, first_seen=first, last_seen=first + STEP * (n_msgs - 1),
            footprint=footprint, status=status, last_level=Level(level),
            last_checksum=f"sha256:{event_id}")))
    return world


def check_sample(world: World, n: int = 40) -> int:
    """Parse and XSD-validate ``n`` stored CAP messages spread over the world; how many."""
    from alerts.cap_parse import parse_cap, validate_cap

    picked = world.alerts[:: max(1, len(world.alerts) // n)]
    for row in picked:
        validate_cap(row["cap_bytes"])
        if parse_cap(row["cap_bytes"]).identifier != row["identifier"]:
            raise ValueError(f"CAP of {row['identifier']} names another identifier")
    return len(picked)


def insert_world(sessions: Any, world: World, chunk: int = 5_000) -> None:
    """Bulk-insert the world with SQLAlchemy Core, table by table, in one transaction."""
    from sqlalchemy import insert

    from store.api_models import AlertIndexRow, ApiKeyRow
    from store.db import session_scope
    from store.models import (
        AgencyRow,
        AlertMatchRow,
        AlertRow,
        DeliveryRow,
        EventRow,
        SubscriptionRow,
    )

    tables = ((AgencyRow, world.agencies), (SubscriptionRow, world.subscriptions),
              (ApiKeyRow, world.api_keys), (EventRow, world.events), (AlertRow, world.alerts),
              (AlertIndexRow, world.index), (AlertMatchRow, world.matches),
              (DeliveryRow, world.deliveries))
    with session_scope(sessions) as session:
        for table, rows in tables:
            for start in range(0, len(rows), chunk):
                session.execute(insert(table), rows[start:start + chunk])
