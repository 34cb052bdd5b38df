"""The replay plan: which items run in which order, and which may run in parallel.

Pure: scans in (what each item is: kind, times, producer event id, footprint), plan out.
An item can only continue an event of its own hazard kind that has the same producer event
id, or whose footprint intersects its own and was last seen within the event window
(``alerts.events.match_event``). An event's footprint is the footprint of one of its
items, and its ``last_seen`` the event time of one of its items. So items are partitioned:

1. the same bytes twice (any feed) are one item: the later ones are skipped, as the
   store's ingest check would skip them;
2. items of one kind whose footprints touch are linked (transitively);
3. each linked group, in event-time order, is cut where two consecutive items are more
   than the window apart: nothing before the gap can match anything after it;
4. pieces that share a producer event id are joined again (that rule has no time limit),
   and so are pieces holding items that would open an event under the same id
   (``alerts.events.new_event_id``: same kind, same second, centroids rounding alike).

No item of one partition can then match an event of another, so partitions run in
parallel and each one in order (event time, then issue time, then checksum) gives exactly
what one sequential run in that order gives, whatever the number of workers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from alerts.events import CENTROID_DECIMALS

FOOTPRINT_TOUCH_DEG = 1e-6
"""Footprints closer than this (degrees, about 0.1 m) are linked: errs on the side of one
partition, never two, should a stored footprint lose a last digit."""

STATUS_SKIPPED, STATUS_QUARANTINED = "skipped", "quarantined"


@dataclass(frozen=True, slots=True)
class ItemScan:
    """What a replay needs to know of one item before assessing it.

    Attributes:
        item_id: the item in the run store.
        feed_id: its feed.
        checksum: ``sha256:<hex>`` of its bytes.
        replay_at: the time it is assessed "as of" (the ``now`` of the assessment): the
            issue time in the file, else the source's, else the fetch time or mtime.
        time_from: ``file``, ``source`` or ``fetched``: where ``replay_at`` came from.
        event_at: the event time the assessment uses (onset, else issue time, else
            ``replay_at``), ISO text.
        kind: the hazard kind, once read.
        source_event_id: the producer's event id, if any.
        footprint_wkt: the footprint (classes >= 1, EPSG:4326); empty when none.
        quarantined: why it cannot be read (then only ``replay_at`` may be known).
    """

    item_id: int
    feed_id: str
    checksum: str
    replay_at: str | None = None
    time_from: str = ""
    event_at: str | None = None
    kind: str | None = None
    source_event_id: str | None = None
    footprint_wkt: str = "POLYGON EMPTY"
    quarantined: str | None = None

    def to_json(self) -> str:
        """The scan as JSON (the run's ``scan/<item>.json``)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ItemScan:
        """Parse :meth:`to_json` output."""
        return cls(**json.loads(text))

    @property
    def replay_time(self) -> datetime | None:
        """``replay_at`` as a datetime."""
        return datetime.fromisoformat(self.replay_at) if self.replay_at else None

    @property
    def event_time(self) -> datetime | None:
        """``event_at`` as a datetime."""
        return datetime.fromisoformat(self.event_at) if self.event_at else None

    @property
    def order_key(self) -> tuple[str, str, str, str, int]:
        """Event time, issue time, checksum, feed, id: the replay order of an event chain."""
        return (_utc_text(self.event_time), _utc_text(self.replay_time), self.checksum,
                self.feed_id, self.item_id)


def _utc_text(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value is not None else ""


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Partitions of items to assess (each in order) and the items left out, with why.

    Attributes:
        partitions: item ids per partition, in assessment order; partitions are ordered by
            their first item.
        excluded: item id -> ``(status, reason)`` for items not assessed (outside the
            window, the same bytes as another item, unreadable).
    """

    partitions: tuple[tuple[int, ...], ...]
    excluded: Mapping[int, tuple[str, str]] = field(default_factory=dict)

    def previous(self) -> dict[int, int | None]:
        """For every planned item, the item before it in its partition (None: first)."""
        out: dict[int, int | None] = {}
        for part in self.partitions:
            for before, item in zip((None, *part[:-1]), part, strict=True):
                out[item] = before
        return out

    @property
    def item_count(self) -> int:
        """Items to assess."""
        return sum(len(p) for p in self.partitions)

    def to_json(self) -> str:
        """The plan as JSON (the run's ``plan.json``)."""
        return json.dumps({"partitions": [list(p) for p in self.partitions],
                           "excluded": {str(k): list(v) for k, v in
                                        sorted(self.excluded.items())}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ReplayPlan:
        """Parse :meth:`to_json` output."""
        raw = json.loads(text)
        return cls(tuple(tuple(int(i) for i in p) for p in raw["partitions"]),
                   {int(k): (v[0], v[1]) for k, v in raw["excluded"].items()})


def plan_replay(scans: Iterable[ItemScan], *, since: datetime, until: datetime,
                window: timedelta) -> ReplayPlan:
    """Partition the items of a replay (see the module docstring for why it is safe).

    Args:
        scans: one scan per item.
        since: window start (inclusive), on ``replay_at``.
        until: window end (exclusive).
        window: the event window (``Settings.event_window_h``).
    """
    excluded: dict[int, tuple[str, str]] = {}
    kept: list[ItemScan] = []
    for scan in scans:
        at = scan.replay_time
        outside = at is not None and not since <= at < until
        if scan.quarantined is not None and not (outside and scan.time_from == "source"):
            # Unreadable, and no time the source states puts it outside the window (a fetch
            # time or mtime says nothing of the payload): set aside, so it is seen.
            excluded[scan.item_id] = (STATUS_QUARANTINED, scan.quarantined)
        elif outside:
            excluded[scan.item_id] = (STATUS_SKIPPED, f"outside the window ({scan.replay_at}, "
                                      f"from the {scan.time_from} time)")
        else:
            kept.append(scan)
    kept.sort(key=lambda s: s.order_key)
    first: dict[str, ItemScan] = {}
    unique = []
    for scan in kept:
        if scan.checksum in first:
            other = first[scan.checksum]
            excluded[scan.item_id] = (STATUS_SKIPPED, f"the same bytes as item {other.item_id} "
                                      f"of feed {other.feed_id}: ingested once")
        else:
            first[scan.checksum] = scan
            unique.append(scan)
    groups = _partitions(unique, window)
    return ReplayPlan(tuple(tuple(s.item_id for s in g) for g in groups), excluded)


def _partitions(scans: Sequence[ItemScan], window: timedelta) -> list[list[ItemScan]]:
    """Footprint-linked groups, cut at time gaps, re-joined by producer event id; ordered."""
    linked = _link_footprints(scans)
    pieces = _UnionFind(len(scans))
    by_group: dict[int, list[int]] = defaultdict(list)
    for index in range(len(scans)):
        by_group[linked.find(index)].append(index)
    for members in by_group.values():
        members.sort(key=lambda i: scans[i].order_key)
        for before, after in zip(members, members[1:], strict=False):
            if _event_time(scans[after]) - _event_time(scans[before]) <= window:
                pieces.union(before, after)
    by_source: dict[tuple[str | None, str], int] = {}
    same_second: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    for index, scan in enumerate(scans):
        if scan.source_event_id:
            key = (scan.kind, scan.source_event_id)
            pieces.union(by_source.setdefault(key, index), index)
        same_second[(scan.kind, _event_time(scan).isoformat(timespec="seconds"))].append(index)
    for members in same_second.values():
        _join_same_new_id(scans, members, pieces)
    out: dict[int, list[ItemScan]] = defaultdict(list)
    for index, scan in enumerate(scans):
        out[pieces.find(index)].append(scan)
    groups = [sorted(g, key=lambda s: s.order_key) for g in out.values()]
    return sorted(groups, key=lambda g: g[0].order_key)


def _link_footprints(scans: Sequence[ItemScan]) -> _UnionFind:
    """Items of one kind whose footprints touch, linked (an STRtree per kind)."""
    linked = _UnionFind(len(scans))
    by_kind: dict[str | None, list[int]] = defaultdict(list)
    for index, scan in enumerate(scans):
        by_kind[scan.kind].append(index)
    for members in by_kind.values():
        shapes = [(i, _geometry(scans[i].footprint_wkt)) for i in members]
        shapes = [(i, g) for i, g in shapes if not g.is_empty]
        if not shapes:
            continue
        tree = STRtree([g for _i, g in shapes])
        for i, geom in shapes:
            for hit in tree.query(geom, predicate="dwithin", distance=FOOTPRINT_TOUCH_DEG):
                linked.union(i, shapes[int(hit)][0])
    return linked


def _join_same_new_id(scans: Sequence[ItemScan], members: list[int],
                      pieces: _UnionFind) -> None:
    """Join items of one kind and second whose new events could get one id.

    ``alerts.events.new_event_id`` hashes the kind, the second and the footprint centroid
    rounded to ``CENTROID_DECIMALS``: two such items interact through that id (the second
    would overwrite the first's event), so their order must not depend on scheduling.
    Centroids closer than one rounding step (or both empty) may round alike: joined.
    """
    step = 10.0 ** -CENTROID_DECIMALS + FOOTPRINT_TOUCH_DEG
    where = []
    for index in members:
        geom = _geometry(scans[index].footprint_wkt)
        where.append(None if geom.is_empty else geom.centroid)
    for i, a in enumerate(members):
        for j in range(i + 1, len(members)):
            ca, cb = where[i], where[j]
            if (ca is None and cb is None) or (
                    ca is not None and cb is not None
                    and abs(ca.x - cb.x) <= step and abs(ca.y - cb.y) <= step):
                pieces.union(a, members[j])


def _event_time(scan: ItemScan) -> datetime:
    at = scan.event_time or scan.replay_time
    assert at is not None, f"item {scan.item_id} has no time"
    return at


def _geometry(wkt: str) -> BaseGeometry:
    geom = shapely.from_wkt(wkt)
    return geom if geom.is_valid else shapely.make_valid(geom)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def describe(plan: ReplayPlan) -> dict[str, Any]:
    """Counts of a plan, for the summary."""
    return {"partitions": len(plan.partitions), "items": plan.item_count,
            "largest_partition": max((len(p) for p in plan.partitions), default=0),
            "excluded": len(plan.excluded)}
