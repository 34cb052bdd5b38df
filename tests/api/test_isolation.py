"""Agency isolation and authentication, route by route, from one table of every route.

The table names every route the app serves, with who may call it and a request on it that
would succeed for the right caller (aimed at North's records). Each test runs that request
with a wrong key: another agency's, none, a malformed, unknown, expired or revoked one, an
admin key on agency routes and an agency key on admin routes; every refused request must
leave the store exactly as it was. A route added later without a row fails the coverage test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing.api import NOW, ApiWorld, bearer, public_resolver

from api import create_app
from api.settings import ApiSettings
from store import api_store
from store.db import session_scope
from store.models import Base

Role = Literal["agency", "admin", "any", "public"]

AREA = {"type": "Polygon", "coordinates": [[[7.1, 46.1], [7.3, 46.1], [7.3, 46.3],
                                            [7.1, 46.3], [7.1, 46.1]]]}
SUBSCRIPTION = {"area": AREA, "hazard_kinds": ["flood_depth"], "min_level": "orange",
                "channels": [{"kind": "webhook", "address": "https://taken.example/hook"}]}


@dataclass(frozen=True)
class Call:
    """One route, who may call it, and a request on it that its rightful caller could make."""

    method: str
    path: str
    role: Role
    url: Callable[[ApiWorld], str]
    json: dict[str, Any] | None = None
    files: dict[str, Any] | None = None

    @property
    def writes(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    def send(self, world: ApiWorld, headers: dict[str, str] | None = None) -> Any:
        return world.client.request(self.method, self.url(world), json=self.json,
                                    files=self.files, headers=headers or {})

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _at(path: str) -> Callable[[ApiWorld], str]:
    return lambda _world: path


ROUTES: tuple[Call, ...] = (
    Call("GET", "/health", "public", _at("/health")),
    Call("GET", "/metrics", "public", _at("/metrics")),
    Call("GET", "/feed/public.atom", "public", _at("/feed/public.atom")),
    Call("GET", "/cap/{identifier}.xml", "public", lambda w: f"/cap/{w.north_alert}.xml"),
    Call("GET", "/v1/me", "any", _at("/v1/me")),
    Call("GET", "/v1/subscriptions", "agency", _at("/v1/subscriptions")),
    Call("POST", "/v1/subscriptions", "agency", _at("/v1/subscriptions"),
         json={"subscription_id": "new-one", **SUBSCRIPTION}),
    Call("GET", "/v1/subscriptions/{subscription_id}", "agency",
         _at("/v1/subscriptions/north-floods")),
    Call("PUT", "/v1/subscriptions/{subscription_id}", "agency",
         _at("/v1/subscriptions/north-floods"), json=SUBSCRIPTION),
    Call("DELETE", "/v1/subscriptions/{subscription_id}", "agency",
         _at("/v1/subscriptions/north-floods")),
    Call("GET", "/v1/alerts", "agency", _at("/v1/alerts")),
    Call("GET", "/v1/alerts/{identifier}", "agency", lambda w: f"/v1/alerts/{w.north_alert}"),
    Call("GET", "/v1/alerts/{identifier}/cap", "agency",
         lambda w: f"/v1/alerts/{w.north_alert}/cap"),
    Call("POST", "/v1/alerts/{identifier}/ack", "agency",
         lambda w: f"/v1/alerts/{w.north_alert}/ack", json={"by": "duty desk"}),
    Call("GET", "/v1/deliveries", "agency", lambda w: f"/v1/deliveries?alert={w.north_alert}"),
    Call("POST", "/v1/agencies", "admin", _at("/v1/agencies"),
         json={"agency_id": "west", "name": "West"}),
    Call("GET", "/v1/agencies", "admin", _at("/v1/agencies")),
    Call("POST", "/v1/agencies/{agency_id}/keys", "admin", _at("/v1/agencies/north/keys"),
         json={"label": "second"}),
    Call("GET", "/v1/agencies/{agency_id}/keys", "admin", _at("/v1/agencies/north/keys")),
    Call("DELETE", "/v1/keys/{key_id}", "admin", lambda w: f"/v1/keys/{w.north_key_id}"),
    # Overlay jobs (any key; each key sees its own jobs, tested with the jobs routes).
    Call("POST", "/v1/jobs", "any", _at("/v1/jobs"), files={"region": (None, "sample")}),
    Call("GET", "/v1/jobs", "any", _at("/v1/jobs")),
    Call("GET", "/v1/jobs/{job_id}", "any", _at(f"/v1/jobs/{'0' * 32}")),
    Call("GET", "/v1/jobs/{job_id}/results/{name}", "any",
         _at(f"/v1/jobs/{'0' * 32}/results/exposure.csv")),
)
KEYED = tuple(c for c in ROUTES if c.role != "public")
AGENCY_ROUTES = tuple(c for c in ROUTES if c.role == "agency")
ADMIN_ROUTES = tuple(c for c in ROUTES if c.role == "admin")


def _plain(value: Any) -> Any:
    data = getattr(value, "data", None)  # a geometry (WKB element) on PostGIS
    return bytes(data) if isinstance(data, bytes | memoryview) else value


def snapshot(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, comparable: what "the store is unchanged" means."""
    with session_scope(sessions) as session:
        return {table.name: sorted((tuple(repr(_plain(v)) for v in row)
                                    for row in session.execute(select(table))), key=repr)
                for table in Base.metadata.sorted_tables}


