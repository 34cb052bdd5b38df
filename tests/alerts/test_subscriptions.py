"""Subscription areas from GeoJSON, and every reason a subscription is refused."""

from __future__ import annotations

import dataclasses

import pytest
import shapely

from alerts.errors import SubscriptionError
from alerts.model import ChannelAddress, ChannelKind, DigestPolicy, QuietHours, Subscription
from alerts.subscriptions import parse_geojson_areas, validate_subscription

SQUARE = {"type": "Polygon", "coordinates": [[[7, 46], [8, 46], [8, 47], [7, 47], [7, 46]]]}
REGION = (6.0, 45.0, 10.0, 48.0)
ZONES = ("Z1", "Z2", "Z3")
SQUARE_WKT = "POLYGON ((7 46, 8 46, 8 47, 7 47, 7 46))"


def _sub(**changes: object) -> Subscription:
    base = Subscription(
        subscription_id="S1", agency_id="A1", areas_wkt=(SQUARE_WKT,),
        hazard_kinds=frozenset({"flood_depth"}),
        channels=(ChannelAddress(ChannelKind.EMAIL, "ops@example.org"),),
    )
    return dataclasses.replace(base, **changes)


def _problems(sub: Subscription, **kwargs: object) -> str:
    kwargs.setdefault("region_bounds_lonlat", REGION)
    kwargs.setdefault("zone_ids", ZONES)
    with pytest.raises(SubscriptionError) as info:
        validate_subscription(sub, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_polygon_geojson_becomes_one_wkt_in_lon_lat_order() -> None:
    (wkt,) = parse_geojson_areas(SQUARE)
    assert shapely.from_wkt(wkt).equals(shapely.from_wkt(SQUARE_WKT))


def test_feature_collection_gives_one_wkt_per_feature_and_keeps_multipolygons() -> None:
    multi = {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"],
             [[[9, 46], [9.5, 46], [9.5, 46.5], [9, 46]]]]}
    data = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": SQUARE},
        {"type": "Feature", "properties": None, "geometry": multi},
    ]}
    first, second = parse_geojson_areas(data)
    assert shapely.from_wkt(first).geom_type == "Polygon"
    assert shapely.from_wkt(second).geom_type == "MultiPolygon"
    assert shapely.from_wkt(second).area == pytest.approx(1.0 + 0.125)


def test_third_coordinate_is_dropped() -> None:
    data = {"type": "Polygon", "coordinates": [[[7, 46, 5], [8, 46, 5], [8, 47, 5], [7, 46, 5]]]}
    (wkt,) = parse_geojson_areas(data)
    assert not shapely.has_z(shapely.from_wkt(wkt))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "Point", "coordinates": [7, 46]}, "not an area"),
        ({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[7, 46], [8, 46]]}},
         "expected Polygon or MultiPolygon"),
        ({"type": "Feature", "geometry": None}, "expected Polygon or MultiPolygon"),
        ({"type": "FeatureCollection", "features": []}, "no 'features'"),
        ({"type": "Polygon", "coordinates": [[[7, 46], [8]]]}, "malformed coordinates"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"coordinates": []}, "'type' member"),
        (dict(SQUARE, crs={"type": "name", "properties": {"name": "EPSG:3857"}}), "EPSG:3857"),
    ],
)
def test_geojson_that_is_not_a_wgs84_area_is_refused_saying_why(data: dict, expected: str) -> None:
    with pytest.raises(SubscriptionError, match=expected):
        parse_geojson_areas(data)


def test_valid_subscription_is_returned_unchanged() -> None:
    sub = _sub(zone_codes=("Z2",), languages=("en", "fr-CH"),
               quiet_hours=QuietHours("22:00", "07:00", "Europe/Zurich"),
               digest=DigestPolicy(),
               channels=(ChannelAddress(ChannelKind.WEBHOOK, "https://ops.example.org/hook"),
                         ChannelAddress(ChannelKind.SMS, "+41791234567"),
                         ChannelAddress(ChannelKind.MQTT, "tocsin/alerts/zurich"),
                         ChannelAddress(ChannelKind.CAP_FEED, "public")))
    assert validate_subscription(sub, region_bounds_lonlat=REGION, zone_ids=ZONES) is sub


def test_bowtie_polygon_is_refused_naming_the_self_intersection_point() -> None:
    bowtie = "POLYGON ((7 46, 8 47, 8 46, 7 47, 7 46))"  # edges cross at (7.5, 46.5)
    message = _problems(_sub(areas_wkt=(bowtie,)))
    assert "area 0 is not a valid polygon" in message
    assert "Self-intersection[7.5 46.5]" in message


def test_area_larger_than_the_maximum_is_refused_with_its_geodesic_size() -> None:
    # 1 x 1 degree at 46-47 N is about 111.2 km x 76.6 km = about 8,500 km2.
    message = _problems(_sub(), max_area_km2=8000.0)
    assert "area 0 covers 8,5" in message and "8,000 km2" in message
    validate_subscription(_sub(), region_bounds_lonlat=REGION, zone_ids=ZONES,
                          max_area_km2=9000.0)


def test_world_box_is_enormous_under_the_default_limit() -> None:
    world = "POLYGON ((-170 -80, 170 -80, 170 80, -170 80, -170 -80))"
    assert "more than the 1,000,000 km2" in _problems(_sub(areas_wkt=(world,)),
                                                      region_bounds_lonlat=None)


