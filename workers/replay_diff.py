"""``tocsin replay diff RUN_A RUN_B``: two replays compared event by event.

Items are the common ground: the same feed item (feed and checksum) was replayed in both
runs, under two rule tables say. Each item produced a message (Alert, Update, Cancel, at a
level) or nothing in each run. Events are matched through their items: an event of run A
and one of run B that share an item are one event of the comparison (a stricter table may
start the event one run later, under another event id). Per event: the messages gained
(sent in B only), lost (sent in A only) and changed (a different level or type).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from store import repo
from store.db import make_engine, session_scope
from store.feed_models import FeedItemRow
from workers.replay_manifest import (
    STORE_FILE,
    Manifest,
    ReplayUsageError,
    read_manifest,
    run_store_url,
)
from workers.replay_plan import ItemScan
from workers.replay_run import FINAL_STATUSES, scan_path


@dataclass(frozen=True, slots=True)
class Message:
    """A message one item produced in one run."""

    identifier: str
    event_id: str
    msg_type: str
    level: str


@dataclass(frozen=True, slots=True)
class Change:
    """How one item's message differs between the runs."""

    feed_id: str
    item: str
    at: str
    change: str  # gained, lost, level, type
    a: Message | None
    b: Message | None


@dataclass
class EventDiff:
    """One event of the comparison: its ids in each run, its messages, what changed."""

    events_a: list[str]
    events_b: list[str]
    timeline_a: list[str]
    timeline_b: list[str]
    changes: list[Change] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``gained`` (only B alerted), ``lost`` (only A), ``changed`` or ``same``."""
        if not self.timeline_a:
            return "gained"
        if not self.timeline_b:
            return "lost"
        return "changed" if self.changes else "same"


@dataclass
class RunDiff:
    """Two runs compared."""

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    events: list[EventDiff]
    only_a: int
    only_b: int
    notes: list[str]

    def totals(self) -> dict[str, int]:
        """Counts of changed messages and events by kind of change."""
        out = {"gained": 0, "lost": 0, "level": 0, "type": 0}
        for event in self.events:
            for change in event.changes:
                out[change.change] += 1
        for status in ("gained", "lost", "changed", "same"):
            out[f"events_{status}"] = sum(e.status == status for e in self.events)
        return out

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data."""
        return {"run_a": self.run_a, "run_b": self.run_b, "totals": self.totals(),
                "items_only_in_a": self.only_a, "items_only_in_b": self.only_b,
                "notes": self.notes,
                "events": [{"status": e.status, "events_a": e.events_a,
                            "events_b": e.events_b, "timeline_a": e.timeline_a,
                            "timeline_b": e.timeline_b,
                            "changes": [asdict(c) for c in e.changes]} for e in self.events]}


Key = tuple[str, str]


def _load(run_dir: Path) -> tuple[Manifest, dict[Key, Message | None], dict[Key, str], int]:
    """A run's manifest, each item's message (or None), each item's time, items not final."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise ReplayUsageError(f"{run_dir}: not a replay run directory (no run.json)")
    if not (run_dir / STORE_FILE).is_file():
        raise ReplayUsageError(f"{run_dir}: the replay has no store yet ({STORE_FILE}); "
                               "run it first")
    engine = make_engine(run_store_url(run_dir))
    messages: dict[Key, Message | None] = {}
    times: dict[Key, str] = {}
    try:
        with session_scope(engine) as session:
            unfinished = int(session.scalar(select(func.count()).select_from(FeedItemRow)
                                            .where(FeedItemRow.status.not_in(
                                                tuple(FINAL_STATUSES)))) or 0)
            alerts = {a.identifier: a for a in repo.list_alerts(session)}
            for row in session.scalars(select(FeedItemRow).where(
                    FeedItemRow.status.in_(("assessed", "skipped")))):
                key = (row.feed_id, row.checksum)
                alert = alerts.get(row.alert_identifier or "")
                messages[key] = Message(alert.identifier, alert.event_id, alert.msg_type.value,
                                        alert.level.value) if alert else None
                path = scan_path(run_dir, row.id)
                times[key] = ItemScan.from_json(path.read_text("utf-8")).replay_at or "" \
                    if path.exists() else ""
    finally:
        engine.dispose()
    return manifest, messages, times, unfinished


def diff_runs(run_a: Path, run_b: Path) -> RunDiff:
    """Compare two replays event by event.

    Raises:
        ReplayUsageError: a directory is not a replay run.
    """
    man_a, msgs_a, times, open_a = _load(run_a)
    man_b, msgs_b, times_b, open_b = _load(run_b)
    times = {**times_b, **times}
    notes = [f"the runs differ in {k}" for k in ("source", "window", "feeds", "regions",
                                                 "settings")
             if getattr(man_a, k) != getattr(man_b, k)]
    notes += [f"run {name} ({path}) is not finished: {count} item(s) not assessed yet; run "
              "its command again to complete it" for name, path, count in
              (("A", run_a, open_a), ("B", run_b, open_b)) if count]
    common = sorted(set(msgs_a) & set(msgs_b), key=lambda k: (times.get(k, ""), k))
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for key in common:
        a, b = msgs_a[key], msgs_b[key]
        nodes = [f"a:{m.event_id}" for m in (a,) if m] + [f"b:{m.event_id}" for m in (b,) if m]
        for node in nodes:
            find(node)
        if len(nodes) == 2:
            ra, rb = find(nodes[0]), find(nodes[1])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, EventDiff] = {}
    for key in common:
        a, b = msgs_a[key], msgs_b[key]
        if a is None and b is None:
            continue
        root = find(f"a:{a.event_id}" if a else f"b:{b.event_id}")  # type: ignore[union-attr]
        event = groups.setdefault(root, EventDiff([], [], [], []))
        _add(event.events_a, event.timeline_a, a)
        _add(event.events_b, event.timeline_b, b)
        change = _change(a, b)
        if change is not None:
            event.changes.append(Change(key[0], key[1], times.get(key, ""), change, a, b))
    return RunDiff(_describe(man_a, run_a), _describe(man_b, run_b), list(groups.values()),
                   len(set(msgs_a) - set(msgs_b)), len(set(msgs_b) - set(msgs_a)), notes)


def _add(ids: list[str], line: list[str], msg: Message | None) -> None:
    if msg is not None:
        if msg.event_id not in ids:
            ids.append(msg.event_id)
        line.append(f"{msg.msg_type} {msg.level}")


def _change(a: Message | None, b: Message | None) -> str | None:
    if a is None and b is not None:
        return "gained"
    if b is None and a is not None:
        return "lost"
    assert a is not None and b is not None
    if a.level != b.level:
        return "level"
    if a.msg_type != b.msg_type:
        return "type"
    return None


def _describe(manifest: Manifest, run_dir: Path) -> dict[str, Any]:
    return {"run_dir": str(run_dir), "run_id": manifest.run_id,
            "rules_version": manifest.rules["version"], "rules_sha256": manifest.rules["sha256"]}
