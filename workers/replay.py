"""``tocsin replay``: re-run archived feed items over a time window into a run directory.

The steps, each resumable (re-running the same command continues where a killed one
stopped; see ``docs/replay.md``):

1. prepare: check the arguments, write (or check) the manifest, migrate the run store,
   snapshot the subscriptions, list the source's items into the run store;
2. scan: read every item once (times, kind, producer id, footprint) - a Celery group;
3. plan: the window, repeats, and the partitions that may run in parallel;
4. assess: one Celery chain per partition, all in one group, on ``--workers N`` worker
   processes started here on the run's private broker (``--workers 0``: in this process);
5. outputs and dispatch (none, sink or live).

Time for every item comes from the item, never from the clock, so the same inputs give
the same alerts and CAP bytes whatever the number of workers.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from feeds.feed_config import FeedConfig, FeedsConfig, load_feed_config
from store import feeds_repo, replay_repo
from store.db import make_engine, make_session_factory, session_scope, upgrade
from workers.replay_manifest import (
    DISPATCH_MODES,
    MANIFEST_FILE,
    RULES_COPY,
    Manifest,
    ReplayError,
    ReplayInputError,
    ReplayUsageError,
    check_resumable,
    choose_rules,
    file_sha256,
    pinned_settings,
    read_manifest,
    region_sha256,
    run_store_url,
    tocsin_version,
    write_atomic,
    write_manifest,
)
from workers.replay_plan import (
    STATUS_QUARANTINED,
    ItemScan,
    ReplayPlan,
    describe,
    plan_replay,
)
from workers.replay_pool import Progress, ReplayPool, start_workers
from workers.replay_run import PLAN_FILE, SCAN_DIR, open_context, scan_path, set_aside
from workers.replay_sources import detect_source, discover, register_items
from workers.settings import Settings

LOCK_FILE = "run.lock"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What ``tocsin replay`` was asked to do.

    Attributes:
        source: the ingest archive, a directory of feed files, or a STAC catalog.
        since: window start (inclusive), on each item's own time.
        until: window end (exclusive).
        feeds_config: the feeds TOML (reader options, kinds, breaks, region packs).
        feed_ids: the feeds to replay; empty: every enabled feed.
        rules: ``--rules``: a shipped version or a rules TOML; None: the default table.
        dispatch: ``none``, ``sink`` or ``live``.
        store_url: the store whose subscriptions are snapshotted (default: the live one).
        workers: worker processes to start; 0: assess in this process.
        broker_url: an external broker for the workers; None: the run's own.
    """

    source: Path
    since: datetime
    until: datetime
    feeds_config: Path
    feed_ids: tuple[str, ...] = ()
    rules: str | None = None
    dispatch: str = "none"
    store_url: str | None = None
    workers: int = 1
    broker_url: str | None = None


@dataclass
class ReplayReport:
    """What a replay did (the end summary; also ``outputs/summary.json``)."""

    run_id: str
    run_dir: Path
    resumed: bool
    statuses: Counter[str]
    plan: dict[str, int]
    alerts: Counter[str]
    outputs: dict[str, Path]
    dispatched: Counter[str]
    failed: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    assess_s: float = 0.0
    assessed: int = 0

    @property
    def items_per_min(self) -> float:
        """Items assessed per minute of the assessment phase (this invocation)."""
        return 60.0 * self.assessed / self.assess_s if self.assess_s > 0 else 0.0