def _key(world: ApiWorld, *, expires_in: timedelta | None = None, revoked: bool = False,
         role: str = "agency") -> dict[str, str]:
    """A new key of North's (or an admin's), expiring or revoked as asked."""
    with session_scope(world.sessions) as session:
        created = NOW - timedelta(days=2)
        key, token = api_store.create_api_key(
            session, role=role, agency_id="north" if role == "agency" else None,
            label="made by the test", now=created,
            expires_at=NOW + expires_in if expires_in is not None else None)
        if revoked:
            api_store.revoke_api_key(session, key.key_id, now=NOW - timedelta(minutes=1))
    return bearer(token)


def _refused(world: ApiWorld, calls: tuple[Call, ...], headers: dict[str, str] | None,
             status: int, words: str = "") -> list[str]:
    """Send each call; the problems: a status other than ``status``, or a changed store."""
    problems = []
    for call in calls:
        before = snapshot(world.sessions)
        answer = call.send(world, headers)
        detail = answer.json().get("detail", "") if answer.headers.get(
            "content-type", "").startswith("application/json") else ""
        if answer.status_code != status:
            problems.append(f"{call}: {answer.status_code} {answer.text[:200]}")
        elif words and words not in detail.lower():
            problems.append(f"{call}: detail {detail!r} does not say {words!r}")
        elif status == 401 and "bearer" not in answer.headers.get("www-authenticate", "").lower():
            problems.append(f"{call}: 401 without a WWW-Authenticate: Bearer challenge")
        if snapshot(world.sessions) != before:
            problems.append(f"{call}: the store changed")
    return problems


