"""Agencies and subscriptions: round trips, refusals that change nothing, spatial search.

The spatial layout (lon/lat degrees), against the query box Q = (1, 1, 3, 3):

- ``inside``    box(1.5, 1.5, 2, 2)          inside Q                      -> hit
- ``overlap``   box(0, 0, 1.2, 1.2)          overlaps Q's lower-left       -> hit
- ``touching``  box(3, 0, 4, 1)              shares only Q's corner (3, 1) -> hit (touch counts)
- ``bbox_only`` triangle (2.8,0) (4,0) (4,3) its bbox meets Q, but its edge y = 2.5 (x - 2.8)
                                             is at y = 0.5 < 1 at x = 3    -> miss
- ``far``       box(10, 10, 11, 11)                                        -> miss
- ``multi``     two areas: box(20, 20, 21, 21) and box(2.5, 2.5, 2.6, 2.6) -> hit (second part)
- ``zones``     zone codes only, no area                                   -> never returned
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy.orm import Session, sessionmaker

from alerts.errors import SubscriptionError
from alerts.model import (
    Agency,
    ChannelAddress,
    ChannelKind,
    DigestPolicy,
    Level,
    QuietHours,
    Subscription,
)
from store.db import session_scope
from store.repo import (
    DuplicateRecordError,
    DuplicateSubscriptionError,
    RecordNotFoundError,
    add_agency,
    add_subscription,
    get_agency,
    get_subscription,
    list_agencies,
    list_subscriptions,
    remove_subscription,
    subscriptions_intersecting,
)

AGENCY = Agency("civil-protection", "Civil Protection", contact="ops@example.org")

FULL = Subscription(
    subscription_id="cp-river",
    agency_id=AGENCY.agency_id,
    areas_wkt=("POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))",
               "POLYGON ((2.125 2.5, 3.0000001 2.5, 3.0000001 3.75, 2.125 2.5))"),
    zone_codes=("Z001", "Z017"),
    hazard_kinds=frozenset({"flood_depth", "rainfall_accumulation"}),
    min_level=Level.ORANGE,
    channels=(ChannelAddress(ChannelKind.WEBHOOK, "https://cp.example.org/hook"),
              ChannelAddress(ChannelKind.SMS, "+41790000000"),
              ChannelAddress(ChannelKind.EMAIL, "duty@example.org")),
    languages=("fr", "en"),
    quiet_hours=QuietHours("22:00", "07:00", "Europe/Zurich", override_level=Level.ORANGE),
    digest=DigestPolicy(up_to_level=Level.GREEN, interval_min=720),
)


def _box(minx: float, miny: float, maxx: float, maxy: float) -> str:
    return shapely.box(minx, miny, maxx, maxy).wkt


LAYOUT = {
    "inside": (_box(1.5, 1.5, 2, 2),),
    "overlap": (_box(0, 0, 1.2, 1.2),),
    "touching": (_box(3, 0, 4, 1),),
    "bbox_only": ("POLYGON ((2.8 0, 4 0, 4 3, 2.8 0))",),
    "far": (_box(10, 10, 11, 11),),
    "multi": (_box(20, 20, 21, 21), _box(2.5, 2.5, 2.6, 2.6)),
    "zones": (),
}


def _sub(sub_id: str, areas: tuple[str, ...], **changes) -> Subscription:
    fields = {"zone_codes": ("Z9",) if not areas else (), **changes}
    return Subscription(sub_id, AGENCY.agency_id, areas_wkt=areas,
                        channels=(ChannelAddress(ChannelKind.EMAIL, f"{sub_id}@x.org"),),
                        **fields)


@pytest.fixture
def with_agency(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_scope(sessions) as session:
        add_agency(session, AGENCY)
    return sessions


@pytest.fixture
def layout(with_agency: sessionmaker[Session]) -> sessionmaker[Session]:
    with session_scope(with_agency) as session:
        for sub_id, areas in LAYOUT.items():
            add_subscription(session, _sub(sub_id, areas))
    return with_agency


def _ids(subscriptions: list[Subscription]) -> list[str]:
    return [s.subscription_id for s in subscriptions]


def test_an_agency_round_trips_and_a_second_with_its_id_is_refused(
        with_agency: sessionmaker[Session]) -> None:
    with session_scope(with_agency) as session:
        assert get_agency(session, AGENCY.agency_id) == AGENCY
        with pytest.raises(DuplicateRecordError, match="civil-protection"):
            add_agency(session, Agency(AGENCY.agency_id, "Someone else"))
    with session_scope(with_agency) as session:
        assert list_agencies(session) == [AGENCY]
        with pytest.raises(RecordNotFoundError, match="no agency 'nobody'"):
            get_agency(session, "nobody")


def test_a_subscription_with_every_field_set_round_trips_exactly(
        with_agency: sessionmaker[Session]) -> None:
    minimal = Subscription("cp-zones", AGENCY.agency_id, zone_codes=("Z002",))
    with session_scope(with_agency) as session:
        add_subscription(session, FULL)
        add_subscription(session, minimal)
    with session_scope(with_agency) as session:
        assert get_subscription(session, "cp-river") == FULL
        assert list_subscriptions(session) == [FULL, minimal]
        assert list_subscriptions(session, agency_id="other") == []


def test_a_subscription_with_a_taken_id_is_refused_and_nothing_changes(
        with_agency: sessionmaker[Session]) -> None:
    with session_scope(with_agency) as session:
        add_subscription(session, FULL)
    other = Subscription(FULL.subscription_id, AGENCY.agency_id, zone_codes=("Z5",))
    with pytest.raises(DuplicateSubscriptionError, match="'cp-river' already exists"):
        with session_scope(with_agency) as session:
            add_subscription(session, other)
    with session_scope(with_agency) as session:
        assert list_subscriptions(session) == [FULL]


def test_the_same_areas_kinds_and_channels_under_a_new_id_are_a_duplicate(
        with_agency: sessionmaker[Session]) -> None:
    with session_scope(with_agency) as session:
        add_subscription(session, FULL)
    # Same content written differently: areas reversed and ring rotated, channels reordered.
    twin = Subscription(
        "cp-river-2", AGENCY.agency_id,
        areas_wkt=("POLYGON ((3.0000001 2.5, 3.0000001 3.75, 2.125 2.5, 3.0000001 2.5))",
                   "POLYGON ((1 1, 0 1, 0 0, 1 0, 1 1))"),
        zone_codes=("Z017", "Z001"), hazard_kinds=FULL.hazard_kinds,
        channels=tuple(reversed(FULL.channels)), min_level=Level.RED,
    )
    with session_scope(with_agency) as session:
        with pytest.raises(DuplicateSubscriptionError, match="duplicates 'cp-river'"):
            add_subscription(session, twin)
        # The refusal undid only itself: the session goes on and keeps its other work.
        add_subscription(session, _sub("kept", LAYOUT["inside"]))
    with session_scope(with_agency) as session:
        assert _ids(list_subscriptions(session)) == ["cp-river", "kept"]


@pytest.mark.parametrize(("wkt", "reason"), [
    ("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))", "invalid polygon .*Self-intersection"),
    ("POLYGON ((0 0, 1 0", "not WKT"),
    ("POINT (1 1)", "expected a non-empty Polygon or MultiPolygon, got a Point"),
    ("POLYGON EMPTY", "expected a non-empty Polygon or MultiPolygon, got an empty Polygon"),
    ("POLYGON ((500000 0, 500001 0, 500001 1, 500000 0))", "coordinates outside lon/lat range"),
])
def test_a_bad_area_is_refused_with_its_reason_and_nothing_is_stored(
        with_agency: sessionmaker[Session], wkt: str, reason: str) -> None:
    bad = Subscription("bad", AGENCY.agency_id, areas_wkt=(_box(0, 0, 1, 1), wkt))
    with pytest.raises(SubscriptionError, match=f"'bad' area 1: {reason}"):
        with session_scope(with_agency) as session:
            add_subscription(session, bad)
    with session_scope(with_agency) as session:
        assert list_subscriptions(session) == []


def test_a_subscription_of_an_unknown_agency_is_refused(
        sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        with pytest.raises(RecordNotFoundError, match="no agency 'civil-protection'"):
            add_subscription(session, FULL)
        assert list_subscriptions(session) == []


def test_removing_a_subscription_returns_it_and_removes_it_from_searches(
        layout: sessionmaker[Session]) -> None:
    with session_scope(layout) as session:
        removed = remove_subscription(session, "inside")
    assert removed == _sub("inside", LAYOUT["inside"])
    with session_scope(layout) as session:
        assert "inside" not in _ids(list_subscriptions(session))
        assert _ids(subscriptions_intersecting(session, (1, 1, 3, 3))) == [
            "multi", "overlap", "touching"]
        with pytest.raises(RecordNotFoundError, match="no subscription 'inside'"):
            remove_subscription(session, "inside")


@pytest.mark.parametrize("query", [
    (1, 1, 3, 3),
    shapely.box(1, 1, 3, 3),
    # Q with a zero-width spike to its centre: invalid, repaired (make_valid) to Q first.
    shapely.Polygon([(1, 1), (3, 1), (3, 3), (1, 3), (1, 1), (2, 2), (1, 1)]),
])
def test_spatial_search_returns_exactly_the_intersecting_subscriptions(
        layout: sessionmaker[Session], query) -> None:
    with session_scope(layout) as session:
        found = subscriptions_intersecting(session, query)
    assert _ids(found) == ["inside", "multi", "overlap", "touching"]
    assert found[0] == _sub("inside", LAYOUT["inside"])


def test_a_query_inside_the_triangle_finds_it_and_the_box_it_shares_a_corner_with(
        layout: sessionmaker[Session]) -> None:
    with session_scope(layout) as session:
        assert _ids(subscriptions_intersecting(session, (3.5, 0.2, 3.6, 0.3))) == [
            "bbox_only", "touching"]
        assert _ids(subscriptions_intersecting(session, shapely.Point(10.5, 10.5))) == ["far"]
        assert subscriptions_intersecting(session, (50, 50, 60, 60)) == []


def test_a_malformed_bbox_is_refused(layout: sessionmaker[Session]) -> None:
    with session_scope(layout) as session:
        with pytest.raises(ValueError, match=r"bbox \(3, 1, 1, 3\)"):
            subscriptions_intersecting(session, (3, 1, 1, 3))
        with pytest.raises(ValueError, match="bbox"):
            subscriptions_intersecting(session, (0, 0, float("nan"), 1))


def test_spatial_search_agrees_with_shapely_on_random_areas(
        with_agency: sessionmaker[Session]) -> None:
    rng = np.random.default_rng(7)
    areas: dict[str, shapely.Polygon] = {}
    for i in range(80):
        x, y = rng.uniform(0, 10, 2)
        w, h = rng.uniform(0.1, 2.0, 2)
        # Alternate boxes and triangles (whose bbox over-promises) for the exact test.
        ring = [(x, y), (x + w, y), (x + w, y + h)] + ([(x, y + h)] if i % 2 else [])
        areas[f"s{i:03d}"] = shapely.Polygon(ring)
    with session_scope(with_agency) as session:
        for sub_id, polygon in areas.items():
            add_subscription(session, _sub(sub_id, (polygon.wkt,)))
    stored = {sub_id: shapely.from_wkt(polygon.wkt) for sub_id, polygon in areas.items()}
    with session_scope(with_agency) as session:
        for _ in range(25):
            x, y = rng.uniform(0, 10, 2)
            query = shapely.box(x, y, x + rng.uniform(0.05, 3), y + rng.uniform(0.05, 3))
            expected = sorted(k for k, poly in stored.items() if poly.intersects(query))
            assert _ids(subscriptions_intersecting(session, query)) == expected