def run_replay(request: ReplayRequest, run_dir: Path, *, live: Settings,
               progress: Progress | None = None) -> ReplayReport:
    """Run (or resume) a replay into ``run_dir``.

    Args:
        request: the command's arguments.
        run_dir: the run directory (created; an existing one is resumed).
        live: the deployment's settings: pinned assessment settings, the live store to
            snapshot, and the channels for ``--dispatch live``.
        progress: called with ``(phase, done, total)``.

    Raises:
        ReplayUsageError: bad arguments, or ``run_dir`` holds another replay.
        ReplayInputError, FeedError: the source, feeds file or a region pack is unreadable.
    """
    progress = progress or (lambda _phase, _done, _total: None)
    run_dir = run_dir.resolve()
    feeds_config, feeds = _feeds(request)
    wanted = _manifest(request, feeds_config, feeds, live)
    _check_out(run_dir)
    with _locked(run_dir):
        existing = read_manifest(run_dir)
        if existing is not None:
            check_resumable(existing, wanted, run_dir)
            wanted = existing
        else:
            wanted = replace(wanted, run_id=_new_run_id(),
                             created_at=datetime.now(UTC).isoformat())
            write_manifest(run_dir, wanted, choose_rules(request.rules))
        url = run_store_url(run_dir)
        upgrade(url)
        engine = make_engine(url)
        try:
            sessions = make_session_factory(engine)
            wanted = _snapshot(run_dir, wanted, sessions, request.store_url or
                               live.resolved_database_url(), request.rules)
            report = _run(request, run_dir, wanted, sessions, feeds, live, progress,
                          resumed=existing is not None)
        finally:
            engine.dispose()
    return report


def _new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _feeds(request: ReplayRequest) -> tuple[FeedsConfig, list[FeedConfig]]:
    if request.dispatch not in DISPATCH_MODES:
        raise ReplayUsageError(f"--dispatch {request.dispatch!r}: expected one of "
                               f"{', '.join(DISPATCH_MODES)}")
    if request.since >= request.until:
        raise ReplayUsageError(f"--from {request.since.isoformat()} must be before --to "
                               f"{request.until.isoformat()}")
    if request.workers < 0:
        raise ReplayUsageError(f"--workers {request.workers}: expected 0 or more")
    if not request.feeds_config.is_file():
        raise ReplayInputError(f"--feeds-config {request.feeds_config}: no such file")
    config = load_feed_config(request.feeds_config)
    known = [f.id for f in config.feeds]
    unknown = [f for f in request.feed_ids if f not in known]
    if unknown:
        raise ReplayUsageError(f"--feeds: unknown feed {', '.join(map(repr, unknown))} in "
                               f"{request.feeds_config} (feeds there: {', '.join(known)})")
    feeds = [config.get(f) for f in dict.fromkeys(request.feed_ids)] if request.feed_ids \
        else [f for f in config.feeds if f.enabled]
    if not feeds:
        raise ReplayUsageError(f"{request.feeds_config}: no enabled feed to replay")
    return config, feeds


def _manifest(request: ReplayRequest, config: FeedsConfig, feeds: list[FeedConfig],
              live: Settings) -> Manifest:
    kind = detect_source(request.source)
    rules = choose_rules(request.rules)
    regions = []
    for feed in feeds:
        region = feed.region or config.region
        if region is None:
            raise ReplayUsageError(f"{config.path}: feed {feed.id!r} has no region pack "
                                   "(set `region` at the top of the file or in the feed)")
        entry = {"path": str(region.resolve()), "sha256": region_sha256(region)}
        if entry not in regions:
            regions.append(entry)
    return Manifest(
        source={"kind": kind, "path": str(request.source.resolve())},
        window={"from": request.since.isoformat(), "to": request.until.isoformat()},
        feeds=[f.id for f in feeds],
        feeds_config={"path": str(config.path.resolve()),
                      "sha256": file_sha256(config.path)},
        rules={"version": rules.version, "sha256": rules.sha256, "origin": rules.origin},
        regions=regions, settings=pinned_settings(live), dispatch=request.dispatch,
        tocsin_version=tocsin_version())