def test_area_entirely_outside_the_region_is_refused_and_one_touching_it_is_kept() -> None:
    far = "POLYGON ((20 46, 21 46, 21 47, 20 46))"
    assert "lies entirely outside the region" in _problems(_sub(areas_wkt=(far,)))
    overlapping = "POLYGON ((9.5 47.5, 11 47.5, 11 49, 9.5 47.5))"
    validate_subscription(_sub(areas_wkt=(overlapping,)), region_bounds_lonlat=REGION,
                          zone_ids=ZONES)


def test_swapped_lat_lon_is_refused_as_out_of_range() -> None:
    # A place near lon 120, lat 30 given as [lat, lon]: the "latitude" 120 is impossible.
    swapped = "POLYGON ((30 120, 31 120, 31 121, 30 120))"
    assert "outside lon -180..180 / lat -90..90" in _problems(_sub(areas_wkt=(swapped,)))


def test_unknown_zone_codes_are_listed_with_valid_examples() -> None:
    message = _problems(_sub(zone_codes=("Z2", "Z9", "Q1")))
    assert "unknown zone code(s) ['Q1', 'Z9']" in message
    assert "valid codes include ['Z1', 'Z2', 'Z3']" in message


def test_unknown_hazard_kind_lists_the_valid_kinds() -> None:
    message = _problems(_sub(hazard_kinds=frozenset({"flood_depth", "tsunami"})))
    assert "unknown hazard kind(s) ['tsunami']" in message and "'wind_gust'" in message


def test_subscription_without_polygons_or_zones_is_refused() -> None:
    assert "no area" in _problems(_sub(areas_wkt=()))


def test_same_agency_areas_and_kinds_is_a_duplicate_even_with_another_vertex_order() -> None:
    # Same square, starting at another vertex and running the other way.
    other = _sub(subscription_id="S0", areas_wkt=("POLYGON ((8 47, 8 46, 7 46, 7 47, 8 47))",))
    message = _problems(_sub(), existing=[other])
    assert "duplicate of subscription 'S0'" in message


@pytest.mark.parametrize(
    "change",
    [{"agency_id": "A2"}, {"hazard_kinds": frozenset({"wind_gust"})}, {"zone_codes": ("Z1",)},
     {"subscription_id": "S1"}],
)
def test_other_agency_kind_zone_or_the_same_id_is_not_a_duplicate(change: dict) -> None:
    other = dataclasses.replace(_sub(subscription_id="S0"), **change)
    validate_subscription(_sub(), region_bounds_lonlat=REGION, zone_ids=ZONES, existing=[other])


@pytest.mark.parametrize(
    ("kind", "address", "expected"),
    [
        (ChannelKind.EMAIL, "ops.example.org", "not an e-mail address"),
        (ChannelKind.EMAIL, "ops@localhost", "not an e-mail address"),
        (ChannelKind.WEBHOOK, "ftp://example.org/x", "not an http(s) URL"),
        (ChannelKind.WEBHOOK, "https:///path", "not an http(s) URL"),
        (ChannelKind.SMS, "0791234567", "not an E.164"),
        (ChannelKind.SMS, "+41 79 123 45 67", "not an E.164"),
        (ChannelKind.MQTT, "tocsin/+/alerts", "wildcards"),
        (ChannelKind.MQTT, "tocsin/#", "wildcards"),
        (ChannelKind.CAP_FEED, " ", "empty"),
    ],
)
def test_bad_channel_address_is_refused_naming_channel_and_expected_form(
    kind: ChannelKind, address: str, expected: str
) -> None:
    channels = (ChannelAddress(ChannelKind.EMAIL, "ops@example.org"), ChannelAddress(kind, address))
    message = _problems(_sub(channels=channels))
    assert f"channel 1 ({kind.value}) address {address!r}" in message
    assert expected in message


@pytest.mark.parametrize("languages", [("EN",), ("en_GB",), ("english",), ("en", "fr-ch"), ()])
def test_language_not_xx_or_xx_yy_is_refused(languages: tuple[str, ...]) -> None:
    assert "language" in _problems(_sub(languages=languages))


@pytest.mark.parametrize(
    ("quiet", "expected"),
    [
        (QuietHours("24:00", "07:00", "Europe/Zurich"), "start '24:00' is not a time HH:MM"),
        (QuietHours("22:00", "7:00", "Europe/Zurich"), "end '7:00' is not a time HH:MM"),
        (QuietHours("22:00", "07:00", "Europe/Zürich"), "not an IANA time zone"),
        (QuietHours("22:00", "07:00", "../../etc/passwd"), "not an IANA time zone"),
        (QuietHours("22:00", "22:00", "UTC"), "an empty span"),
    ],
)
def test_bad_quiet_hours_are_refused(quiet: QuietHours, expected: str) -> None:
    assert expected in _problems(_sub(quiet_hours=quiet))


def test_every_problem_is_reported_at_once_and_the_input_is_not_changed() -> None:
    sub = _sub(zone_codes=("nope",), hazard_kinds=frozenset({"meteor"}), languages=("xx_YY",))
    before = dataclasses.astuple(sub)
    message = _problems(sub)
    assert "unknown zone code(s) ['nope']" in message
    assert "unknown hazard kind(s) ['meteor']" in message
    assert "language(s) ['xx_YY']" in message
    assert dataclasses.astuple(sub) == before


def test_checks_that_need_the_region_are_skipped_without_it() -> None:
    far = "POLYGON ((20 46, 21 46, 21 47, 20 46))"
    sub = _sub(areas_wkt=(far,), zone_codes=("anything",))
    assert validate_subscription(sub, region_bounds_lonlat=None, zone_ids=None) is sub
