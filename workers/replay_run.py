"""The two steps of a replay, as plain functions: scan one item, assess one item.

Both take a run directory's :class:`ReplayContext` and an item id; the Celery tasks
(``workers/replay_tasks.py``) and the in-process runner (``--workers 0``) call the same
functions. Scanning reads the item once to learn its times, kind, producer event id and
footprint (written to ``scan/<item>.json``); assessing runs ``run_assess`` "as of" the
item's own time, with the run's rule table, and records the item's outcome in the same
transaction as the alert it produced, so a replay killed at any point resumes without
losing or duplicating anything.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import shapely
from sqlalchemy.orm import Session, sessionmaker

from alerts.assess import summarize_hazard
from alerts.errors import AlertError
from alerts.priority import RuleTable
from feeds.archive import Archive
from feeds.cap_hazard import SEVERITY_CLASSES as CAP_SEVERITY_CLASSES
from feeds.cap_hazard import is_cap_file, read_cap_hazard
from feeds.errors import FeedError
from feeds.feed_config import FeedConfig, load_feed_config, to_read_options
from feeds.read import read_hazard
from geo.classes import SeverityClasses, classify, default_classes
from geo.errors import EmptyFootprintWarning, GeoError
from geo.footprints import build_footprints
from geo.hazard import HazardGrid
from geo.overlay import OverlayOptions
from store import feeds_repo
from store.db import make_engine, make_session_factory, session_scope
from workers.assess_job import AssessOutcome, _zone_lookup, run_assess
from workers.overlay_job import require_2d
from workers.pipeline import PipelineContext, _overlay_options
from workers.replay_manifest import (
    Manifest,
    read_manifest,
    run_rules,
    run_settings,
    run_store_url,
    write_atomic,
)
from workers.replay_plan import ItemScan, ReplayPlan

SCAN_DIR = "scan"
PLAN_FILE = "plan.json"
FINAL_STATUSES = frozenset({feeds_repo.ITEM_ASSESSED, feeds_repo.ITEM_SKIPPED,
                            feeds_repo.ITEM_QUARANTINED})
FAILED_PREFIX = "failed: "
"""Reason of an item put back to ``fetched`` after an unexpected error (re-run to resume)."""


@dataclass
class ReplayContext:
    """What a replay process needs: the run's manifest, store, feeds, rules and plan."""

    run_dir: Path
    manifest: Manifest
    pipeline: PipelineContext
    rules: RuleTable
    _plan: ReplayPlan | None = None
    _previous: dict[int, int | None] = field(default_factory=dict)

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The run store's sessions."""
        return self.pipeline.sessions

    def feed(self, feed_id: str) -> FeedConfig:
        """A feed of the run's feeds file."""
        return self.pipeline.feeds.get(feed_id)

    def previous(self, item_id: int) -> int | None:
        """The item assessed before ``item_id`` in its partition (None: it is first)."""
        if self._plan is None:
            self._plan = ReplayPlan.from_json((self.run_dir / PLAN_FILE).read_text("utf-8"))
            self._previous = self._plan.previous()
        return self._previous.get(item_id)

    def scan_of(self, item_id: int) -> ItemScan:
        """The item's scan (written by :func:`scan_item`)."""
        return ItemScan.from_json(scan_path(self.run_dir, item_id).read_text("utf-8"))

    def close(self) -> None:
        """Release the store's connections."""
        self.pipeline.close()
        self.sessions.kw["bind"].dispose()


def open_context(run_dir: Path) -> ReplayContext:
    """The context of a run directory prepared by ``tocsin replay`` (one per process)."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise FileNotFoundError(f"{run_dir}: no replay manifest (run.json)")
    settings = run_settings(run_dir, manifest)
    sessions = make_session_factory(make_engine(run_store_url(run_dir)))
    assert settings.feeds_config is not None
    pipeline = PipelineContext(settings, sessions, load_feed_config(settings.feeds_config),
                               Archive(run_dir / "archive"))
    return ReplayContext(run_dir, manifest, pipeline, run_rules(run_dir))


def scan_path(run_dir: Path, item_id: int) -> Path:
    """Where an item's scan is written."""
    return run_dir / SCAN_DIR / f"{item_id}.json"


def scan_item(ctx: ReplayContext, item_id: int) -> ItemScan:
    """Read one item and record its times, kind, producer event id and footprint.

    An unreadable item is recorded as such (``quarantined``), never raised: the replay
    goes on without it.
    """
    with session_scope(ctx.sessions) as session:
        item = feeds_repo.get_item(session, item_id)
    fallback = item.issued_at or item.fetched_at
    base = ItemScan(item_id, item.feed_id, item.checksum, replay_at=fallback.isoformat(),
                    time_from="source" if item.issued_at else "fetched")
    try:
        hazard, classes = _read(ctx, ctx.feed(item.feed_id), Path(item.archive_path))
    except FeedError as exc:
        scan = replace(base, quarantined=f"cannot read {item.original_name}: {exc}")
    except (GeoError, AlertError, KeyError):
        scan = base  # read but not assessable: the assessment says why, as live does
    else:
        replay_at = hazard.issued_at or fallback
        try:
            event_at = summarize_hazard(hazard, classes, 0).onset or hazard.issued_at \
                or replay_at
            footprint = _footprint(hazard, classes).wkt
        except (GeoError, AlertError):
            event_at, footprint = replay_at, "POLYGON EMPTY"
        scan = ItemScan(item_id, item.feed_id, item.checksum, replay_at=replay_at.isoformat(),
                        time_from="file" if hazard.issued_at else base.time_from,
                        event_at=event_at.isoformat(), kind=hazard.kind.value,
                        source_event_id=hazard.event_id, footprint_wkt=footprint)
    path = scan_path(ctx.run_dir, item_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, scan.to_json().encode("utf-8"))
    return scan