def _check_out(run_dir: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding things other than a replay."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ReplayUsageError(f"--out {run_dir}: a file, not a run folder")
    if not run_dir.is_dir() or (run_dir / MANIFEST_FILE).exists():
        return
    # What a run killed before writing its manifest leaves: the lock, the rules copy.
    foreign = sorted(p.name for p in run_dir.iterdir()
                     if p.name not in (LOCK_FILE, RULES_COPY)
                     and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ReplayUsageError(f"--out {run_dir}: a folder that holds no replay (no "
                               f"{MANIFEST_FILE}) and is not empty ({shown}); give a new or "
                               "empty folder")


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock: one replay command per run at a time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ReplayUsageError(f"{run_dir}: another replay is running on it") from exc
        yield
    finally:
        os.close(fd)


def _snapshot(run_dir: Path, manifest: Manifest, sessions: sessionmaker[Session],
              source_url: str, rules_spec: str | None) -> Manifest:
    """Copy the subscriptions into the run store once; the manifest with their checksum."""
    if manifest.subscriptions:
        return manifest
    with session_scope(sessions) as target:
        copied = None
        if not replay_repo.has_subscriptions(target):
            copied = _copy_from(source_url, target)
        digest = replay_repo.subscriptions_sha256(target)
        count = replay_repo.subscription_count(target)
    updated = replace(manifest, subscriptions={
        "sha256": digest, "count": count, "from": _redact(source_url),
        "note": copied or "snapshot taken"})
    write_manifest(run_dir, updated, choose_rules(rules_spec))
    return updated


def _copy_from(url: str, target: Session) -> str:
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return "no live store: no subscriptions"
    engine = make_engine(url)
    try:
        with session_scope(engine) as source:
            if not replay_repo.has_tables(source):
                return "the live store has no subscription tables: no subscriptions"
            replay_repo.copy_subscriptions(source, target)
    finally:
        engine.dispose()
    return "snapshot taken"


def _redact(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _run(request: ReplayRequest, run_dir: Path, manifest: Manifest,
         sessions: sessionmaker[Session], feeds: list[FeedConfig], live: Settings,
         progress: Progress, *, resumed: bool) -> ReplayReport:
    notes: list[str] = []
    with session_scope(sessions) as session:
        reset = replay_repo.reset_interrupted(session)
        failed = replay_repo.retry_failed(session)
    if reset:
        notes.append(f"{reset} item(s) interrupted by an earlier run are assessed again")
    if failed:
        notes.append(f"{failed} item(s) that failed in an earlier run are assessed again")
    for stale in (run_dir / SCAN_DIR).glob("*.failed"):
        stale.unlink()
    plan_path = run_dir / PLAN_FILE
    if not plan_path.exists():
        items, found_notes = discover(manifest.source["kind"], Path(manifest.source["path"]),
                                      feeds)
        notes += found_notes
        register_items(sessions, items)
    with session_scope(sessions) as session:
        item_ids = sorted(replay_repo.item_statuses(session))
    with start_workers(request.workers, request.broker_url, run_dir, manifest) as pool:
        if not plan_path.exists():
            _scan_all(pool, run_dir, item_ids, progress)
            plan = _make_plan(run_dir, manifest, sessions, item_ids)
        else:
            plan = ReplayPlan.from_json(plan_path.read_text("utf-8"))
        started = time.perf_counter()
        assessed = _assess_all(pool, sessions, plan, progress)
        assess_s = time.perf_counter() - started
    return _finish(request, run_dir, manifest, sessions, plan, live, notes, resumed,
                   assess_s, assessed)


def _scan_all(pool: ReplayPool, run_dir: Path, item_ids: list[int], progress: Progress) -> None:
    from workers.replay_tasks import scan_failed_path

    todo = [i for i in item_ids if not scan_path(run_dir, i).exists()]
    total = len(item_ids)

    def done() -> int:
        return sum(scan_path(run_dir, i).exists() or scan_failed_path(run_dir, i).exists()
                   for i in item_ids)

    def resend() -> None:
        pool.scan([i for i in item_ids if not scan_path(run_dir, i).exists()
                   and not scan_failed_path(run_dir, i).exists()])

    pool.scan(todo)
    pool.wait(lambda: (done(), total), "scanning", progress, resend)
    failed = [i for i in item_ids if scan_failed_path(run_dir, i).exists()]
    if failed:
        reasons = "; ".join(f"item {i}: {scan_failed_path(run_dir, i).read_text('utf-8')}"
                            for i in failed[:5])
        raise ReplayError(f"{len(failed)} item(s) could not be scanned ({reasons}); run the "
                          "same command again to resume")


def _make_plan(run_dir: Path, manifest: Manifest, sessions: sessionmaker[Session],
               item_ids: list[int]) -> ReplayPlan:
    scans = [ItemScan.from_json(scan_path(run_dir, i).read_text("utf-8")) for i in item_ids]
    window = timedelta(hours=float(manifest.settings["event_window_h"]))
    plan = plan_replay(scans, since=manifest.since, until=manifest.until, window=window)
    with session_scope(sessions) as session:
        replay_repo.finish_items(session, {k: v for k, v in plan.excluded.items()
                                           if v[0] != STATUS_QUARANTINED})
    quarantined = {k: v[1] for k, v in plan.excluded.items() if v[0] == STATUS_QUARANTINED}
    if quarantined:
        ctx = open_context(run_dir)
        try:
            for item_id, reason in sorted(quarantined.items()):
                with session_scope(sessions) as session:
                    item = feeds_repo.get_item(session, item_id)
                scan = ItemScan.from_json(scan_path(run_dir, item_id).read_text("utf-8"))
                set_aside(ctx, item, scan.replay_time or item.fetched_at, reason)
        finally:
            ctx.close()
    write_atomic(run_dir / PLAN_FILE, plan.to_json().encode("utf-8"))
    return plan


def _assess_all(pool: ReplayPool, sessions: sessionmaker[Session], plan: ReplayPlan,
                progress: Progress) -> int:
    from workers.replay_run import FINAL_STATUSES

    planned = [i for p in plan.partitions for i in p]
    with session_scope(sessions) as session:
        statuses = replay_repo.item_statuses(session)
    todo = [[i for i in p if statuses.get(i) not in FINAL_STATUSES] for p in plan.partitions]
    before = sum(statuses.get(i) in FINAL_STATUSES for i in planned)

    def done() -> tuple[int, int]:
        with session_scope(sessions) as session:
            counts = replay_repo.status_counts(session, planned)
            if replay_repo.failed_items(session):
                return -1, len(planned)
        return sum(counts[s] for s in FINAL_STATUSES), len(planned)

    def resend() -> None:
        with session_scope(sessions) as session:
            now = replay_repo.item_statuses(session)
        # A partition with an item being assessed has a live chain (a long item, not a
        # lost message): sending it again would only add a chain that waits on it.
        pool.assess([rest for p in plan.partitions
                     if (rest := [i for i in p if now.get(i) not in FINAL_STATUSES])
                     and not any(now.get(i) == feeds_repo.ITEM_ASSESSING for i in rest)])

    pool.assess([p for p in todo if p])
    pool.wait(done, "assessing", progress, resend)
    with session_scope(sessions) as session:
        counts = replay_repo.status_counts(session, planned)
    return sum(counts[s] for s in FINAL_STATUSES) - before


def _finish(request: ReplayRequest, run_dir: Path, manifest: Manifest,
            sessions: sessionmaker[Session], plan: ReplayPlan, live: Settings,
            notes: list[str], resumed: bool, assess_s: float, assessed: int) -> ReplayReport:
    import json

    from store import repo
    from workers.replay_dispatch import dispatch_run
    from workers.replay_outputs import OUTPUTS_DIR, write_outputs

    with session_scope(sessions) as session:
        failed = replay_repo.failed_items(session)
        statuses = replay_repo.status_counts(session)
    dispatched: Counter[str] = Counter()
    if not failed:
        dispatched = dispatch_run(manifest.dispatch, run_dir, sessions, live)
    with session_scope(sessions) as session:
        outputs = write_outputs(session, run_dir)
        alerts = Counter(a.msg_type.value for a in repo.list_alerts(session))
    report = ReplayReport(manifest.run_id, run_dir, resumed, statuses, describe(plan), alerts,
                          outputs, dispatched, failed, notes, assess_s, assessed)
    summary: dict[str, Any] = {
        "run_id": report.run_id, "resumed": resumed, "items": dict(sorted(statuses.items())),
        "plan": report.plan, "messages": dict(sorted(alerts.items())),
        "dispatch": manifest.dispatch, "dispatched": dict(sorted(dispatched.items())),
        "failed": [{"item": i, "reason": r} for i, r in failed], "notes": notes,
        "workers": request.workers, "assess_s": round(assess_s, 3), "assessed": assessed,
        "items_per_min": round(report.items_per_min, 2)}
    path = run_dir / OUTPUTS_DIR / "summary.json"
    write_atomic(path, (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    report.outputs["summary.json"] = path
    return report
