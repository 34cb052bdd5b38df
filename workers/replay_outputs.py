"""A replay's outputs: CAP files, the timeline per event, the noise per subscription, items.

Written from the run store once every item is final, under ``RUN/outputs/``:

- ``cap/<identifier>.xml``: every CAP message, the exact bytes stored;
- ``timeline.csv`` / ``timeline.json``: per event, each message (Alert, Update, Cancel)
  in order, with its level, time, figures and the item that produced it;
- ``noise.csv`` / ``noise.json``: per subscription, messages received, how many were
  Updates (the noise) or Cancels, and channel deliveries;
- ``items.csv``: every item and what became of it (assessed, skipped, quarantined: why).

Everything is sorted by stable keys, so two runs of the same inputs give identical files.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.cap import PARAMETER_PREFIX
from alerts.cap_schema import CAP12_NS
from store import repo
from store.feed_models import FeedItemRow
from store.replay_repo import subscriber_noise
from workers.replay_manifest import write_atomic

OUTPUTS_DIR = "outputs"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One message of an event's history in a replay."""

    event_id: str
    kind: str
    sequence: int
    identifier: str
    msg_type: str
    level: str
    sent: str
    expires: str
    population: float
    area_km2: float
    rules_version: str
    cap_sha256: str
    feed_id: str
    item: str


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One item of a replay and what became of it."""

    item_id: int
    feed_id: str
    name: str
    checksum: str
    status: str
    decision: str
    alert: str
    reason: str


def timeline(session: Session) -> list[TimelineEntry]:
    """Every message of the run, by event then sequence."""
    by_alert = {row.alert_identifier: row for row in session.scalars(
        select(FeedItemRow).where(FeedItemRow.alert_identifier.is_not(None)))}
    events = {}
    out = []
    for alert in repo.list_alerts(session):
        if alert.event_id not in events:
            events[alert.event_id] = repo.get_event(session, alert.event_id)
        item = by_alert.get(alert.identifier)
        figures = _figures(alert.cap_bytes)
        out.append(TimelineEntry(
            event_id=alert.event_id, kind=events[alert.event_id].kind,
            sequence=int(alert.identifier.rsplit("-", 1)[1]), identifier=alert.identifier,
            msg_type=alert.msg_type.value, level=alert.level.value,
            sent=alert.sent.isoformat(), expires=alert.expires.isoformat(),
            population=figures["population"], area_km2=figures["area_km2"],
            rules_version=alert.priority.rules_version, cap_sha256=alert.cap_sha256,
            feed_id=item.feed_id if item else "", item=item.checksum if item else ""))
    return sorted(out, key=lambda e: (e.event_id, e.sequence))


def _figures(cap_bytes: bytes) -> dict[str, float]:
    """People exposed and area of a message, from its CAP parameters (first info)."""
    root = etree.fromstring(cap_bytes, parser=etree.XMLParser(resolve_entities=False))
    info = root.find(f"{{{CAP12_NS}}}info")
    out = {"population": 0.0, "area_km2": 0.0}
    names = {f"{PARAMETER_PREFIX}peopleExposed": "population",
             f"{PARAMETER_PREFIX}areaKm2": "area_km2"}
    for parameter in info.iterfind(f"{{{CAP12_NS}}}parameter") if info is not None else ():
        name = names.get(parameter.findtext(f"{{{CAP12_NS}}}valueName") or "")
        if name is not None:
            try:
                out[name] = float(parameter.findtext(f"{{{CAP12_NS}}}value") or 0)
            except ValueError:
                pass  # "<5": a hidden small count
    return out


def items(session: Session) -> list[ItemRecord]:
    """Every item of the run, by id."""
    return [ItemRecord(row.id, row.feed_id, row.original_name, row.checksum, row.status,
                       row.decision or "", row.alert_identifier or "", row.reason or "")
            for row in session.scalars(select(FeedItemRow).order_by(FeedItemRow.id))]


def write_outputs(session: Session, run_dir: Path) -> dict[str, Path]:
    """Write every output of the run (replacing earlier ones); their paths by name."""
    out = run_dir / OUTPUTS_DIR
    cap_dir = out / "cap"
    cap_dir.mkdir(parents=True, exist_ok=True)
    alerts = repo.list_alerts(session)
    for alert in alerts:
        path = cap_dir / f"{alert.identifier}.xml"
        if not path.exists() or path.read_bytes() != alert.cap_bytes:
            write_atomic(path, alert.cap_bytes)
    entries = [asdict(e) for e in timeline(session)]
    noise = [{**asdict(n), "update_share": round(n.update_share, 4)}
             for n in subscriber_noise(session)]
    records = [asdict(r) for r in items(session)]
    paths = {"cap": cap_dir}
    for name, rows, fields in (
            ("timeline", entries, list(TimelineEntry.__dataclass_fields__)),
            ("noise", noise, [*_noise_fields(), "update_share"]),
            ("items", records, list(ItemRecord.__dataclass_fields__))):
        write_atomic(out / f"{name}.csv", _csv(rows, fields).encode("utf-8"))
        paths[f"{name}.csv"] = out / f"{name}.csv"
        if name != "items":
            write_atomic(out / f"{name}.json",
                         (json.dumps(_grouped(name, rows), indent=1) + "\n").encode("utf-8"))
            paths[f"{name}.json"] = out / f"{name}.json"
    return paths


def _noise_fields() -> list[str]:
    from store.replay_repo import SubscriberNoise

    return list(SubscriberNoise.__dataclass_fields__)


def _grouped(name: str, rows: list[dict[str, Any]]) -> Any:
    if name != "timeline":
        return rows
    events: dict[str, dict[str, Any]] = {}
    for row in rows:
        event = events.setdefault(row["event_id"], {"event_id": row["event_id"],
                                                     "kind": row["kind"], "messages": []})
        event["messages"].append({k: v for k, v in row.items() if k not in ("event_id",
                                                                            "kind")})
    return list(events.values())


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
