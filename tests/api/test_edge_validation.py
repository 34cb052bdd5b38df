"""Validation at the edge: every bad request is a 4xx naming the field, and changes nothing.

GeoJSON areas (validity, closed rings, WGS 84 only, coordinates in range, polygons only,
vertex and area limits), bodies (unknown fields, wrong types, malformed or oversized JSON,
announced or streamed), query parameters and cursors, keys, the per-key rate limit, and
webhook destinations (the dispatch rules: https, public addresses unless allow-listed).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tocsin_testing.api import NOW, ApiWorld, public_resolver

from api import create_app
from api.settings import ApiSettings
from store import repo
from store.db import session_scope

RING = [[7.1, 46.1], [7.3, 46.1], [7.3, 46.3], [7.1, 46.3], [7.1, 46.1]]
AREA = {"type": "Polygon", "coordinates": [RING]}
HOOK = {"kind": "webhook", "address": "https://north.example/hook"}


def subscription(**overrides: Any) -> dict[str, Any]:
    """A valid new subscription of North's, changed as asked."""
    body: dict[str, Any] = {"subscription_id": "north-edge", "area": AREA, "channels": [HOOK]}
    body.update(overrides)
    return body


def stored_subscriptions(world: ApiWorld) -> list[str]:
    with session_scope(world.sessions) as session:
        return sorted(s.subscription_id for agency in ("north", "south")
                      for s in repo.list_subscriptions(session, agency))


