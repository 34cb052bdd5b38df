"""Agency routes: subscriptions, alerts, CAP, deliveries and acknowledgement, end to end."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from lxml import etree
from tocsin_testing.api import NOW, ApiWorld, public_resolver
from tocsin_testing.tiny_pack import build_pack

from alerts.cap_schema import schema_problems
from api import create_app
from api.settings import ApiSettings
from feeds.region import subscription_context
from store import repo
from store.db import session_scope

AREA = {"type": "Polygon", "coordinates": [[[7.1, 46.1], [7.3, 46.1], [7.3, 46.3],
                                            [7.1, 46.3], [7.1, 46.1]]]}


def _new_subscription(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "subscription_id": "north-quakes", "area": AREA, "hazard_kinds": ["shaking_mmi"],
        "min_level": "orange", "channels": [{"kind": "webhook",
                                             "address": "https://north.example/quakes"}],
        "languages": ["en", "fr"]}
    body.update(overrides)
    return body


def test_an_agency_creates_reads_replaces_and_deletes_its_subscription(world: ApiWorld) -> None:
    made = world.client.post("/v1/subscriptions", json=_new_subscription(), headers=world.north)
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == "/v1/subscriptions/north-quakes"
    assert made.json()["agency_id"] == "north"
    assert made.json()["area"]["type"] == "MultiPolygon"
    got = world.client.get("/v1/subscriptions/north-quakes", headers=world.north).json()
    assert got["hazard_kinds"] == ["shaking_mmi"] and got["min_level"] == "orange"
    body = _new_subscription(min_level="red")
    del body["subscription_id"]
    replaced = world.client.put("/v1/subscriptions/north-quakes", json=body, headers=world.north)
    assert replaced.status_code == 200, replaced.text
    with session_scope(world.sessions) as session:
        assert repo.get_subscription(session, "north-quakes").min_level.value == "red"
    listed = world.client.get("/v1/subscriptions", headers=world.north).json()
    assert [s["subscription_id"] for s in listed] == ["north-floods", "north-quakes"]
    assert world.client.delete("/v1/subscriptions/north-quakes",
                               headers=world.north).status_code == 204
    assert world.client.get("/v1/subscriptions/north-quakes",
                            headers=world.north).status_code == 404


def test_an_invalid_area_is_refused_with_the_field_named(world: ApiWorld) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[7, 46], [7.2, 46.2], [7.2, 46], [7, 46.2],
                                                  [7, 46]]]}
    answer = world.client.post("/v1/subscriptions", json=_new_subscription(area=bowtie),
                               headers=world.north)
    assert answer.status_code == 422
    assert "invalid" in answer.json()["detail"].lower()
    with session_scope(world.sessions) as session:
        assert [s.subscription_id for s in repo.list_subscriptions(session, "north")] == [
            "north-floods"]


def test_an_area_over_the_vertex_limit_is_refused(world: ApiWorld) -> None:
    ring = [[7 + i * 1e-5, 46 + (i % 2) * 1e-5] for i in range(25_000)] + [[7, 46]]
    answer = world.client.post("/v1/subscriptions", json=_new_subscription(
        area={"type": "Polygon", "coordinates": [ring]}), headers=world.north)
    assert answer.status_code in (413, 422)


def test_a_webhook_to_a_private_address_is_refused_naming_the_channel(world: ApiWorld) -> None:
    answer = world.client.post("/v1/subscriptions", json=_new_subscription(channels=[
        {"kind": "email", "address": "duty@north.example"},
        {"kind": "webhook", "address": "https://internal.north.example/hook"}]),
        headers=world.north)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "channels.1.address"
    plain = world.client.post("/v1/subscriptions", json=_new_subscription(channels=[
        {"kind": "webhook", "address": "http://north.example/hook"}]), headers=world.north)
    assert plain.status_code == 422 and "https is required" in plain.json()["detail"]


def test_an_agency_lists_only_the_alerts_that_matched_it_newest_first(world: ApiWorld) -> None:
    page = world.client.get("/v1/alerts", headers=world.north).json()
    assert [a["identifier"] for a in page["items"]] == [world.shared_alert, world.north_alert]
    assert page["next"] is None
    assert page["items"][0]["level"] == "orange"


def test_alert_listing_filters_by_bbox_hazard_level_and_time(world: ApiWorld) -> None:
    def ids(**params: object) -> list[str]:
        answer = world.client.get("/v1/alerts", params=params, headers=world.south)
        assert answer.status_code == 200, answer.text
        return [a["identifier"] for a in answer.json()["items"]]

    assert ids(bbox="8.1,46.1,8.2,46.2") == [world.shared_alert, world.south_alert]
    assert ids(bbox="0,0,1,1") == []
    assert ids(hazard="flood_depth") == [world.south_alert]
    assert ids(level="orange") == [world.shared_alert]
    assert ids(since="2026-05-12T06:02:00Z") == [world.shared_alert]
    assert ids(until="2026-05-12T06:02:00Z") == [world.south_alert]


def test_alert_pages_follow_the_cursor_without_repeats(world: ApiWorld) -> None:
    first = world.client.get("/v1/alerts", params={"limit": 1}, headers=world.north).json()
    second = world.client.get("/v1/alerts", params={"limit": 1, "cursor": first["next"]},
                              headers=world.north).json()
    assert [a["identifier"] for a in first["items"] + second["items"]] == [
        world.shared_alert, world.north_alert]
    assert second["next"] is None
    bad = world.client.get("/v1/alerts", params={"cursor": "not-a-cursor"}, headers=world.north)
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]


def test_a_bad_bbox_or_naive_time_is_a_422_naming_the_parameter(world: ApiWorld) -> None:
    bbox = world.client.get("/v1/alerts", params={"bbox": "9,9,1,1"}, headers=world.north)
    assert bbox.status_code == 422 and bbox.json()["detail"].startswith("bbox")
    naive = world.client.get("/v1/alerts", params={"since": "2026-05-12T06:00:00"},
                             headers=world.north)
    assert naive.status_code == 422 and naive.json()["detail"].startswith("since")


def test_one_alert_as_json_and_as_its_exact_cap_bytes(world: ApiWorld) -> None:
    detail = world.client.get(f"/v1/alerts/{world.north_alert}", headers=world.north).json()
    assert detail["priority"]["level"] == "red"
    assert [m["subscription_id"] for m in detail["matches"]] == ["north-floods"]
    assert detail["matches"][0]["population"] == 4000
    assert detail["acknowledged"] is False
    cap = world.client.get(f"/v1/alerts/{world.north_alert}/cap", headers=world.north)
    assert cap.headers["content-type"] == "application/cap+xml"
    with session_scope(world.sessions) as session:
        assert cap.content == repo.get_alert(session, world.north_alert).cap_bytes
    assert schema_problems(etree.fromstring(cap.content)) == []


def test_acknowledging_an_alert_is_recorded_once(world: ApiWorld) -> None:
    url = f"/v1/alerts/{world.north_alert}/ack"
    first = world.client.post(url, json={"by": "duty desk"}, headers=world.north)
    assert first.status_code == 200 and first.json()["new"] is True
    again = world.client.post(url, headers=world.north)
    assert again.json()["new"] is False
    detail = world.client.get(f"/v1/alerts/{world.north_alert}", headers=world.north).json()
    assert detail["acknowledged"] is True


def test_deliveries_are_listed_with_their_addresses_redacted(world: ApiWorld) -> None:
    page = world.client.get("/v1/deliveries", headers=world.north).json()
    assert {d["alert_identifier"] for d in page["items"]} == {world.north_alert,
                                                              world.shared_alert}
    assert all(d["channel"]["address"] == "https://north.example/hook?…" for d in page["items"])
    assert all(d["status"] == "pending" for d in page["items"])
    only = world.client.get("/v1/deliveries", params={"alert": world.north_alert},
                            headers=world.north).json()
    assert [d["alert_identifier"] for d in only["items"]] == [world.north_alert]


def test_an_agency_publishes_only_into_cap_feeds_named_after_itself(world: ApiWorld) -> None:
    def channels(name: str) -> list[dict[str, str]]:
        return [{"kind": "cap_feed", "address": name}]

    for theirs in ("public", "south", "northern"):
        refused = world.client.post("/v1/subscriptions", json=_new_subscription(
            channels=channels(theirs)), headers=world.north)
        assert refused.status_code == 422, theirs
        assert refused.json()["errors"][0]["field"] == "channels.0.address"
    own = world.client.post("/v1/subscriptions", json=_new_subscription(
        channels=channels("north-quakes")), headers=world.north)
    assert own.status_code == 201, own.text


def test_with_a_deployment_region_zone_codes_and_areas_are_checked_against_it(
        world: ApiWorld, tmp_path: Path) -> None:
    build_pack(tmp_path / "tiny")
    manifest = tmp_path / "tiny" / "region.toml"
    minx, miny, maxx, maxy = subscription_context(manifest)[0]
    app = create_app(ApiSettings(data_dir=world.data_dir, api_rate_per_min=0, region=manifest),
                     sessions=world.sessions, clock=lambda: NOW, resolve=public_resolver)
    inside = {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy],
                                                  [minx, maxy], [minx, miny]]]}
    far = {"type": "Polygon", "coordinates": [[[100, 10], [101, 10], [101, 11], [100, 11],
                                               [100, 10]]]}
    with TestClient(app) as client:
        def post(sub_id: str, **body: object) -> int:
            fields = _new_subscription(**{"subscription_id": sub_id, "area": None, **body})
            return client.post("/v1/subscriptions", json=fields, headers=world.north).status_code

        assert post("zones-ok", zone_codes=["A"]) == 201
        assert post("zones-unknown", zone_codes=["Z9"]) == 422
        assert post("area-inside", area=inside) == 201
        assert post("area-far", area=far) == 422


def test_replacing_a_subscription_with_the_settings_of_another_is_a_409(
        world: ApiWorld) -> None:
    assert world.client.post("/v1/subscriptions", json=_new_subscription(),
                             headers=world.north).status_code == 201
    twin = world.client.get("/v1/subscriptions/north-floods", headers=world.north).json()
    body = _new_subscription(area=twin["area"], hazard_kinds=[], channels=twin["channels"],
                             min_level="yellow", languages=["en"])
    del body["subscription_id"]
    answer = world.client.put("/v1/subscriptions/north-quakes", json=body, headers=world.north)
    assert answer.status_code == 409 and "north-floods" in answer.json()["detail"]
    unchanged = world.client.get("/v1/subscriptions/north-quakes", headers=world.north).json()
    assert unchanged["hazard_kinds"] == ["shaking_mmi"]
    # Replacing a subscription with its own settings is no duplicate of itself.
    del twin["subscription_id"], twin["agency_id"]
    same = world.client.put("/v1/subscriptions/north-floods", json=twin, headers=world.north)
    assert same.status_code == 200, same.text
