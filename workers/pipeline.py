"""The live pipeline as plain functions: poll a feed, assess what it gave, hand on the alert.

The Celery tasks (``workers/pipeline_tasks.py``), ``tocsin feeds poll`` and the demo all call
these. Each step takes ids, loads, calls one job, saves:

- :func:`poll_feed` claims the feed (a lease: one poller at a time), polls its source outside
  any transaction (the source archives every payload with its checksum and provenance), and
  records the new source state and one item per new payload.
- :func:`assess_item` claims an item and runs ``tocsin assess`` on the archived bytes with
  the feed's reader options and breaks. A payload that cannot be read is quarantined with
  its reason; one that can be read but not assessed (no overlap with the region) is skipped
  with its reason; an older run than one already assessed is skipped without touching the
  event. The feed goes on either way.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy.orm import Session, sessionmaker

from alerts.errors import AlertError
from feeds.archive import Archive, ArchivedPayload
from feeds.errors import FeedError
from feeds.feed_config import FeedConfig, FeedsConfig, load_feed_config, to_read_options
from feeds.region import load_region_pack
from feeds.sources import make_source
from geo.classes import SeverityClasses
from geo.errors import GeoError
from geo.overlay import OverlayCache, OverlayOptions
from geo.region import RegionPack
from store import feeds_repo
from store.db import session_scope
from workers.assess_job import AssessOutcome, run_assess
from workers.settings import Settings

log = logging.getLogger("tocsin.pipeline")

NOTES_KEY = "tocsin_notes"  # in a feed's state: the latest notes of its polls
MAX_NOTES = 10
POLL_LEASE_S = 600.0  # longer than the slowest download a poll may make
ASSESS_STALE_S = 900.0  # an item "assessing" for longer lost its worker: assess it again


@dataclass
class PipelineContext:
    """What the pipeline steps need: settings, store, feeds, archive, region packs."""

    settings: Settings
    sessions: sessionmaker[Session]
    feeds: FeedsConfig
    archive: Archive
    http: httpx.Client | None = None
    _regions: dict[Path, RegionPack] = field(default_factory=dict)
    _caches: dict[Path, OverlayCache] = field(default_factory=dict)

    def region_for(self, feed: FeedConfig) -> tuple[Path, RegionPack, OverlayCache]:
        """The region pack a feed is assessed against (loaded once per process).

        Raises:
            FeedError: neither the feed nor the feeds file names a region pack.
        """
        manifest = feed.region or self.feeds.region
        if manifest is None:
            raise FeedError(self.feeds.path, f"feed {feed.id!r} has no region pack: set "
                            "`region` at the top of the file or in the feed")
        if manifest not in self._regions:
            self._regions[manifest] = load_region_pack(manifest)
            self._caches[manifest] = OverlayCache()
        return manifest, self._regions[manifest], self._caches[manifest]

    def close(self) -> None:
        """Close the shared HTTP client."""
        if self.http is not None:
            self.http.close()
            self.http = None


def open_pipeline(settings: Settings, sessions: sessionmaker[Session]) -> PipelineContext:
    """The pipeline of a deployment: its feeds file, archive and an HTTP client.

    Raises:
        FeedError: no feeds file is configured (``TOCSIN_FEEDS_CONFIG``), or it is invalid.
    """
    if settings.feeds_config is None:
        raise FeedError(Path("TOCSIN_FEEDS_CONFIG"), "no feeds file configured: set "
                        "TOCSIN_FEEDS_CONFIG to a feeds TOML (docs/feeds.md)")
    feeds = load_feed_config(settings.feeds_config)
    client = httpx.Client(follow_redirects=True, trust_env=False, timeout=30.0)
    return PipelineContext(settings, sessions, feeds, Archive(settings.resolved_archive_dir()),
                           client)


def feed_digest(feed: FeedConfig) -> str:
    """A fingerprint of a feed's configuration (changes are shown by ``feeds status``)."""
    return hashlib.sha256(repr(feed).encode("utf-8")).hexdigest()


def sync_feeds(ctx: PipelineContext, *, now: datetime) -> list[str]:
    """Give every enabled configured feed its row; the ids of the enabled feeds."""
    enabled = [f for f in ctx.feeds.feeds if f.enabled]
    with session_scope(ctx.sessions) as session:
        feeds_repo.sync_feeds(session, [(f.id, feed_digest(f)) for f in enabled], now=now)
    return [f.id for f in enabled]


