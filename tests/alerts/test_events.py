"""Event identity across feed runs and the decision of what to send (PAGER's shouldAlert).

The unit footprints are lon/lat boxes; ``BOX`` is (10.0, 47.0)-(10.2, 47.2).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from shapely.geometry import Polygon, box

from alerts.errors import AlertError
from alerts.events import EventRecord, decide, match_event, new_event_id
from alerts.model import AlertStatus, Level

T0 = datetime(2024, 5, 14, 6, 0, tzinfo=UTC)
BOX = box(10.0, 47.0, 10.2, 47.2)
WINDOW = timedelta(hours=48)


def _event(event_id: str = "flood_depth-1", **changes: object) -> EventRecord:
    base = EventRecord(
        event_id=event_id, kind="flood_depth", source_event_id=None, footprint_wkt=BOX.wkt,
        first_seen=T0, last_seen=T0, last_level=Level.YELLOW, last_population=1000.0,
        last_area_km2=10.0, last_checksum="sha256:old", status=AlertStatus.ISSUED,
        messages=(("msg-1", T0),),
    )
    return replace(base, **changes)


# --- decide: every rule, in order ----------------------------------------------------------

OPEN = _event()
CANCELLED = _event(status=AlertStatus.CANCELLED)
EXPIRED = _event(status=AlertStatus.EXPIRED)
YELLOW, ORANGE, GREEN = Level.YELLOW, Level.ORANGE, Level.GREEN


@pytest.mark.parametrize(
    ("event", "checksum", "level", "population", "area", "options", "action", "reason"),
    [
        # 1. the same file again: nothing, whatever it says
        (OPEN, "sha256:old", YELLOW, 1000.0, 10.0, {}, "none", "already ingested"),
        (OPEN, "sha256:old", Level.RED, 9e6, 99.0, {}, "none", "already ingested"),
        (CANCELLED, "sha256:old", ORANGE, 5.0, 1.0, {}, "none", "already ingested"),
        # 2. no open event: a new alert when there is something to say
        (None, "sha256:new", YELLOW, 1.0, 0.5, {}, "alert", "new event at level yellow"),
        (None, "sha256:new", GREEN, 0.0, 0.5, {}, "alert", "new event at level green"),
        (None, "sha256:new", GREEN, 0.0, 0.0, {}, "none", "no footprint"),
        (None, "sha256:new", GREEN, 3.0, 1.0, {"cancel_below_level": YELLOW}, "none",
         "below yellow"),
        (CANCELLED, "sha256:new", YELLOW, 5.0, 1.0, {}, "alert", "is cancelled"),
        (EXPIRED, "sha256:new", YELLOW, 5.0, 1.0, {}, "alert", "is expired"),
        # 3. footprint gone on an open event: cancel
        (OPEN, "sha256:new", GREEN, 0.0, 0.0, {}, "cancel", "footprint of event"),
        # 4. level below the cancel level: cancel; at it: not
        (OPEN, "sha256:new", GREEN, 900.0, 9.0, {"cancel_below_level": YELLOW}, "cancel",
         "level fell to green, below yellow"),
        (OPEN, "sha256:new", YELLOW, 1000.0, 10.0, {"cancel_below_level": YELLOW}, "none",
         "no material change"),
        # 5. level changed: update
        (OPEN, "sha256:new", ORANGE, 1000.0, 10.0, {}, "update",
         "level raised from yellow to orange"),
        (OPEN, "sha256:new", GREEN, 1000.0, 10.0, {}, "update",
         "level lowered from yellow to green"),
        # 5. people or area changed by more than 20 % of the last figures sent: update
        (OPEN, "sha256:new", YELLOW, 1200.0, 10.0, {}, "none", "people up 20%"),
        (OPEN, "sha256:new", YELLOW, 1201.0, 10.0, {}, "update", "people exposed up 20%"),
        (OPEN, "sha256:new", YELLOW, 800.0, 10.0, {}, "none", "people down 20%"),
        (OPEN, "sha256:new", YELLOW, 799.0, 10.0, {}, "update", "people exposed down 20%"),
        (OPEN, "sha256:new", YELLOW, 0.0, 10.0, {}, "update", "people exposed down 100%"),
        (OPEN, "sha256:new", YELLOW, 1000.0, 12.0, {}, "none", "area up 20%"),
        (OPEN, "sha256:new", YELLOW, 1000.0, 12.5, {}, "update", "area up 25%"),
        (OPEN, "sha256:new", YELLOW, 1000.0, 7.5, {}, "update", "area down 25%"),
        (_event(last_population=0.0), "sha256:new", YELLOW, 4.0, 10.0, {}, "update",
         "people exposed up from none"),
        # the material share is configurable
        (OPEN, "sha256:new", YELLOW, 1400.0, 10.0, {"material_share": 0.5}, "none",
         "people up 40%"),
        (OPEN, "sha256:new", YELLOW, 1600.0, 10.0, {"material_share": 0.5}, "update",
         "people exposed up 60%"),
        # 6. nothing new
        (OPEN, "sha256:new", YELLOW, 1000.0, 10.0, {}, "none",
         "level still yellow, people unchanged, area unchanged"),
    ],
)
def test_decide_sends_only_news(
    event: EventRecord | None, checksum: str, level: Level, population: float, area: float,
    options: dict[str, object], action: str, reason: str,
) -> None:
    decision = decide(event, checksum, level, population, area, **options)  # type: ignore[arg-type]
    assert decision.action == action
    assert any(reason in r for r in decision.reasons), decision.reasons


def test_an_update_gives_every_reason_at_once() -> None:
    decision = decide(OPEN, "sha256:new", ORANGE, 2500.0, 30.0)
    assert decision.action == "update"
    assert decision.reasons == (
        "level raised from yellow to orange",
        "people exposed up 150% (1,000 to 2,500)",
        "area up 200% (10.0 to 30.0 km2)",
    )


@pytest.mark.parametrize(
    ("population", "area", "share"),
    [(-1.0, 1.0, 0.2), (math.nan, 1.0, 0.2), (1.0, math.inf, 0.2), (1.0, 1.0, 0.0),
     (1.0, 1.0, math.nan)],
)
def test_decide_refuses_figures_that_cannot_be_compared(population: float, area: float,
                                                       share: float) -> None:
    with pytest.raises(AlertError, match="must be"):
        decide(OPEN, "sha256:new", YELLOW, population, area, material_share=share)


# --- match_event ------------------------------------------------------------------------


def test_the_same_producer_event_id_wins_over_place_and_time() -> None:
    quake = _event("q", kind="shaking_mmi", source_event_id="us7000abcd",
                   footprint_wkt=box(0, 0, 1, 1).wkt)
    found = match_event("shaking_mmi", "us7000abcd", BOX, T0 + timedelta(days=30), [quake],
                        WINDOW)
    assert found is quake


def test_a_producer_id_of_another_kind_does_not_match() -> None:
    quake = _event("q", kind="shaking_mmi", source_event_id="us7000abcd",
                   footprint_wkt=box(0, 0, 1, 1).wkt)
    assert match_event("shaking_pga", "us7000abcd", BOX, T0, [quake], WINDOW) is None


def test_runs_with_different_producer_ids_are_different_events_even_where_they_overlap() -> None:
    storm = _event("s", kind="wind_gust", source_event_id="LOTHAR")
    assert match_event("wind_gust", "MARTIN", BOX, T0, [storm], WINDOW) is None
    assert match_event("wind_gust", None, BOX, T0, [storm], WINDOW) is storm


@pytest.mark.parametrize(
    ("kind", "footprint", "after", "status", "matches"),
    [
        ("flood_depth", box(10.1, 47.1, 10.3, 47.3), timedelta(hours=12), AlertStatus.UPDATED,
         True),
        ("flood_depth", box(10.1, 47.1, 10.3, 47.3), WINDOW, AlertStatus.ISSUED, True),
        ("flood_depth", box(10.1, 47.1, 10.3, 47.3), -WINDOW, AlertStatus.ISSUED, True),
        ("flood_depth", box(10.1, 47.1, 10.3, 47.3), WINDOW + timedelta(seconds=1),
         AlertStatus.ISSUED, False),
        ("rainfall", box(10.1, 47.1, 10.3, 47.3), timedelta(0), AlertStatus.ISSUED, False),
        ("flood_depth", box(11.0, 47.0, 11.2, 47.2), timedelta(0), AlertStatus.ISSUED, False),
        ("flood_depth", box(10.1, 47.1, 10.3, 47.3), timedelta(0), AlertStatus.CANCELLED,
         False),
        ("flood_depth", box(10.1, 47.1, 10.3, 47.3), timedelta(0), AlertStatus.EXPIRED, False),
        ("flood_depth", Polygon(), timedelta(0), AlertStatus.ISSUED, False),
    ],
    ids=["overlap-12h", "at-window", "window-before", "past-window", "other-kind", "disjoint",
         "cancelled", "expired", "empty-footprint"],
)
def test_without_a_producer_id_same_kind_overlap_within_the_window_is_the_same_event(
    kind: str, footprint: Polygon, after: timedelta, status: AlertStatus, matches: bool
) -> None:
    event = _event(status=status)
    found = match_event(kind, None, footprint, T0 + after, [event], WINDOW)
    assert (found is event) is matches


def test_among_several_candidates_the_largest_overlap_wins_in_any_order() -> None:
    small = _event("a", footprint_wkt=box(10.15, 47.15, 10.4, 47.4).wkt)
    large = _event("b", footprint_wkt=box(10.05, 47.05, 10.4, 47.4).wkt)
    assert match_event("flood_depth", None, BOX, T0, [small, large], WINDOW) is large
    assert match_event("flood_depth", None, BOX, T0, [large, small], WINDOW) is large


def test_a_self_intersecting_footprint_is_repaired_not_a_crash() -> None:
    bowtie = Polygon([(10.0, 47.0), (10.2, 47.2), (10.2, 47.0), (10.0, 47.2), (10.0, 47.0)])
    assert not bowtie.is_valid
    assert match_event("flood_depth", None, bowtie, T0, [_event()], WINDOW) is not None


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(AlertError, match="timezone-aware"):
        match_event("flood_depth", None, BOX, datetime(2024, 5, 14), [], WINDOW)


# --- new_event_id -------------------------------------------------------------------------


def test_event_ids_are_deterministic_and_readable() -> None:
    first = new_event_id("flood_depth", T0, BOX)
    assert first == new_event_id("flood_depth", T0, box(10.0, 47.0, 10.2, 47.2))
    assert re.fullmatch(r"flood_depth-20240514T0600Z-[0-9a-f]{10}", first)


def test_the_same_instant_in_another_time_zone_gives_the_same_id() -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    assert new_event_id("flood_depth", plus_two, BOX) == new_event_id("flood_depth", T0, BOX)


def test_a_footprint_moved_a_few_hundred_metres_keeps_its_id_but_another_place_does_not() -> None:
    # Centroid (10.1, 47.1); 0.001 degree stays within the 0.01 degree rounding, 0.1 does not.
    nudged = box(10.001, 47.001, 10.201, 47.201)
    moved = box(10.1, 47.0, 10.3, 47.2)
    base = new_event_id("flood_depth", T0, BOX)
    assert new_event_id("flood_depth", T0, nudged) == base
    assert new_event_id("flood_depth", T0, moved) != base
    assert new_event_id("rainfall", T0, BOX) != base
    assert new_event_id("flood_depth", T0 + timedelta(hours=1), BOX) != base


def test_an_empty_footprint_still_gets_an_id_and_naive_times_are_refused() -> None:
    assert new_event_id("flood_depth", T0, Polygon()).startswith("flood_depth-20240514T0600Z-")
    with pytest.raises(AlertError, match="timezone-aware"):
        new_event_id("flood_depth", datetime(2024, 5, 14), BOX)


# --- The sample region's three flood runs: one event ----------------------------------------


@pytest.fixture(scope="module")
def flood_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[object, ...]]:
    from alerts.assess import (
        footprint_lonlat,
        max_class_of,
        summarize_exposure,
        summarize_hazard,
    )
    from alerts.priority import prioritize
    from feeds.base import ReadOptions
    from feeds.read import read_hazard
    from feeds.region import load_region_pack
    from feeds.sample import build_sample_region
    from geo.overlay import OverlayCache, run_overlay

    sample = build_sample_region(Path(tmp_path_factory.mktemp("valley")), seed=3, size=120)
    region = load_region_pack(sample.manifest)
    cache = OverlayCache()
    runs = []
    for feed in sample.hazards[:3]:  # flood runs in issue order
        hazard = read_hazard(feed.path, ReadOptions(kind=feed.kind))
        result = run_overlay(hazard, region, cache=cache)
        summary = summarize_hazard(hazard, result.classes, max_class_of(result))
        exposure = summarize_exposure(result)
        level = prioritize(summary, exposure, now=summary.onset).level
        runs.append((summary, exposure, level, footprint_lonlat(result)))
    return runs


def _record(event_id: str, run: tuple[object, ...], first_seen: datetime) -> EventRecord:
    summary, exposure, level, footprint = run
    return EventRecord(
        event_id=event_id, kind=summary.kind, source_event_id=summary.source_event_id,
        footprint_wkt=footprint.wkt, first_seen=first_seen, last_seen=summary.onset,
        last_level=level, last_population=exposure.population,
        last_area_km2=exposure.area_km2, last_checksum=summary.checksum,
    )


def test_the_rising_flood_is_one_event_updated_once_then_cancelled_as_it_recedes(
    flood_runs: list[tuple[object, ...]],
) -> None:
    # The sample model's runs: crest 1.2 m reaching 700 m from the river, then 2.6 m
    # reaching 1,600 m (12 h later), then 0.12 m (36 h later, below the first 0.15 m class
    # almost everywhere).
    (s1, e1, lv1, f1), (s2, e2, lv2, f2), (s3, e3, lv3, f3) = flood_runs
    assert match_event(s1.kind, None, f1, s1.onset, [], WINDOW) is None
    first = decide(None, s1.checksum, lv1, e1.population, e1.area_km2)
    assert first.action == "alert"
    event = _record(new_event_id(s1.kind, s1.onset, f1), flood_runs[0], s1.onset)
    assert decide(event, s1.checksum, lv1, e1.population, e1.area_km2).action == "none"

    assert match_event(s2.kind, s2.source_event_id, f2, s2.onset, [event], WINDOW) is event
    second = decide(event, s2.checksum, lv2, e2.population, e2.area_km2)
    assert second.action == "update"
    assert any(r.startswith("people exposed up") for r in second.reasons)
    event = _record(event.event_id, flood_runs[1], event.first_seen)
    assert decide(event, s2.checksum, lv2, e2.population, e2.area_km2).action == "none"

    assert match_event(s3.kind, s3.source_event_id, f3, s3.onset, [event], WINDOW) is event
    third = decide(event, s3.checksum, lv3, e3.population, e3.area_km2,
                   cancel_below_level=Level.YELLOW)
    assert (lv3, third.action) == (Level.GREEN, "cancel")
