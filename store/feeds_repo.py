"""Load and save functions of the live pipeline: each feed's polling state, each item it gave.

A feed is polled by one worker at a time: the poll is claimed with a lease (a conditional
UPDATE), as deliveries are, so two beats or a manual poll beside the workers never poll the
same feed at once and overwrite each other's source state. Items are claimed the same way
for assessment. Like :mod:`store.repo`, every function takes an open session and never
commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.feed_models import FeedItemRow, FeedRow
from store.repo import RecordNotFoundError

ITEM_FETCHED, ITEM_ASSESSING, ITEM_ASSESSED = "fetched", "assessing", "assessed"
ITEM_SKIPPED, ITEM_QUARANTINED = "skipped", "quarantined"


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One payload a feed gave, and what became of it."""

    id: int
    feed_id: str
    checksum: str
    archive_path: str
    source_uri: str
    original_name: str
    fetched_at: datetime
    issued_at: datetime | None
    status: str
    reason: str | None = None
    alert_identifier: str | None = None
    decision: str | None = None
    assessed_at: datetime | None = None
    assess_s: float | None = None


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """What ``tocsin feeds status`` shows of one feed."""

    feed_id: str
    next_poll_at: datetime | None
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    last_issued_at: datetime | None
    last_lag_s: float | None
    items: dict[str, int]
    last_item: FeedItem | None
    notes: tuple[str, ...] = ()


def _item(row: FeedItemRow) -> FeedItem:
    return FeedItem(row.id, row.feed_id, row.checksum, row.archive_path, row.source_uri,
                    row.original_name, row.fetched_at, row.issued_at, row.status, row.reason,
                    row.alert_identifier, row.decision, row.assessed_at, row.assess_s)


def sync_feeds(session: Session, feeds: Sequence[tuple[str, str]], *, now: datetime) -> list[str]:
    """Make sure every configured feed has its row; new ones are due at once.

    A feed whose configuration changed keeps its state (seen files, ETag): the source is
    the same place; drop the row by hand to start it afresh.

    Args:
        session: open session.
        feeds: ``(feed_id, config_sha256)`` of every configured feed.
        now: the current time.

    Returns:
        The ids of the feeds added.
    """
    added = []
    for feed_id, digest in feeds:
        row = session.get(FeedRow, feed_id)
        if row is None:
            try:
                with session.begin_nested():
                    session.add(FeedRow(feed_id=feed_id, config_sha256=digest, state={},
                                        next_poll_at=now, consecutive_failures=0))
                added.append(feed_id)
            except IntegrityError:  # another worker added it first
                pass
        elif row.config_sha256 != digest:
            row.config_sha256 = digest
    session.flush()
    return added


def due_feeds(session: Session, *, now: datetime, feed_ids: Sequence[str]) -> list[str]:
    """Configured feeds due for a poll and not being polled, soonest first."""
    stmt = (
        select(FeedRow.feed_id)
        .where(FeedRow.feed_id.in_(list(feed_ids)),
               or_(FeedRow.next_poll_at.is_(None), FeedRow.next_poll_at <= now),
               or_(FeedRow.lease_until.is_(None), FeedRow.lease_until < now))
        .order_by(FeedRow.next_poll_at)
    )
    return list(session.scalars(stmt))


