"""``tocsin assess``: one hazard file through overlay, assessment, matching and the store.

Reads the hazard (a raster feed, or an external CAP 1.2 alert whose areas become a
categorical hazard), overlays it on the region pack, decides whether the event is new, changed
materially, or over (Alert, Update, Cancel, or nothing), composes and renders the CAP
message, matches the subscriptions, and stores the message with one delivery per matched
subscription and channel in one transaction (the outbox the dispatch step reads).
Re-ingesting the same file changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session, sessionmaker

from alerts.assess import footprint_lonlat, max_class_of, summarize_exposure, summarize_hazard
from alerts.cap import render_cap
from alerts.compose import compose_alert
from alerts.delivery_rules import plan_delivery
from alerts.events import Decision, EventRecord, decide, match_event, new_event_id
from alerts.matching import build_index, exposure_for, match
from alerts.model import (
    AlertStatus,
    ChannelAddress,
    ChannelKind,
    ExposureSummary,
    HazardSummary,
    Level,
    MsgType,
    Priority,
    Reference,
    Subscription,
)
from alerts.priority import RuleTable, prioritize
from alerts.text import MessageText, render_text
from feeds.cap_hazard import SEVERITY_CLASSES as CAP_SEVERITY_CLASSES
from feeds.cap_hazard import is_cancel, is_cap_file, read_cap_hazard
from feeds.read import read_hazard
from feeds.region import load_region_pack
from geo.hazard import HazardGrid
from geo.maps import render_overlay_map
from geo.overlay import OverlayCache, OverlayOptions, OverlayResult, run_overlay
from geo.region import RegionPack
from geo.zones import rasterize_lonlat
from store import repo
from store.db import session_scope
from store.models import (
    AlertMatch,
    AlertRecord,
    DeliveryStatus,
    PlannedDelivery,
    StoredEvent,
)
from workers.overlay_job import require_2d
from workers.settings import Settings

_MSG_TYPES = {"alert": MsgType.ALERT, "update": MsgType.UPDATE, "cancel": MsgType.CANCEL}
_NEXT_STATUS = {MsgType.ALERT: AlertStatus.ISSUED, MsgType.UPDATE: AlertStatus.UPDATED,
                MsgType.CANCEL: AlertStatus.CANCELLED}


@dataclass(frozen=True, slots=True)
class MatchedSubscriber:
    """A subscription the alert reaches, with the figures inside its own area."""

    subscription: Subscription
    max_class: int
    exposure: ExposureSummary


@dataclass(frozen=True, slots=True)
class AssessOutcome:
    """What one assessment decided and stored.

    Attributes:
        decision: alert, update, cancel or none, with the reasons.
        hazard: the hazard as read.
        priority: the event's priority (``None`` when the file was already ingested).
        event_id: the event the file belongs to (``None`` when nothing was sent).
        identifier: the CAP identifier of the stored message, if one was issued.
        matched: the subscriptions reached, with their own figures.
        deliveries: number of deliveries written to the outbox.
    """

    decision: Decision
    hazard: HazardGrid
    priority: Priority | None = None
    event_id: str | None = None
    identifier: str | None = None
    matched: tuple[MatchedSubscriber, ...] = field(default=())
    deliveries: int = 0


def run_assess(
    hazard_path: Path,
    region_manifest: Path,
    read_options: object | None,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    now: datetime,
    region: RegionPack | None = None,
    cache: OverlayCache | None = None,
    overlay_options: OverlayOptions | None = None,
    rules: RuleTable | None = None,
    on_decided: Callable[[Session, AssessOutcome], None] | None = None,
) -> AssessOutcome:
    """Assess one hazard file and store what it warrants.

    Args:
        hazard_path: the feed file.
        region_manifest: the region pack it is overlaid on.
        read_options: :class:`feeds.base.ReadOptions` (variable, time, member...).
        settings: sender, languages, lifetimes and thresholds.
        sessions: the store's session factory.
        now: the time of this assessment (the clock is read by the caller).
        region: the region pack, already loaded (else loaded from ``region_manifest``).
        cache: per-pack work shared across assessments.
        overlay_options: class breaks and overlay choices for a raster feed (a feed's
            configured ``breaks``); CAP alerts always use their own severity classes.
        rules: the priority rule table; ``None`` takes the shipped default (a replay passes
            the version it back-tests).
        on_decided: called with the outcome inside the transaction that stores it, so that
            the caller's own record of the decision (a replay's item progress) commits or
            rolls back with the alert.

    Raises:
        FeedError, GeoError, AlertError: the inputs cannot be read, overlaid or assessed;
            nothing is stored then.
    """
    region = region or load_region_pack(region_manifest)
    options = overlay_options
    if is_cap_file(hazard_path):
        hazard = read_cap_hazard(hazard_path, region.population.grid,
                                 geocode_lookup=_zone_lookup(region))
        options = OverlayOptions(classes=CAP_SEVERITY_CLASSES)
    else:
        hazard = read_hazard(hazard_path, read_options)  # type: ignore[arg-type]
        require_2d(hazard)
    if _already_ingested(sessions, hazard, now):
        return AssessOutcome(Decision("none", (_SEEN,)), hazard)
    cache = cache if cache is not None else OverlayCache()
    result = run_overlay(hazard, region, options, cache)
    hs = summarize_hazard(hazard, result.classes, max_class_of(result))
    exposure = summarize_exposure(result)
    private = [group.value for group, layer in region.groups.items() if layer.is_registry]
    priority = prioritize(hs, exposure, now=now, private_groups=private,
                          min_public_count=region.min_public_count, rules=rules)
    footprint = footprint_lonlat(result)
    at = hs.onset or hs.issued_at or now
    window = timedelta(hours=settings.event_window_h)
    def decided(session: Session, outcome: AssessOutcome) -> AssessOutcome:
        if on_decided is not None:
            on_decided(session, outcome)
        return outcome

    with session_scope(sessions) as session:
        # The ingest is recorded in the same transaction as what it produces: if anything
        # below fails, the file is not marked as seen and a retry assesses it again.
        if not repo.record_ingest(session, hazard.checksum, hazard.source, fetched_at=now,
                                  issued_at=hazard.issued_at):
            return decided(session, AssessOutcome(Decision("none", (_SEEN,)), hazard))
        records = [_record(session, e) for e in repo.open_events(session, hs.kind, at - window)]
        event = match_event(hs.kind, hs.source_event_id, footprint, at, records, window)
        stored = repo.get_event(session, event.event_id) if event is not None else None
        if _older_run(stored, hazard.issued_at):
            # A run issued before the one already assessed (it arrived late): it must not
            # overwrite the newer picture, so nothing of the event changes.
            assert stored is not None and stored.last_issued_at is not None
            return decided(session, AssessOutcome(Decision("none", (
                f"an older run (issued {hazard.issued_at:%Y-%m-%d %H:%M} UTC) than the one "
                f"already assessed (issued {stored.last_issued_at:%Y-%m-%d %H:%M} UTC)",)),
                hazard, priority, event.event_id if event else None))
        # An external CAP Cancel ends its event whatever its areas still show.
        ended = is_cancel(hazard)
        decision = decide(event, hazard.checksum, Level.GREEN if ended else priority.level,
                          0.0 if ended else exposure.population,
                          0.0 if ended else exposure.area_km2,
                          material_share=settings.material_change_share,
                          cancel_below_level=settings.cancel_below_level)
        if decision.action == "none":
            if event is not None:
                # Still the same event: keep it open (last seen now) for the next runs.
                assert stored is not None
                repo.save_event(session, replace(
                    stored, last_seen=max(at, stored.last_seen), last_checksum=hazard.checksum,
                    last_issued_at=_latest(stored.last_issued_at, hazard.issued_at)))
            return decided(session, AssessOutcome(decision, hazard, priority,
                                                  event.event_id if event else None))
        msg_type = _MSG_TYPES[decision.action]
        event_id = event.event_id if event else new_event_id(hs.kind, at, footprint)
        area = footprint if not footprint.is_empty else _last_footprint(event)
        composed = compose_alert(
            event_id=event_id, sequence=len(event.messages) + 1 if event else 1,
            sender=settings.sender, sent=now, msg_type=msg_type, hazard=hs, exposure=exposure,
            priority=priority, footprint_lonlat=area, area_name=f"{region.name}",
            languages=settings.languages,
            expires=now + timedelta(hours=settings.alert_lifetime_h),
            references=_references(session, event),
            map_png=_map(result, region),
            note="; ".join(decision.reasons) or None,
            private_groups=private, min_public_count=region.min_public_count,
        )
        cap_bytes = render_cap(composed.event)
        matched = _match(session, result, region, cache, hs.kind, priority.level, msg_type,
                         event)
        expires = now + timedelta(hours=settings.alert_lifetime_h)
        texts = _texts_for(composed.texts, matched, hs, exposure, priority, msg_type,
                           area_name=region.name, expires=expires)
        record = AlertRecord(
            identifier=composed.event.identifier, event_id=event_id, sender=settings.sender,
            msg_type=msg_type, priority=priority, sent=now, expires=expires,
            cap_bytes=cap_bytes, texts=texts,
        )
        repo.save_event(session, StoredEvent(
            event_id=event_id, kind=hs.kind, first_seen=event.first_seen if event else at,
            last_seen=at, source_event_id=hs.source_event_id, footprint=area,
            status=_NEXT_STATUS[msg_type], last_level=priority.level, last_exposure=exposure,
            last_checksum=hazard.checksum,
            last_issued_at=_latest(stored.last_issued_at if stored else None, hazard.issued_at),
        ))
        planned = _plan_deliveries(matched, priority.level, msg_type, now,
                                   public_feed=settings.cap_feed_public)
        deliveries = repo.save_alert_with_deliveries(session, record, planned)
        repo.save_matches(session, [
            AlertMatch(record.identifier, m.subscription.subscription_id,
                       m.subscription.agency_id, priority.level, m.max_class, m.exposure)
            for m in matched
        ])
        return decided(session, AssessOutcome(decision, hazard, priority, event_id,
                                              record.identifier, tuple(matched),
                                              len(deliveries)))


_SEEN = "this file was already ingested"


def _older_run(stored: StoredEvent | None, issued_at: datetime | None) -> bool:
    """Whether a run issued at ``issued_at`` is older than the event's latest assessed run."""
    return (stored is not None and stored.last_issued_at is not None and issued_at is not None
            and issued_at < stored.last_issued_at)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two optional times."""
    if a is None or b is None:
        return a or b
    return max(a, b)

PUBLIC_FEED = ChannelAddress(ChannelKind.CAP_FEED, "public")
"""Every alert also goes to the public CAP feed, through the outbox like any delivery."""


def _plan_deliveries(matched: list[MatchedSubscriber], level: Level, msg_type: MsgType,
                     now: datetime, *, public_feed: bool) -> list[PlannedDelivery]:
    """One delivery per matched subscription and channel, held or deferred by its rules."""
    planned = [PlannedDelivery("public", PUBLIC_FEED)] if public_feed else []
    for m in matched:
        sub = m.subscription
        plan = plan_delivery(sub, level, msg_type, now)
        status = DeliveryStatus.HELD if plan.held_for_digest else DeliveryStatus.PENDING
        planned += [PlannedDelivery(sub.subscription_id, channel, agency_id=sub.agency_id,
                                    language=sub.languages[0], status=status,
                                    not_before=plan.not_before, reason=plan.reason)
                    for channel in dict.fromkeys(sub.channels)]
    return planned


def _texts_for(composed: tuple[MessageText, ...], matched: list[MatchedSubscriber],
               hazard: HazardSummary, exposure: ExposureSummary, priority: Priority,
               msg_type: MsgType, *, area_name: str, expires: datetime
               ) -> tuple[MessageText, ...]:
    """The deployment's languages plus every language a matched subscriber reads first."""
    texts = list(composed)
    have = {t.requested_language for t in texts}
    for language in dict.fromkeys(m.subscription.languages[0] for m in matched):
        if language not in have:
            texts.append(render_text(hazard, exposure, priority, language=language,
                                     area_name=area_name, msg_type=msg_type,
                                     expires=expires))
            have.add(language)
    return tuple(texts)


