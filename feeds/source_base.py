"""What every feed source shares: the poll protocol, its result, and the payload screen.

A source is stateless between polls: everything it must remember (files seen, ETags,
failure counts) lives in a JSON-serialisable ``state`` dict that the caller stores and
passes back, so any worker can poll any feed. Time is passed in as ``now``; nothing here
reads the clock.

The screen (:func:`screen_payload`) makes the bad-input cases visible in ``notes`` and in
the state, for ``tocsin feeds status``: the same bytes sent twice by a feed are archived
(provenance records every sighting) but not passed on again; a change of file format and
a payload issued before one already seen are noted and passed on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from feeds.archive import ArchivedPayload
from feeds.base import to_utc
from feeds.errors import FeedError
from feeds.read import sniff_format

# Enough to recognise a feed re-sending any of its recent files, small enough to persist.
RECENT_CHECKSUMS_KEPT = 256


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll found.

    Attributes:
        payloads: new payloads, archived, in the order to ingest them.
        state: the state to store and pass to the next poll (a new dict).
        next_poll_at: when to poll next (the source may refuse to poll earlier).
        notes: what happened worth showing in ``feeds status`` (plain sentences).
        error: why the poll failed, or ``None``; a failed poll raises nothing.
    """

    payloads: list[ArchivedPayload]
    state: dict[str, Any]
    next_poll_at: datetime
    notes: list[str] = field(default_factory=list)
    error: str | None = None


class FeedSource(Protocol):
    """A feed source: polled with the state of the previous poll and the current time."""

    feed_id: str

    def poll(self, state: dict[str, Any], *, now: datetime) -> PollResult:
        """Look for new payloads, archive them, and return them with the new state."""
        ...


def begin_state(state: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of the caller's state, so a failed poll never alters what it stored."""
    return copy.deepcopy(state) if state else {}


def screen_payload(payload: ArchivedPayload, state: dict[str, Any], notes: list[str]) -> bool:
    """Check a fresh payload against what this feed saw before; note anything odd.

    Updates ``state`` in place: ``recent_checksums`` (bounded), ``format``,
    ``latest_issued_at``.

    Returns:
        ``False`` when this feed already sent the same bytes (not to be ingested again),
        else ``True``.
    """
    recent: list[str] = state.setdefault("recent_checksums", [])
    if payload.checksum in recent:
        notes.append(f"{payload.original_name}: same content as an earlier payload "
                     f"({payload.checksum[:19]}...), archived but not passed on")
        return False
    recent.append(payload.checksum)
    del recent[:-RECENT_CHECKSUMS_KEPT]
    try:
        found = sniff_format(payload.path)
    except FeedError:
        found = "unrecognised"
    before = state.get("format")
    if before is not None and before != found:
        notes.append(f"{payload.original_name}: format changed from {before} to {found}")
    state["format"] = found
    if payload.issued_at is not None:
        latest = to_utc(state.get("latest_issued_at"))
        if latest is not None and payload.issued_at < latest:
            notes.append(f"{payload.original_name}: out of time order: issued "
                         f"{payload.issued_at.isoformat()}, before {latest.isoformat()} "
                         "already seen")
        else:
            state["latest_issued_at"] = payload.issued_at.isoformat()
    return True


def finish(state: dict[str, Any], *, now: datetime, payloads: list[ArchivedPayload],
           next_poll_at: datetime, notes: list[str], error: str | None) -> PollResult:
    """Record the poll's outcome in ``state`` (for status) and build the result."""
    state["last_poll_at"] = now.isoformat()
    state["last_error"] = error
    if error is not None:
        state["last_error_at"] = now.isoformat()
    if payloads:
        state["last_payload_at"] = now.isoformat()
    return PollResult(payloads=payloads, state=state, next_poll_at=next_poll_at, notes=notes,
                      error=error)


def after(now: datetime, seconds: float) -> datetime:
    """``now`` plus ``seconds``."""
    return now + timedelta(seconds=seconds)