def _served(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every API route, inside included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((method, prefix + route.path) for method in route.methods)
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _served(inner.routes, prefix + getattr(context, "prefix", ""))


def test_every_route_the_app_serves_has_a_row_in_the_table(world: ApiWorld) -> None:
    served = set(_served(world.client.app.routes))
    documented = {(method.upper(), path) for path, item in
                  world.client.get("/openapi.json").json()["paths"].items() for method in item}
    assert documented <= served
    tabled = {(c.method, c.path) for c in ROUTES}
    assert served - tabled == set(), "add these routes to ROUTES, with who may call them"
    assert tabled - served == set(), "these rows name routes the app does not serve"


def test_every_keyed_route_refuses_a_request_without_a_key(world: ApiWorld) -> None:
    assert _refused(world, KEYED, None, 401, "api key is required") == []


@pytest.mark.parametrize(("kind", "header", "words"), [
    ("not a tsn token", {"Authorization": "Bearer not-a-key"}, "malformed"),
    ("an empty bearer", {"Authorization": "Bearer "}, "api key is required"),
    ("another scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, "api key is required"),
    ("a key id that is not one", {"Authorization": "Bearer tsn_north-floods_x"}, "malformed"),
    ("an unknown key", {"Authorization": "Bearer tsn_0123456789abcdef_secret"}, "unknown"),
])
def test_every_keyed_route_refuses_a_malformed_or_unknown_key(
        world: ApiWorld, kind: str, header: dict[str, str], words: str) -> None:
    assert _refused(world, KEYED, header, 401, words) == [], kind


def test_every_keyed_route_refuses_a_real_key_id_with_a_wrong_secret(world: ApiWorld) -> None:
    forged = {"Authorization": f"Bearer tsn_{world.north_key_id}_guessed"}
    assert _refused(world, KEYED, forged, 401, "unknown") == []


def test_every_keyed_route_refuses_an_expired_key_saying_so(world: ApiWorld) -> None:
    expired = _key(world, expires_in=timedelta(hours=-1))
    assert _refused(world, KEYED, expired, 401, "expired") == []


def test_every_keyed_route_refuses_a_revoked_key_saying_so(world: ApiWorld) -> None:
    for role in ("agency", "admin"):
        revoked = _key(world, revoked=True, role=role)
        assert _refused(world, KEYED, revoked, 401, "revoked") == [], role


def test_a_key_stops_working_the_moment_the_app_clock_passes_its_expiry(
        world: ApiWorld) -> None:
    token = _key(world, expires_in=timedelta(hours=1))
    now = [NOW]
    settings = ApiSettings(data_dir=world.data_dir, api_rate_per_min=0)
    app = create_app(settings, sessions=world.sessions, clock=lambda: now[0],
                     resolve=public_resolver)
    with TestClient(app) as client:
        assert client.get("/v1/subscriptions", headers=token).status_code == 200
        now[0] = NOW + timedelta(hours=1)
        late = client.get("/v1/subscriptions", headers=token)
    assert late.status_code == 401 and "expired" in late.json()["detail"]


def test_an_admin_key_is_refused_on_every_agency_route(world: ApiWorld) -> None:
    assert _refused(world, AGENCY_ROUTES, world.admin, 403, "agency keys") == []


def test_an_agency_key_is_refused_on_every_admin_route(world: ApiWorld) -> None:
    assert _refused(world, ADMIN_ROUTES, world.north, 403, "admin key") == []
    assert _refused(world, ADMIN_ROUTES, world.south, 403, "admin key") == []


def test_the_right_keys_are_let_through_so_the_refusals_above_mean_something(
        world: ApiWorld) -> None:
    reads = [c for c in ROUTES if not c.writes and c.role != "any"]
    for call in reads:
        token = {"agency": world.north, "admin": world.admin, "public": {}}[call.role]
        assert call.send(world, token).status_code == 200, call
    create = next(c for c in ROUTES if (c.method, c.path) == ("POST", "/v1/subscriptions"))
    assert create.send(world, world.north).status_code == 201


# --- one agency's records, through the other agency's key -------------------------------

OTHERS_RECORDS = tuple(c for c in AGENCY_ROUTES if "{" in c.path)


def test_another_agencys_records_are_not_found_on_every_route_on_ids(world: ApiWorld) -> None:
    assert {c.path for c in OTHERS_RECORDS} == {
        "/v1/subscriptions/{subscription_id}", "/v1/alerts/{identifier}",
        "/v1/alerts/{identifier}/cap", "/v1/alerts/{identifier}/ack"}
    assert _refused(world, OTHERS_RECORDS, world.south, 404) == []


def test_not_found_reads_the_same_for_anothers_record_and_for_none(world: ApiWorld) -> None:
    theirs = world.client.get("/v1/subscriptions/north-floods", headers=world.south)
    nobodys = world.client.get("/v1/subscriptions/nobody-has-it", headers=world.south)
    assert theirs.status_code == nobodys.status_code == 404
    assert theirs.json()["detail"].replace("north-floods", "X") == \
        nobodys.json()["detail"].replace("nobody-has-it", "X")
    alert = world.client.get(f"/v1/alerts/{world.north_alert}", headers=world.south)
    assert alert.status_code == 404 and "north" not in alert.json()["detail"].replace(
        world.north_alert, "")


LISTINGS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/v1/subscriptions", {}),
    ("/v1/alerts", {}),
    ("/v1/alerts", {"bbox": "7.0,46.0,7.5,46.5"}),
    ("/v1/alerts", {"hazard": "flood_depth"}),
    ("/v1/alerts", {"level": "red"}),
    ("/v1/alerts", {"since": "2026-05-12T00:00:00Z", "limit": "500"}),
    ("/v1/deliveries", {}),
    ("/v1/deliveries", {"alert": "tocsin-ev-north-001"}),
    ("/v1/deliveries", {"status": "pending"}),
)


@pytest.mark.parametrize(("path", "params"), LISTINGS)
def test_listings_never_hold_another_agencys_records(
        world: ApiWorld, path: str, params: dict[str, str]) -> None:
    answer = world.client.get(path, params=params, headers=world.south)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    text = answer.text
    assert "north" not in text.replace("northern", ""), f"{path} {params} shows North's"
    items = body if isinstance(body, list) else body["items"]
    assert world.north_alert not in {i.get("identifier", i.get("alert_identifier"))
                                     for i in items}


def test_a_cursor_from_one_agencys_listing_shows_the_other_only_its_own(
        world: ApiWorld) -> None:
    first = world.client.get("/v1/alerts", params={"limit": 1}, headers=world.north).json()
    assert first["next"] is not None
    reused = world.client.get("/v1/alerts", params={"cursor": first["next"]},
                              headers=world.south)
    assert reused.status_code == 200
    assert world.north_alert not in reused.text


def test_an_alert_both_agencies_got_shows_each_only_its_own_figures(world: ApiWorld) -> None:
    assert world.client.post(f"/v1/alerts/{world.shared_alert}/ack",
                             headers=world.north).json()["new"] is True
    seen = world.client.get(f"/v1/alerts/{world.shared_alert}", headers=world.south).json()
    assert [m["subscription_id"] for m in seen["matches"]] == ["south-floods"]
    assert seen["acknowledged"] is False  # North's acknowledgement is North's
    assert world.client.post(f"/v1/alerts/{world.shared_alert}/ack",
                             headers=world.south).json()["new"] is True


def test_an_agency_cannot_take_anothers_subscription_id_or_speak_for_it(
        world: ApiWorld) -> None:
    before = snapshot(world.sessions)
    taken = world.client.post("/v1/subscriptions", headers=world.south,
                              json={"subscription_id": "north-floods", **SUBSCRIPTION})
    assert taken.status_code == 409
    assert "north" not in taken.json()["detail"].replace("north-floods", "")
    as_north = world.client.post("/v1/subscriptions", headers=world.south, json={
        "subscription_id": "sneaky", "agency_id": "north", **SUBSCRIPTION})
    assert as_north.status_code == 422
    assert as_north.json()["errors"][0]["field"] == "agency_id"
    assert snapshot(world.sessions) == before
