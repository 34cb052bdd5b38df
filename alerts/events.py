"""Event identity and material change: when a feed update is the same event, and news.

Successive runs of one hazard (a flood forecast every 12 hours, a ShakeMap revised ten
times) are ONE event: agencies get one alert, then updates, then a cancel, all chained by
CAP ``references``. Here are the rules, pure and with time passed in:

* :func:`match_event`: same producer event id wins; else the same hazard kind whose
  footprint intersects, last seen within a time window;
* :func:`new_event_id`: a deterministic id (a hash of kind, first time and rounded footprint
  centroid), so replaying an archive rebuilds the same ids;
* :func:`decide`: what to send, the readable form of PAGER's ``shouldAlert``: nothing for a
  file already ingested; an alert for a new event; an update on a level change or a
  material change of people or area; a cancel when the footprint is gone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import shapely
from shapely.geometry.base import BaseGeometry

from alerts.errors import AlertError
from alerts.model import AlertStatus, Level

OPEN_STATUSES = frozenset({AlertStatus.ISSUED, AlertStatus.UPDATED})
"""Statuses of events that further feed runs may still update or cancel."""

CENTROID_DECIMALS = 2
"""Footprint centroids are rounded to 0.01 degree (about 1 km) in event ids: ids stay
stable when a footprint's edge moves by a few cells, and still tell apart distinct events."""

Action = Literal["alert", "update", "cancel", "none"]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What is remembered about one event between feed runs.

    Attributes:
        event_id: Tocsin's id (:func:`new_event_id`), CAP ``incidents``.
        kind: hazard kind value.
        source_event_id: the producer's id (ShakeMap event, storm name), if any.
        footprint_wkt: the latest footprint (classes >= 1) in EPSG:4326, lon lat order.
        first_seen: data time of the first run (issue or valid time), timezone-aware.
        last_seen: data time of the latest run.
        last_level: level of the latest message sent.
        last_population: people exposed at the latest message sent.
        last_area_km2: footprint area at the latest message sent.
        last_checksum: checksum of the latest file ingested.
        status: where the event's alert is in its life.
        messages: ``(identifier, sent)`` of every message sent, oldest first (CAP
            ``references`` of the next Update or Cancel).
    """

    event_id: str
    kind: str
    source_event_id: str | None
    footprint_wkt: str
    first_seen: datetime
    last_seen: datetime
    last_level: Level
    last_population: float
    last_area_km2: float
    last_checksum: str
    status: AlertStatus = AlertStatus.ISSUED
    messages: tuple[tuple[str, datetime], ...] = ()

    @property
    def is_open(self) -> bool:
        """True while further runs may update or cancel the event."""
        return self.status in OPEN_STATUSES

    @property
    def footprint(self) -> BaseGeometry:
        """The footprint as a shapely geometry (EPSG:4326)."""
        return shapely.from_wkt(self.footprint_wkt)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to send for one feed run, and why (plain sentences)."""

    action: Action
    reasons: tuple[str, ...]


def match_event(
    kind: str,
    source_event_id: str | None,
    footprint: BaseGeometry,
    at: datetime,
    open_events: Iterable[EventRecord],
    window: timedelta,
) -> EventRecord | None:
    """The open event a new feed run belongs to, if any.

    Rules, in order:

    1. an open event of the same kind with the same producer event id;
    2. else an open event of the same kind whose footprint intersects the candidate's and
       was last seen within ``window`` of ``at`` (before or after: replays may run out of
       order); events with ANOTHER producer id are distinct events and never match here.
       Among several, the largest overlap wins, then the latest ``last_seen``, then the
       smallest event id (deterministic).

    Args:
        kind: hazard kind of the run.
        source_event_id: the producer's event id, if the feed has one.
        footprint: the run's footprint (classes >= 1), EPSG:4326.
        at: data time of the run (timezone-aware).
        open_events: candidate events (closed ones are ignored).
        window: how far apart in time two runs of one event may be.

    Returns:
        The matching event, or ``None`` (a new event).

    Raises:
        AlertError: naive ``at`` or a negative window.
    """
    _aware(at, "at")
    if window < timedelta(0):
        raise AlertError(f"the event window must not be negative, got {window}")
    events = [e for e in open_events if e.is_open and e.kind == kind]
    if source_event_id:
        same = sorted((e for e in events if e.source_event_id == source_event_id),
                      key=lambda e: e.event_id)
        if same:
            return same[0]
    footprint = _valid(footprint)
    if footprint.is_empty:
        return None
    candidates: list[tuple[tuple[float, float, str], EventRecord]] = []
    for event in events:
        if source_event_id and event.source_event_id and event.source_event_id != source_event_id:
            continue
        if abs(at - event.last_seen) > window:
            continue
        other = _valid(event.footprint)
        if footprint.intersects(other):
            # Largest overlap first, then latest seen, then smallest id.
            overlap = footprint.intersection(other).area
            key = (-overlap, -event.last_seen.timestamp(), event.event_id)
            candidates.append((key, event))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def new_event_id(kind: str, at: datetime, footprint: BaseGeometry) -> str:
    """A deterministic id for a new event: ``<kind>-<YYYYmmddTHHMMZ>-<10 hex>``.

    The hash covers the kind, the first time (UTC, to the second) and the footprint centroid
    rounded to :data:`CENTROID_DECIMALS` degrees. No randomness: replaying the same feeds
    gives the same ids.

    Raises:
        AlertError: ``at`` is naive.
    """
    _aware(at, "at")
    utc = at.astimezone(UTC)
    geom = _valid(footprint)
    if geom.is_empty:
        where = "empty"
    else:
        c = geom.centroid
        where = f"{round(c.x, CENTROID_DECIMALS):.{CENTROID_DECIMALS}f}," \
                f"{round(c.y, CENTROID_DECIMALS):.{CENTROID_DECIMALS}f}"
    digest = hashlib.sha256(f"{kind}|{utc.isoformat(timespec='seconds')}|{where}".encode())
    return f"{kind}-{utc:%Y%m%dT%H%MZ}-{digest.hexdigest()[:10]}"


