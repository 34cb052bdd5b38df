"""What the demo says: each step's outcome, each agency's deliveries, each event's report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from feeds.feed_config import load_feed_config, to_read_options
from feeds.region import load_region_pack
from geo.overlay import OverlayCache
from store import outbox, repo
from store.db import session_scope
from store.feed_models import FeedItemRow
from store.models import DeliveryStatus
from workers.demo_receivers import Received
from workers.overlay_job import OverlayJob, run_overlay_job

_FINAL_ITEM = ("assessed", "skipped", "quarantined")


def _item(session: Session, feed_id: str, checksum: str) -> FeedItemRow | None:
    return session.scalar(select(FeedItemRow).where(FeedItemRow.feed_id == feed_id,
                                                    FeedItemRow.checksum == checksum))


def step_done(sessions: sessionmaker[Session], feed_id: str, checksum: str) -> bool:
    """Whether a dropped file was assessed and every delivery of its alert is settled."""
    with session_scope(sessions) as session:
        item = _item(session, feed_id, checksum)
        if item is None or item.status not in _FINAL_ITEM:
            return False
        if not item.alert_identifier:
            return True
        deliveries = outbox.list_outbox(session, alert_identifier=item.alert_identifier,
                                        limit=10_000)
        return all(d.status.is_final or d.status is DeliveryStatus.HELD for d in deliveries)


def describe_step(sessions: sessionmaker[Session], name: str, feed_id: str,
                  checksum: str) -> str:
    """One line: what the workers made of a dropped file."""
    with session_scope(sessions) as session:
        item = _item(session, feed_id, checksum)
        assert item is not None
        if not item.alert_identifier:
            return f"[bold]{name}[/bold]: {item.status}, no alert ({item.reason or 'nothing new'})"
        alert = repo.get_alert(session, item.alert_identifier)
        deliveries = outbox.list_outbox(session, alert_identifier=alert.identifier, limit=10_000)
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d.status.value] = counts.get(d.status.value, 0) + 1
    said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    took = f" in {item.assess_s:.1f} s" if item.assess_s else ""
    return (f"[bold]{name}[/bold]: {alert.msg_type.value}, level "
            f"{alert.level.value.upper()} (assessed{took}); {len(deliveries)} deliveries: "
            f"{said}")


def print_agencies(console: Console, sessions: sessionmaker[Session],
                   http: dict[str, Received], mails: dict[str, Received],
                   mqtt: dict[str, Received] | None) -> None:
    """Per agency: each message, on which channel, what the receiver got, and why."""
    got = {**http, **mails, **(mqtt or {})}
    with session_scope(sessions) as session:
        for agency in repo.list_agencies(session):
            console.print(f"\n[bold]{agency.name}[/bold] ({agency.agency_id})")
            rows = sorted(outbox.list_outbox(session, agency_id=agency.agency_id, limit=10_000),
                          key=lambda d: (d.created_at or d.history[0][1], d.channel.kind.value))
            if not rows:
                console.print("  nothing: no alert reached its area, hazards and level")
            matches = {(m.alert_identifier, m.subscription_id): m
                       for m in repo.list_matches(session, agency_id=agency.agency_id)}
            shown: set[str] = set()
            for d in rows:
                alert = repo.get_alert(session, d.alert_identifier)
                if alert.identifier not in shown:
                    shown.add(alert.identifier)
                    match = matches.get((alert.identifier, d.subscription_id))
                    people = f"{match.exposure.population:,.0f} people in its area" \
                        if match else ""
                    console.print(f"  {alert.msg_type.value} {alert.identifier}: level "
                                  f"{alert.level.value.upper()}; {people}", highlight=False)
                    for reason in alert.priority.reasons[:2]:
                        console.print(f"      why: {reason}", highlight=False, markup=False)
                received = got.get(d.idempotency_key)
                check = ""
                if received is not None and received.verified is not None:
                    check = ", signature verified" if received.verified else ", BAD SIGNATURE"
                arrived = f"received{check}" if received else d.receipt or ""
                console.print(f"    {d.channel.kind.value:<9} {d.status.value:<8} {arrived}",
                              highlight=False, markup=False)


def write_event_reports(sessions: sessionmaker[Session], manifest: Path, feeds_file: Path,
                        out: Path, console: Console) -> list[Path]:
    """The map and report of each event, from the latest feed file assessed for it."""
    feeds = load_feed_config(feeds_file)
    region = load_region_pack(manifest)
    cache = OverlayCache()
    latest: dict[str, tuple[FeedItemRow, str]] = {}
    with session_scope(sessions) as session:
        items = session.scalars(select(FeedItemRow).where(FeedItemRow.alert_identifier
                                                          .is_not(None))
                                .order_by(FeedItemRow.id)).all()
        for item in items:
            alert = repo.get_alert(session, item.alert_identifier)
            latest[alert.event_id] = (item, item.feed_id)
    reports = []
    for event_id, (item, feed_id) in latest.items():
        job = OverlayJob(hazard_path=Path(item.archive_path), out_dir=out / event_id,
                         region_manifest=manifest)
        outputs = run_overlay_job(job, to_read_options(feeds.get(feed_id)), cache=cache,
                                  region=region)
        reports.append(outputs.report_html)
        console.print(f"event {event_id}: map {outputs.map_png}, report {outputs.report_html}",
                      highlight=False)
    return reports