def _read(ctx: ReplayContext, feed: FeedConfig, path: Path) -> tuple[HazardGrid,
                                                                       SeverityClasses]:
    """The hazard as ``run_assess`` reads it, and the classes its overlay would use."""
    if is_cap_file(path):
        _manifest, region, _cache = ctx.pipeline.region_for(feed)
        hazard = read_cap_hazard(path, region.population.grid,
                                 geocode_lookup=_zone_lookup(region))
        return hazard, CAP_SEVERITY_CLASSES
    hazard = read_hazard(path, to_read_options(feed))
    require_2d(hazard)
    options = _overlay_options(feed)
    return hazard, (options.classes if options and options.classes
                    else default_classes(hazard.kind))


def _footprint(hazard: HazardGrid, classes: SeverityClasses) -> shapely.Geometry:
    """The footprint ``alerts.assess.footprint_lonlat`` gives for this hazard (EPSG:4326)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyFootprintWarning)
        frame = build_footprints(classify(hazard.values_2d(), classes.breaks), hazard.grid,
                                 classes, max_vertices=OverlayOptions().max_footprint_vertices)
    parts = frame[frame["class"] >= 1] if not frame.empty else frame
    if parts.empty:
        return shapely.Polygon()
    return shapely.union_all(parts.to_crs("EPSG:4326").geometry.to_numpy())


class NotYetError(RuntimeError):
    """The item before this one in its partition is not finished yet (try again soon)."""


def assess_one(ctx: ReplayContext, item_id: int) -> str:
    """Assess one planned item "as of" its own time; its status afterwards.

    Returns ``done`` without work when the item is final already (a resumed run).

    Raises:
        NotYetError: the previous item of its partition is not final: order first.
    """
    scan = ctx.scan_of(item_id)
    before = ctx.previous(item_id)
    with session_scope(ctx.sessions) as session:
        if before is not None and \
                feeds_repo.get_item(session, before).status not in FINAL_STATUSES:
            raise NotYetError(f"item {before} before {item_id} is not finished")
        item = feeds_repo.claim_item(session, item_id, now=datetime.now(UTC), stale_s=1e9)
    if item is None:
        return "done"
    now = scan.replay_time
    assert now is not None
    feed = ctx.feed(item.feed_id)
    started = time.perf_counter()

    def finish(session: Session, outcome: AssessOutcome) -> None:
        decision = outcome.decision
        status = feeds_repo.ITEM_ASSESSED if outcome.identifier or decision.action != "none" \
            or not decision.reasons[0].startswith(_SKIP_REASONS) else feeds_repo.ITEM_SKIPPED
        feeds_repo.finish_item(session, item_id, status=status, at=now,
                               reason="; ".join(decision.reasons) or None,
                               alert_identifier=outcome.identifier, decision=decision.action,
                               assess_s=time.perf_counter() - started,
                               issued_at=outcome.hazard.issued_at)

    try:
        manifest, region, cache = ctx.pipeline.region_for(feed)
        outcome = run_assess(Path(item.archive_path), manifest, to_read_options(feed),
                             settings=ctx.pipeline.settings, sessions=ctx.sessions, now=now,
                             region=region, cache=cache, overlay_options=_overlay_options(feed),
                             rules=ctx.rules, on_decided=finish)
    except FeedError as exc:
        return set_aside(ctx, item, now, f"cannot read {item.original_name}: {exc}")
    except (GeoError, AlertError) as exc:
        with session_scope(ctx.sessions) as session:
            feeds_repo.finish_item(session, item_id, status=feeds_repo.ITEM_SKIPPED, at=now,
                                   reason=f"cannot assess {item.original_name}: {exc}")
        return feeds_repo.ITEM_SKIPPED
    if outcome.decision.reasons[:1] == (_SEEN,):  # checked before the transaction
        with session_scope(ctx.sessions) as session:
            current = feeds_repo.get_item(session, item_id)
            if current.status not in FINAL_STATUSES:
                finish(session, outcome)
    with session_scope(ctx.sessions) as session:
        return feeds_repo.get_item(session, item_id).status


_SEEN = "this file was already ingested"
_SKIP_REASONS = (_SEEN, "an older run")


def set_aside(ctx: ReplayContext, item: feeds_repo.FeedItem, now: datetime,
               reason: str) -> str:
    """Quarantine an unreadable item in the run (its archive, its store), never the source."""
    path = Path(item.archive_path)
    if path.is_file():
        # Into the run's own archive first (the quarantine links objects of its archive).
        archive = ctx.pipeline.archive
        stored = archive.store(path, feed_id=item.feed_id, source_uri=item.source_uri,
                               fetched_at=item.fetched_at, original_name=item.original_name,
                               issued_at=item.issued_at)
        archive.quarantine(stored, reason, at=now)
    with session_scope(ctx.sessions) as session:
        feeds_repo.finish_item(session, item.id, status=feeds_repo.ITEM_QUARANTINED, at=now,
                               reason=reason)
    return feeds_repo.ITEM_QUARANTINED


def mark_failed(ctx: ReplayContext, item_id: int, error: BaseException) -> None:
    """Put an item that failed unexpectedly back to ``fetched``, with the error as reason."""
    from store.replay_repo import release_item

    with session_scope(ctx.sessions) as session:
        release_item(session, item_id, reason=f"{FAILED_PREFIX}{type(error).__name__}: "
                                              f"{error}"[:2000])