def decide(
    event: EventRecord | None,
    checksum: str,
    level: Level,
    population: float,
    area_km2: float,
    *,
    material_share: float = 0.2,
    cancel_below_level: Level | None = None,
) -> Decision:
    """What to send for one feed run of an event.

    Rules, in order:

    1. same checksum as the event's last file: ``none`` (already ingested);
    2. no open event (none matched, or it was cancelled or expired): ``alert`` when there is
       a footprint and the level is at least ``cancel_below_level``, else ``none``;
    3. footprint gone (no people and no area): ``cancel``;
    4. level below ``cancel_below_level``: ``cancel``;
    5. level changed, or people or area changed by more than ``material_share`` of the
       last figures sent (any change from zero counts): ``update``, with every reason;
    6. else ``none``.

    Args:
        event: the matched event (:func:`match_event`), or ``None``.
        checksum: checksum of the run's source file.
        level: the run's level.
        population: people exposed in the run.
        area_km2: the run's footprint area.
        material_share: smallest relative change that is news (0.2: 20 %).
        cancel_below_level: an open event whose level falls below this is cancelled, and no
            new alert is raised below it; ``None``: only a vanished footprint cancels.

    Returns:
        The action and its reasons.

    Raises:
        AlertError: negative or non-finite figures, or a material share not above 0.
    """
    _check_figures(population, area_km2, material_share)
    if event is not None and checksum == event.last_checksum:
        return Decision("none", (f"already ingested: {checksum} is the last file of event "
                                 f"{event.event_id}",))
    gone = population == 0 and area_km2 == 0
    # Nothing is below green: without a cancel level, only a vanished footprint cancels.
    floor = cancel_below_level or Level.GREEN
    too_low = level.rank < floor.rank
    if event is None or not event.is_open:
        return _new_event(event, level, gone, too_low, floor)
    if gone:
        return Decision("cancel", (f"the footprint of event {event.event_id} is gone: no "
                                   f"people and no area in any class",))
    if too_low:
        return Decision("cancel", (f"level fell to {level.value}, below {floor.value}",))
    reasons = _changes(event, level, population, area_km2, material_share)
    if reasons:
        return Decision("update", tuple(reasons))
    return Decision("none", (f"no material change of event {event.event_id}: level still "
                             f"{level.value}, people {_change(event.last_population, population)},"
                             f" area {_change(event.last_area_km2, area_km2)}",))


def _new_event(
    event: EventRecord | None, level: Level, gone: bool, too_low: bool, floor: Level
) -> Decision:
    closed = (f"event {event.event_id} is {event.status.value}; a new occurrence is a new "
              f"event" if event is not None else "no open event matches")
    if gone:
        return Decision("none", (closed, "no footprint: nothing to alert about"))
    if too_low:
        return Decision("none", (closed, f"level {level.value} is below {floor.value}"))
    return Decision("alert", (closed, f"new event at level {level.value}"))


def _changes(
    event: EventRecord, level: Level, population: float, area_km2: float, share: float
) -> list[str]:
    reasons = []
    if level is not event.last_level:
        verb = "raised" if level.rank > event.last_level.rank else "lowered"
        reasons.append(f"level {verb} from {event.last_level.value} to {level.value}")
    if _material(event.last_population, population, share):
        reasons.append(f"people exposed {_change(event.last_population, population)} "
                       f"({event.last_population:,.0f} to {population:,.0f})")
    if _material(event.last_area_km2, area_km2, share):
        reasons.append(f"area {_change(event.last_area_km2, area_km2)} "
                       f"({event.last_area_km2:,.1f} to {area_km2:,.1f} km2)")
    return reasons


def _material(before: float, after: float, share: float) -> bool:
    if before == 0:
        return after != 0
    return abs(after - before) / before > share


def _change(before: float, after: float) -> str:
    if before == after:
        return "unchanged"
    if before == 0:
        return "up from none"
    pct = (after - before) / before * 100
    return f"{'up' if pct > 0 else 'down'} {abs(pct):.0f}%"


def _check_figures(population: float, area_km2: float, material_share: float) -> None:
    for name, value in (("population", population), ("area_km2", area_km2)):
        if not math.isfinite(value) or value < 0:
            raise AlertError(f"{name} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(material_share) or material_share <= 0:
        raise AlertError(f"material_share must be a positive share (0.2 = 20%), got "
                         f"{material_share!r}")


def _aware(at: datetime, name: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise AlertError(f"{name} must be timezone-aware, got {at.isoformat()}")


def _valid(geometry: BaseGeometry) -> BaseGeometry:
    """Repair an invalid footprint rather than let a GEOS error decide identity."""
    return geometry if geometry.is_valid else shapely.make_valid(geometry)