def _already_ingested(sessions: sessionmaker[Session], hazard: HazardGrid, now: datetime) -> bool:
    """Whether the file was ingested before; looks only (the check is rolled back)."""
    with sessions() as session:
        seen = not repo.record_ingest(session, hazard.checksum, hazard.source, fetched_at=now,
                                      issued_at=hazard.issued_at)
        session.rollback()
    return seen


def _references(session: Session, event: EventRecord | None) -> list[Reference]:
    """Every earlier message of the event, with the sender it was sent under."""
    if event is None:
        return []
    sent = sorted(repo.list_alerts(session, event_id=event.event_id), key=lambda a: a.sent)
    return [Reference(a.sender, a.identifier, a.sent) for a in sent]


def _zone_lookup(region: RegionPack) -> dict[str, BaseGeometry]:
    """Zone geometries in EPSG:4326 by zone id: the geocodes a CAP message may use."""
    if region.zones is None:
        return {}
    lonlat = region.zones.to_crs("EPSG:4326")
    return dict(zip(lonlat["zone_id"], lonlat.geometry, strict=True))


def _record(session: Session, stored: StoredEvent) -> EventRecord:
    """The event as the decision rules see it, with every message sent so far."""
    messages = tuple((a.identifier, a.sent) for a in sorted(
        repo.list_alerts(session, event_id=stored.event_id), key=lambda a: a.sent))
    last = stored.last_exposure
    return EventRecord(
        event_id=stored.event_id, kind=stored.kind, source_event_id=stored.source_event_id,
        footprint_wkt=stored.footprint.wkt if stored.footprint is not None else "POLYGON EMPTY",
        first_seen=stored.first_seen, last_seen=stored.last_seen,
        last_level=stored.last_level or Level.GREEN,
        last_population=last.population if last else 0.0,
        last_area_km2=last.area_km2 if last else 0.0,
        last_checksum=stored.last_checksum or "",
        status=stored.status or AlertStatus.ISSUED, messages=messages,
    )