def refused(answer: Any, status: int, field: str, words: str = "") -> None:
    """Assert an error answer: its status, the field it names first, words of its message."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["errors"], f"no field named: {body}"
    assert body["errors"][0]["field"] == field, body
    assert words.lower() in body["detail"].lower(), body


@pytest.fixture
def limited(world: ApiWorld) -> Iterator[TestClient]:
    """The same store behind an app with small limits (vertices, area, body size)."""
    settings = ApiSettings(data_dir=world.data_dir, api_rate_per_min=0, api_max_vertices=50,
                           api_max_area_km2=1_000, api_max_body_bytes=4_000)
    app = create_app(settings, sessions=world.sessions, clock=lambda: NOW,
                     resolve=public_resolver)
    with TestClient(app) as client:
        yield client


# --- GeoJSON areas --------------------------------------------------------------------------

BOWTIE = [[7.0, 46.0], [7.2, 46.2], [7.2, 46.0], [7.0, 46.2], [7.0, 46.0]]
WORLD_BOX = [[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]


@pytest.mark.parametrize(("case", "area", "field", "words"), [
    ("a self-intersecting polygon", {"type": "Polygon", "coordinates": [BOWTIE]},
     "area", "self-intersection"),
    ("an unclosed ring", {"type": "Polygon", "coordinates": [RING[:-1]]},
     "area.coordinates.0", "not closed"),
    ("a ring of three positions", {"type": "Polygon", "coordinates": [RING[:2] + RING[:1]]},
     "area.coordinates.0", "at least 4"),
    ("a projected crs", {**AREA, "crs": {"type": "name",
                                         "properties": {"name": "EPSG:3857"}}},
     "area", "crs"),
    ("a crs that is not an object", {**AREA, "crs": "EPSG:3857"}, "area.crs", "crs"),
    ("a crs whose properties are text", {**AREA, "crs": {"properties": "EPSG:4326"}},
     "area.crs", "crs"),
    ("a longitude of 200", {"type": "Polygon", "coordinates": [
        [[200, 46], [200.1, 46], [200.1, 46.1], [200, 46]]]}, "area.coordinates.0.0",
     "outside lon"),
    ("swapped latitude", {"type": "Polygon", "coordinates": [
        [[46, 95], [46.1, 95], [46.1, 95.1], [46, 95]]]}, "area.coordinates.0.0", "outside"),
    ("a huge number", {"type": "Polygon", "coordinates": [
        [[1e308, 46], [7.1, 46], [7.1, 46.1], [1e308, 46]]]}, "area.coordinates.0.0",
     "outside"),
    ("a Point", {"type": "Point", "coordinates": [7.1, 46.1]}, "area", "not an area"),
    ("a LineString", {"type": "LineString", "coordinates": RING}, "area", "not an area"),
    ("a polygon without coordinates", {"type": "Polygon"}, "area.coordinates", "rings"),
    ("coordinates as text", {"type": "Polygon", "coordinates": [[["7", "46"]] * 4]},
     "area.coordinates.0.0", "numbers"),
    ("coordinates as booleans", {"type": "Polygon", "coordinates": [[[True, False]] * 4]},
     "area.coordinates.0.0", "numbers"),
    ("a bad feature in a collection", {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": AREA},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [RING[:-1]]}}]},
     "area.features.1.geometry.coordinates.0", "not closed"),
    ("a feature without a geometry", {"type": "Feature", "geometry": None}, "area",
     "expected polygon"),
    ("a world-wide box", {"type": "Polygon", "coordinates": [WORLD_BOX]}, "area",
     "km2"),
])
def test_a_bad_geojson_area_is_a_422_naming_the_field(
        world: ApiWorld, case: str, area: dict[str, Any], field: str, words: str) -> None:
    answer = world.client.post("/v1/subscriptions", json=subscription(area=area),
                               headers=world.north)
    refused(answer, 422, field, words)
    assert stored_subscriptions(world) == ["north-floods", "south-floods"], case


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_coordinates_are_a_422_naming_the_position(
        world: ApiWorld, number: str) -> None:
    text = json.dumps(subscription()).replace("7.1, 46.1]", f"{number}, 46.1]")
    answer = world.client.post("/v1/subscriptions", content=text, headers={
        **world.north, "content-type": "application/json"})
    refused(answer, 422, "area.coordinates.0.0", "outside")


def test_an_area_over_the_vertex_limit_is_a_422_naming_the_area(
        world: ApiWorld, limited: TestClient) -> None:
    ring = [[7 + i * 1e-3, 46 + (i % 2) * 1e-3] for i in range(60)] + [[7, 46]]
    answer = limited.post("/v1/subscriptions", headers=world.north, json=subscription(
        area={"type": "Polygon", "coordinates": [ring]}))
    refused(answer, 422, "area", "more than 50 vertices")


def test_an_area_over_the_area_limit_is_a_422_naming_the_area(
        world: ApiWorld, limited: TestClient) -> None:
    degree = [[7, 46], [8, 46], [8, 47], [7, 47], [7, 46]]  # about 8,600 km2
    answer = limited.post("/v1/subscriptions", headers=world.north, json=subscription(
        area={"type": "Polygon", "coordinates": [degree]}))
    refused(answer, 422, "area", "more than the 1,000 km2")
    small = limited.post("/v1/subscriptions", headers=world.north, json=subscription())
    assert small.status_code == 201, small.text  # about 340 km2


def test_a_three_dimensional_ring_is_accepted_as_its_footprint(world: ApiWorld) -> None:
    area = {"type": "Polygon", "coordinates": [[[x, y, 250.0] for x, y in RING]]}
    answer = world.client.post("/v1/subscriptions", json=subscription(area=area),
                               headers=world.north)
    assert answer.status_code == 201, answer.text
    assert answer.json()["area"]["coordinates"][0][0][0] == [7.1, 46.1]


# --- bodies -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "overrides", "field"), [
    ("an unknown top-level field", {"colour": "red"}, "colour"),
    ("an agency of its choosing", {"agency_id": "south"}, "agency_id"),
    ("an unknown channel field", {"channels": [{**HOOK, "secret": "x"}]},
     "channels.0.secret"),
    ("an unknown quiet-hours field", {"quiet_hours": {"start": "22:00", "end": "06:00",
                                                      "dst": True}}, "quiet_hours.dst"),
    ("a level that is a number", {"min_level": 5}, "min_level"),
    ("a level that is not one", {"min_level": "purple"}, "min_level"),
    ("channels that are text", {"channels": "webhook"}, "channels"),
    ("no channel", {"channels": []}, "channels"),
    ("an area that is text", {"area": "POLYGON((7 46, 8 46, 8 47, 7 46))"}, "area"),
    ("an unknown hazard", {"hazard_kinds": ["meteor"]}, "hazard_kinds.0"),
    ("a language that is not a tag", {"languages": ["english"]}, "languages.0"),
    ("a delay that is text", {"escalate_after_min": "soon"}, "escalate_after_min"),
    ("a time zone that is a path", {"quiet_hours": {"start": "22:00", "end": "06:00",
                                                    "timezone": "../../etc/passwd"}},
     "quiet_hours.timezone"),
    ("an id with a slash", {"subscription_id": "a/b"}, "subscription_id"),
    ("a control character in an address", {"channels": [
        {"kind": "email", "address": "duty\x00@north.example"}]}, "channels.0.address"),
    ("an unsafe feed name", {"channels": [{"kind": "cap_feed", "address": "../public"}]},
     "channels.0.address"),
])
def test_an_invalid_body_is_a_422_naming_the_field(
        world: ApiWorld, case: str, overrides: dict[str, Any], field: str) -> None:
    answer = world.client.post("/v1/subscriptions", json=subscription(**overrides),
                               headers=world.north)
    refused(answer, 422, field)
    assert stored_subscriptions(world) == ["north-floods", "south-floods"], case


@pytest.mark.parametrize("number", ["NaN", "Infinity"])
def test_a_non_finite_delay_is_a_422_naming_it(world: ApiWorld, number: str) -> None:
    text = json.dumps(subscription(escalate_after_min=1.0)).replace("1.0", number)
    answer = world.client.post("/v1/subscriptions", content=text, headers={
        **world.north, "content-type": "application/json"})
    refused(answer, 422, "escalate_after_min", "finite")


@pytest.mark.parametrize(("case", "content"), [
    ("truncated JSON", b'{"subscription_id": '),
    ("not JSON at all", b"subscription_id=north-edge"),
    ("bytes that are not UTF-8", b'{"subscription_id": "\xff\xfe"}'),
    ("nesting deeper than any parser goes", b'{"area": ' + b"[" * 100_000 + b"]" * 100_000
     + b"}"),
    ("an integer of 5,000 digits", b'{"escalate_after_min": ' + b"9" * 5_000 + b"}"),
])
def test_a_body_that_is_not_json_is_a_422_naming_the_body(
        world: ApiWorld, case: str, content: bytes) -> None:
    answer = world.client.post("/v1/subscriptions", content=content, headers={
        **world.north, "content-type": "application/json"})
    refused(answer, 422, "body")
    assert stored_subscriptions(world) == ["north-floods", "south-floods"], case


def _too_big() -> bytes:
    return json.dumps(subscription(zone_codes=["Z" * 90] * 60)).encode()


def test_a_body_announced_over_the_limit_is_a_413_before_it_is_read(
        world: ApiWorld, limited: TestClient) -> None:
    answer = limited.post("/v1/subscriptions", content=_too_big(), headers={
        **world.north, "content-type": "application/json"})
    assert answer.status_code == 413
    assert "limit of 4000 bytes" in answer.json()["detail"]


def test_a_streamed_body_over_the_limit_is_a_413_too(
        world: ApiWorld, limited: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        data = _too_big()
        yield from (data[i:i + 500] for i in range(0, len(data), 500))

    for url in ("/v1/subscriptions", f"/v1/alerts/{world.north_alert}/ack"):
        answer = limited.post(url, content=chunks(), headers={
            **world.north, "content-type": "application/json"})
        assert answer.request.headers.get("transfer-encoding") == "chunked"
        assert answer.status_code == 413, answer.text
        assert answer.json()["detail"] == "request body is over the limit of 4000 bytes"
    assert stored_subscriptions(world) == ["north-floods", "south-floods"]


def test_every_route_documents_the_413_it_may_answer_and_errors_as_one_body(
        world: ApiWorld, limited: TestClient) -> None:
    document = world.client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            assert "413" in answers, f"{method} {path}"
            for code, answer in answers.items():
                if code[0] in "45":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (
                        f"{method} {path} {code}")
    big_get = limited.request("GET", "/v1/alerts", content=_too_big(), headers=world.north)
    assert big_get.status_code == 413


@pytest.mark.parametrize(("url", "body", "field"), [
    ("/v1/agencies", {"agency_id": "west", "name": "West\x00"}, "name"),
    ("/v1/agencies", {"agency_id": "west", "name": "West", "contact": "a\nb"}, "contact"),
    ("/v1/agencies/north/keys", {"label": "ops\x00"}, "label"),
    ("/v1/agencies/north/keys", {"expires_in_days": 0}, "expires_in_days"),
    ("/v1/agencies/north/keys", {"expires_in_days": 1e9}, "expires_in_days"),
])
def test_admin_bodies_with_control_characters_or_odd_numbers_are_422s(
        world: ApiWorld, url: str, body: dict[str, Any], field: str) -> None:
    refused(world.client.post(url, json=body, headers=world.admin), 422, field)


def test_an_acknowledgement_by_text_with_a_nul_is_a_422(world: ApiWorld) -> None:
    answer = world.client.post(f"/v1/alerts/{world.north_alert}/ack", json={"by": "a\x00"},
                               headers=world.north)
    refused(answer, 422, "by")


# --- query parameters, cursors, keys ----------------------------------------------------------

def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/alerts", {"until": "0.5"}, "query.until"),
    ("/v1/alerts", {"since": "0001-01-01T00:00:00+14:00"}, "since"),
    ("/v1/alerts", {"since": "9999-12-31T23:59:59-14:00"}, "since"),
    ("/v1/alerts", {"since": "2026-05-12T06:00:00"}, "since"),
    ("/v1/alerts", {"bbox": "nan,nan,nan,nan"}, "bbox"),
    ("/v1/alerts", {"bbox": "7,46,1e999,47"}, "bbox"),
    ("/v1/alerts", {"limit": "0"}, "query.limit"),
    ("/v1/alerts", {"cursor": "x" * 501}, "query.cursor"),
    ("/v1/deliveries", {"alert": "a\x00b"}, "query.alert"),
    ("/v1/deliveries", {"alert": "é" * 10}, "query.alert"),
    ("/v1/deliveries", {"status": "lost"}, "query.status.0"),
])
def test_a_bad_query_parameter_is_a_422_naming_it(
        world: ApiWorld, path: str, params: dict[str, str], field: str) -> None:
    refused(world.client.get(path, params=params, headers=world.north), 422, field)


@pytest.mark.parametrize(("path", "cursor"), [
    ("/v1/alerts", "not-a-cursor"),
    ("/v1/alerts", _cursor("2026-05-12T06:00:00+00:00", {"a": 1})),
    ("/v1/alerts", _cursor("2026-05-12T06:00:00+00:00", [1])),
    ("/v1/alerts", _cursor("2026-05-12T06:00:00+00:00", 5)),
    ("/v1/alerts", _cursor("2026-05-12T06:00:00+00:00", "a\x00b")),
    ("/v1/alerts", _cursor("2026-05-12T06:00:00", "naive")),
    ("/v1/alerts", _cursor("0001-01-01T00:00:00+14:00", "overflow")),
    ("/v1/deliveries", _cursor(10**30)),
    ("/v1/deliveries", _cursor(-1)),
    ("/v1/deliveries", _cursor(True)),
    ("/v1/deliveries", _cursor("12")),
])
def test_a_forged_cursor_is_a_400_on_every_store(world: ApiWorld, path: str, cursor: str) -> None:
    answer = world.client.get(path, params={"cursor": cursor}, headers=world.north)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("cursor")


@pytest.mark.parametrize("token", ["tsn_a\x00b_secret", "tsn_" + "a" * 5_000 + "_x",
                                   "tsn_ABCDEF0123456789_x"])
def test_a_key_id_that_cannot_be_one_is_a_401_on_every_store(
        world: ApiWorld, token: str) -> None:
    answer = world.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401 and "malformed" in answer.json()["detail"]


def test_a_method_a_path_does_not_have_is_a_405_listing_those_it_has(world: ApiWorld) -> None:
    answer = world.client.patch("/v1/subscriptions/north-floods", headers=world.north)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, PUT, DELETE"
    assert world.client.request("OPTIONS", "/v1/subscriptions").headers["allow"] == "GET, POST"


# --- rate limits ------------------------------------------------------------------------------

@pytest.fixture
def rate_limited(world: ApiWorld) -> Iterator[TestClient]:
    """The same store behind an app allowing bursts of 3, then one request a second."""
    settings = ApiSettings(data_dir=world.data_dir, api_rate_per_min=60, api_rate_burst=3)
    app = create_app(settings, sessions=world.sessions, clock=lambda: NOW,
                     resolve=public_resolver)
    with TestClient(app) as client:
        yield client


def test_a_key_over_its_burst_is_a_429_with_retry_after(
        world: ApiWorld, rate_limited: TestClient) -> None:
    answers = [rate_limited.get("/v1/subscriptions", headers=world.north) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert "rate limit" in answers[-1].json()["detail"]


def test_one_keys_rate_limit_does_not_hold_back_another_key(
        world: ApiWorld, rate_limited: TestClient) -> None:
    for _ in range(4):
        rate_limited.get("/v1/subscriptions", headers=world.north)
    assert rate_limited.get("/v1/subscriptions", headers=world.north).status_code == 429
    assert rate_limited.get("/v1/subscriptions", headers=world.south).status_code == 200
    assert rate_limited.get("/v1/agencies", headers=world.admin).status_code == 200


def test_guessing_keys_from_one_address_is_rate_limited_too(
        world: ApiWorld, rate_limited: TestClient) -> None:
    guesses = [rate_limited.get("/v1/me", headers={
        "Authorization": f"Bearer tsn_0123456789abcdef_guess{i}"}) for i in range(4)]
    assert [a.status_code for a in guesses] == [401, 401, 401, 429]
    assert rate_limited.get("/v1/me", headers=world.north).status_code == 200


# --- webhook destinations ---------------------------------------------------------------------

REFUSED_WEBHOOKS = (
    "https://10.0.0.1/hook",
    "https://127.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://internal.north.example/hook",  # resolves to 10.0.0.5
    "http://north.example/hook",
    "https://north.example:99999/hook",
    "https://xn--.example/hook",
    "ftp://north.example/hook",
)


@pytest.mark.parametrize("where", ["channels", "escalation"])
def test_a_webhook_dispatch_would_refuse_is_a_422_naming_the_channel(
        world: ApiWorld, where: str) -> None:
    for address in REFUSED_WEBHOOKS:
        channels = [{"kind": "email", "address": "duty@north.example"},
                    {"kind": "webhook", "address": address}]
        body = subscription(**{where: channels})
        made = world.client.post("/v1/subscriptions", json=body, headers=world.north)
        refused(made, 422, f"{where}.1.address")
        replaced = world.client.put("/v1/subscriptions/north-floods", headers=world.north,
                                    json={k: v for k, v in body.items()
                                          if k != "subscription_id"})
        refused(replaced, 422, f"{where}.1.address")
    with session_scope(world.sessions) as session:
        kept = repo.get_subscription(session, "north-floods")
    assert [c.address for c in kept.channels] == ["https://north.example/h"]
    assert stored_subscriptions(world) == ["north-floods", "south-floods"]


def test_an_allow_listed_internal_host_is_accepted(world: ApiWorld) -> None:
    settings = ApiSettings(data_dir=world.data_dir, api_rate_per_min=0,
                           webhook_allow_hosts=("hooks.internal", "10.20.0.0/16"))
    app = create_app(settings, sessions=world.sessions, clock=lambda: NOW,
                     resolve=lambda _host, _port: ["10.20.0.7"])
    with TestClient(app) as client:
        named = client.post("/v1/subscriptions", headers=world.north, json=subscription(
            channels=[{"kind": "webhook", "address": "http://hooks.internal/alerts"}]))
        assert named.status_code == 201, named.text
        by_network = client.post("/v1/subscriptions", headers=world.north, json=subscription(
            subscription_id="north-edge-2", hazard_kinds=["flood_depth"],
            escalation=[{"kind": "webhook", "address": "https://ops.example/page"}]))
        assert by_network.status_code == 201, by_network.text
        elsewhere = client.post("/v1/subscriptions", headers=world.north, json=subscription(
            subscription_id="north-edge-3", hazard_kinds=["wind_gust"], channels=[
                {"kind": "webhook", "address": "https://10.30.0.1/hook"}]))
        refused(elsewhere, 422, "channels.0.address", "not a public address")