def claim_poll(session: Session, feed_id: str, *, now: datetime, lease_s: float,
               force: bool = False) -> dict[str, Any] | None:
    """Take a feed for polling; its source state, or None when not due or taken.

    Args:
        session: open session (the claim holds when the caller commits).
        feed_id: the feed.
        now: the current time.
        lease_s: how long the claim holds; longer than one poll may take.
        force: poll even when not due yet (``tocsin feeds poll``); never while taken.
    """
    conditions = [FeedRow.feed_id == feed_id,
                  or_(FeedRow.lease_until.is_(None), FeedRow.lease_until < now)]
    if not force:
        conditions.append(or_(FeedRow.next_poll_at.is_(None), FeedRow.next_poll_at <= now))
    result = session.execute(update(FeedRow).where(and_(*conditions))
                             .values(lease_until=now + timedelta(seconds=lease_s))
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    state = session.scalar(select(FeedRow.state).where(FeedRow.feed_id == feed_id))
    return dict(state or {})


def finish_poll(
    session: Session,
    feed_id: str,
    *,
    state: dict[str, Any],
    next_poll_at: datetime,
    at: datetime,
    error: str | None,
) -> None:
    """Record a poll: the new source state, when to poll next, and success or the error."""
    row = session.get(FeedRow, feed_id)
    if row is None:
        raise RecordNotFoundError(f"no feed {feed_id!r}")
    row.state = state
    row.next_poll_at = next_poll_at
    row.lease_until = None
    row.last_poll_at = at
    if error:
        row.last_error, row.last_error_at = error, at
        row.consecutive_failures = (row.consecutive_failures or 0) + 1
    else:
        row.last_success_at = at
        row.consecutive_failures = 0
    session.flush()


def add_item(session: Session, *, feed_id: str, checksum: str, archive_path: str,
             source_uri: str, original_name: str, fetched_at: datetime,
             issued_at: datetime | None) -> tuple[int, bool]:
    """Record a payload of a feed; ``(item id, new)`` (the same bytes again are not new)."""
    existing = session.scalar(select(FeedItemRow.id).where(
        FeedItemRow.feed_id == feed_id, FeedItemRow.checksum == checksum))
    if existing is not None:
        return int(existing), False
    row = FeedItemRow(feed_id=feed_id, checksum=checksum, archive_path=archive_path,
                      source_uri=source_uri, original_name=original_name,
                      fetched_at=fetched_at, issued_at=issued_at, status=ITEM_FETCHED)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the same bytes recorded concurrently
        again = session.scalar(select(FeedItemRow.id).where(
            FeedItemRow.feed_id == feed_id, FeedItemRow.checksum == checksum))
        return int(again), False
    return int(row.id), True


def get_item(session: Session, item_id: int) -> FeedItem:
    """The feed item ``item_id``.

    Raises:
        RecordNotFoundError: no such item.
    """
    row = session.get(FeedItemRow, item_id)
    if row is None:
        raise RecordNotFoundError(f"no feed item {item_id}")
    return _item(row)


def claim_item(session: Session, item_id: int, *, now: datetime,
               stale_s: float) -> FeedItem | None:
    """Take an item for assessment; None when it is done or another worker has it.

    An item left ``assessing`` for more than ``stale_s`` (its worker died) may be taken again.
    """
    stale = now - timedelta(seconds=stale_s)
    result = session.execute(
        update(FeedItemRow)
        .where(FeedItemRow.id == item_id,
               or_(FeedItemRow.status == ITEM_FETCHED,
                   and_(FeedItemRow.status == ITEM_ASSESSING, FeedItemRow.assessed_at < stale)))
        .values(status=ITEM_ASSESSING, assessed_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return get_item(session, item_id)


def finish_item(session: Session, item_id: int, *, status: str, at: datetime,
                reason: str | None = None, alert_identifier: str | None = None,
                decision: str | None = None, assess_s: float | None = None,
                issued_at: datetime | None = None) -> None:
    """Record what became of an item (assessed, skipped or quarantined) and feed health."""
    row = session.get(FeedItemRow, item_id)
    if row is None:
        raise RecordNotFoundError(f"no feed item {item_id}")
    row.status, row.reason, row.assessed_at = status, reason, at
    row.alert_identifier, row.decision, row.assess_s = alert_identifier, decision, assess_s
    row.issued_at = issued_at or row.issued_at
    feed = session.get(FeedRow, row.feed_id)
    if feed is not None and status == ITEM_ASSESSED and row.issued_at is not None:
        if feed.last_issued_at is None or row.issued_at >= feed.last_issued_at:
            feed.last_issued_at = row.issued_at
            feed.last_lag_s = (row.fetched_at - row.issued_at).total_seconds()
    session.flush()


def pending_items(session: Session, *, now: datetime, stale_s: float,
                  limit: int = 100) -> list[int]:
    """Items not assessed yet: fetched, or assessing with a worker that went away."""
    stale = now - timedelta(seconds=stale_s)
    stmt = (select(FeedItemRow.id)
            .where(or_(FeedItemRow.status == ITEM_FETCHED,
                       and_(FeedItemRow.status == ITEM_ASSESSING,
                            FeedItemRow.assessed_at < stale)))
            .order_by(FeedItemRow.issued_at, FeedItemRow.id).limit(limit))
    return [int(i) for i in session.scalars(stmt)]


def feed_health(session: Session, feed_ids: Sequence[str] | None = None) -> list[FeedHealth]:
    """Health of every feed (or of these), by id."""
    stmt = select(FeedRow).order_by(FeedRow.feed_id)
    if feed_ids is not None:
        stmt = stmt.where(FeedRow.feed_id.in_(list(feed_ids)))
    out = []
    for row in session.scalars(stmt):
        counts = dict(session.execute(
            select(FeedItemRow.status, func.count()).where(FeedItemRow.feed_id == row.feed_id)
            .group_by(FeedItemRow.status)).all())
        last = session.scalar(select(FeedItemRow).where(FeedItemRow.feed_id == row.feed_id)
                              .order_by(FeedItemRow.id.desc()).limit(1))
        out.append(FeedHealth(row.feed_id, row.next_poll_at, row.last_poll_at,
                              row.last_success_at, row.last_error, row.last_error_at,
                              row.consecutive_failures or 0, row.last_issued_at, row.last_lag_s,
                              {str(k): int(v) for k, v in counts.items()},
                              _item(last) if last is not None else None,
                              tuple((row.state or {}).get("tocsin_notes", ()))))
    return out


def list_items(session: Session, feed_id: str, *, statuses: Sequence[str] = (),
               limit: int = 50) -> list[FeedItem]:
    """A feed's items, newest first (of these statuses)."""
    stmt = (select(FeedItemRow).where(FeedItemRow.feed_id == feed_id)
            .order_by(FeedItemRow.id.desc()).limit(limit))
    if statuses:
        stmt = stmt.where(FeedItemRow.status.in_(list(statuses)))
    return [_item(row) for row in session.scalars(stmt)]