def _last_footprint(event: EventRecord | None) -> BaseGeometry:
    if event is None:
        return shapely.Polygon()
    return event.footprint


def _map(result: OverlayResult, region: RegionPack) -> bytes:
    return render_overlay_map(
        result.footprint, result.classes, title=f"Alert area over {region.name}",
        zones=region.zones, facilities=region.facilities,
        extent=region.population.grid.bounds, dpi=80,
    )


def _match(
    session: Session,
    result: OverlayResult,
    region: RegionPack,
    cache: OverlayCache,
    kind: str,
    level: Level,
    msg_type: MsgType,
    event: EventRecord | None,
) -> list[MatchedSubscriber]:
    """Subscriptions reached: by area and kind, at or under the alert's level.

    A Cancel goes to the same audience as the messages it closes: subscribers whose
    minimum level the last message reached.
    """
    subscriptions = repo.list_subscriptions(session)
    if not subscriptions:
        return []
    zone_raster = cache.zone_rasters[region.population.grid]
    known = set(zone_raster.zone_ids)
    usable = [s for s in subscriptions if set(s.zone_codes) <= known]
    gate = event.last_level if msg_type is MsgType.CANCEL and event is not None else level
    wanted = [s for s in usable if gate.at_least(s.min_level)]
    if not wanted:
        return []
    index = build_index(wanted, result.population_grid, zone_raster=zone_raster)
    class_index = result.class_index
    if msg_type is MsgType.CANCEL:
        class_index = _footprint_cells(event, result)
    found = match(index, class_index, hazard_kind=kind)
    by_id = {s.subscription_id: s for s in wanted}
    return [
        MatchedSubscriber(by_id[sid], int(k),
                          exposure_for(by_id[sid], result, zone_raster, region=region))
        for sid, k in zip(found.subscription_ids, found.max_class.tolist(), strict=True)
    ]


def _footprint_cells(event: EventRecord | None, result: OverlayResult) -> np.ndarray:
    """Cells of the last footprint sent, as class 1, for matching a Cancel's audience."""
    grid = result.population_grid
    if event is None or event.footprint.is_empty:
        return np.zeros(grid.shape, dtype=np.uint8)
    return rasterize_lonlat(event.footprint, grid, all_touched=True).astype(np.uint8)