def due_feeds(ctx: PipelineContext, *, now: datetime) -> list[str]:
    """Enabled feeds due for a poll now."""
    ids = sync_feeds(ctx, now=now)
    with session_scope(ctx.sessions) as session:
        return feeds_repo.due_feeds(session, now=now, feed_ids=ids)


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll of a feed gave."""

    feed_id: str
    item_ids: tuple[int, ...]
    repeats: int
    notes: tuple[str, ...]
    error: str | None
    next_poll_at: datetime


def poll_feed(ctx: PipelineContext, feed_id: str, *, now: datetime,
              force: bool = False) -> PollOutcome | None:
    """Poll one feed if it is due (or ``force``) and nobody else is polling it.

    Returns:
        What it gave (new items first recorded as ``fetched``), or None when not polled.
    """
    feed = ctx.feeds.get(feed_id)
    with session_scope(ctx.sessions) as session:
        feeds_repo.sync_feeds(session, [(feed.id, feed_digest(feed))], now=now)
        state = feeds_repo.claim_poll(session, feed_id, now=now, lease_s=POLL_LEASE_S,
                                      force=force)
    if state is None:
        return None
    result = make_source(feed, ctx.archive, client=ctx.http).poll(state, now=now)
    new_ids, repeats = [], 0
    with session_scope(ctx.sessions) as session:
        for payload in result.payloads:
            item_id, new = feeds_repo.add_item(
                session, feed_id=feed_id, checksum=payload.checksum,
                archive_path=str(payload.path), source_uri=payload.source_uri,
                original_name=payload.original_name, fetched_at=payload.fetched_at,
                issued_at=payload.issued_at)
            if new:
                new_ids.append(item_id)
            else:
                repeats += 1
        # What the source noticed (a format change, a file out of time order, a repeat) is
        # kept with the state so that `tocsin feeds status` shows it.
        notes = [*result.state.get(NOTES_KEY, []), *(f"{now:%Y-%m-%d %H:%M:%S} {n}"
                                                     for n in result.notes)][-MAX_NOTES:]
        feeds_repo.finish_poll(session, feed_id, state={**result.state, NOTES_KEY: notes},
                               next_poll_at=result.next_poll_at, at=now, error=result.error)
    if result.error:
        log.warning("feed poll failed", extra={"feed": feed_id, "error": result.error})
    return PollOutcome(feed_id, tuple(new_ids), repeats, tuple(result.notes), result.error,
                       result.next_poll_at)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What became of one feed item."""

    item_id: int
    feed_id: str
    status: str
    reason: str | None = None
    alert_identifier: str | None = None
    decision: str | None = None
    assessed: AssessOutcome | None = None


def _overlay_options(feed: FeedConfig) -> OverlayOptions | None:
    if feed.breaks is None:
        return None
    return OverlayOptions(classes=SeverityClasses(feed.breaks, units=feed.units or ""))


def assess_item(ctx: PipelineContext, item_id: int, *, now: datetime) -> ItemOutcome | None:
    """Assess one feed item if nobody else is; quarantine it when it cannot be read.

    Returns:
        The outcome, or None when the item is done already or another worker has it.
    """
    with session_scope(ctx.sessions) as session:
        item = feeds_repo.claim_item(session, item_id, now=now, stale_s=ASSESS_STALE_S)
    if item is None:
        return None
    feed = ctx.feeds.get(item.feed_id)
    started = time.perf_counter()
    try:
        manifest, region, cache = ctx.region_for(feed)
        outcome = run_assess(Path(item.archive_path), manifest, to_read_options(feed),
                             settings=ctx.settings, sessions=ctx.sessions, now=now,
                             region=region, cache=cache, overlay_options=_overlay_options(feed))
    except FeedError as exc:
        reason = f"cannot read {item.original_name}: {exc}"
        ctx.archive.quarantine(_payload(item), reason, at=now)
        return _finish(ctx, item, feeds_repo.ITEM_QUARANTINED, now, reason=reason,
                       elapsed_s=time.perf_counter() - started)
    except (GeoError, AlertError) as exc:
        return _finish(ctx, item, feeds_repo.ITEM_SKIPPED, now,
                       reason=f"cannot assess {item.original_name}: {exc}",
                       elapsed_s=time.perf_counter() - started)
    decision = outcome.decision
    status = feeds_repo.ITEM_ASSESSED if outcome.identifier or decision.action != "none" \
        or not _skipped(decision.reasons) else feeds_repo.ITEM_SKIPPED
    return _finish(ctx, item, status, now, reason="; ".join(decision.reasons) or None,
                   alert_identifier=outcome.identifier, decision=decision.action,
                   elapsed_s=time.perf_counter() - started, assessed=outcome)


def _skipped(reasons: tuple[str, ...]) -> bool:
    """Whether an assessment that decided nothing did so without looking (seen, older)."""
    return any(r.startswith(("this file was already ingested", "an older run")) for r in reasons)


def _finish(ctx: PipelineContext, item: feeds_repo.FeedItem, status: str, now: datetime, *,
            reason: str | None = None, alert_identifier: str | None = None,
            decision: str | None = None, elapsed_s: float | None = None,
            assessed: AssessOutcome | None = None) -> ItemOutcome:
    issued = assessed.hazard.issued_at if assessed is not None else None
    with session_scope(ctx.sessions) as session:
        feeds_repo.finish_item(session, item.id, status=status, at=now, reason=reason,
                               alert_identifier=alert_identifier, decision=decision,
                               assess_s=elapsed_s, issued_at=issued)
    level = logging.WARNING if status == feeds_repo.ITEM_QUARANTINED else logging.INFO
    log.log(level, "feed item %s", status, extra={"feed": item.feed_id, "item": item.id,
                                                  "alert": alert_identifier, "reason": reason})
    return ItemOutcome(item.id, item.feed_id, status, reason, alert_identifier, decision,
                       assessed)


def _payload(item: feeds_repo.FeedItem) -> ArchivedPayload:
    """The archived payload of an item, as the archive's quarantine takes it."""
    path = Path(item.archive_path)
    return ArchivedPayload(
        checksum=item.checksum, path=path, size_bytes=path.stat().st_size if path.exists()
        else 0, feed_id=item.feed_id, source_uri=item.source_uri, fetched_at=item.fetched_at,
        issued_at=item.issued_at, etag=None, last_modified=None, media_type=None,
        original_name=item.original_name, duplicate=False)


def pending_items(ctx: PipelineContext, *, now: datetime) -> list[int]:
    """Items not assessed yet (their message lost, or their worker gone)."""
    with session_scope(ctx.sessions) as session:
        return feeds_repo.pending_items(session, now=now, stale_s=ASSESS_STALE_S)
