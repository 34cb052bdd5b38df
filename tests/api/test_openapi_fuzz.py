"""A property-based run of the API's own OpenAPI document (schemathesis) over every route.

Each operation gets a bounded number of generated requests, valid and invalid, sent with an
agency key, an admin key and no key; every answer must be a documented status code with a
documented content type and a body that matches its schema, and never a 5xx. The store is
SQLite, seeded like the other API tests; path parameters are sometimes the seeded records'
ids, so routes on ids reach real records and not only 404s.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import HookContext
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.orm import sessionmaker
from tocsin_testing.api import NOW, public_resolver, seed

from api import create_app
from api.settings import ApiSettings
from store.db import make_engine, make_session_factory, upgrade

MAX_EXAMPLES = int(os.environ.get("TOCSIN_FUZZ_EXAMPLES", "12"))
"""Generated requests per operation and key, on top of the coverage cases (more: set
``TOCSIN_FUZZ_EXAMPLES``, and ``TOCSIN_FUZZ_RANDOM=1`` for another seed each run)."""

FUZZ_SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None,
    derandomize=os.environ.get("TOCSIN_FUZZ_RANDOM", "") != "1",
    suppress_health_check=list(HealthCheck), print_blob=False)


class _Target:
    """The ASGI app the schema calls: the seeded app, installed by the ``seeded`` fixture.

    The schema is loaded when the module is imported (schemathesis parametrizes, and builds
    some cases, at collection), before any store or key exists. Cases carry a placeholder
    token (``Bearer seeded:north``) that is swapped for the seeded key's as each request
    arrives.
    """

    def __init__(self) -> None:
        self.app: FastAPI | None = None
        self.ids: dict[str, str] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the seeded fixture installs the app"
        if scope["type"] == "http":
            scope = dict(scope, headers=[self._swapped(n, v) for n, v in scope["headers"]])
        await self.app(scope, receive, send)

    def _swapped(self, name: bytes, value: bytes) -> tuple[bytes, bytes]:
        if name == b"authorization" and value.startswith(PLACEHOLDER):
            token = self.ids[value[len(PLACEHOLDER):].decode()]
            return name, f"Bearer {token}".encode()
        return name, value


PLACEHOLDER = b"Bearer seeded:"
TARGET = _Target()


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app on a store that is never opened."""
    settings = ApiSettings(data_dir=Path("unused-data-dir"), api_rate_per_min=0)
    return create_app(settings, sessions=sessionmaker(), migrate=False).openapi()


DOCUMENT = _document()


def _real_ids(ids: dict[str, str]) -> dict[str, list[str]]:
    """Seeded values per path-parameter name (owned by north, south, or nobody)."""
    return {
        "subscription_id": ["north-floods", "south-floods"],
        "identifier": [ids["north_alert"], ids["south_alert"], ids["shared_alert"]],
        "agency_id": ["north", "south"],
        "key_id": [ids["north_key_id"], ids["south_key_id"]],
    }


def _patterns(path: str, method: str) -> dict[str, re.Pattern[str]]:
    """The documented pattern of each path parameter of one operation."""
    parameters = DOCUMENT["paths"][path][method.lower()].get("parameters", [])
    return {p["name"]: re.compile(p["schema"]["pattern"]) for p in parameters
            if p["in"] == "path" and "pattern" in p.get("schema", {})}


def flatmap_path_parameters(context: HookContext, path_parameters: dict[str, Any]
                            ) -> st.SearchStrategy[dict[str, Any]]:
    """The generated path parameters, or (as often) seeded ids in their place.

    Only valid parameters are replaced, so a negative case stays negative.
    """
    known = _real_ids(TARGET.ids)
    operation = context.operation
    assert operation is not None
    patterns = _patterns(operation.path, operation.method)
    names = [n for n in path_parameters or {} if n in known]
    valid = all(isinstance(path_parameters[n], str) and n in patterns
                and patterns[n].search(path_parameters[n]) for n in names)
    if not names or not valid:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.fixed_dictionaries({
        name: st.sampled_from(known[name]) if name in known else st.just(value)
        for name, value in path_parameters.items()}))


def _schema(token_name: str | None) -> BaseSchema:
    """The document as schemathesis tests it, sending the named seeded token (or none)."""
    loaded = schemathesis.openapi.from_dict(DOCUMENT)
    loaded.app = TARGET
    loaded.hook(flatmap_path_parameters)
    if token_name is not None:

        @loaded.auth(refresh_interval=None, retry_on=[])
        class _SeededKey:
            def get(self, _case: schemathesis.Case, _ctx: schemathesis.AuthContext) -> str:
                return f"{PLACEHOLDER.decode()}{token_name}"

            def set(self, case: schemathesis.Case, data: str,
                    _ctx: schemathesis.AuthContext) -> None:
                case.headers = {**(case.headers or {}), "Authorization": data}

    return loaded


AS_AGENCY = _schema("north")
AS_ADMIN = _schema("admin")
ANONYMOUS = _schema(None)


@contextmanager
def _installed(data_dir: Path) -> Iterator[dict[str, str]]:
    """A seeded SQLite store under ``data_dir`` and its app (rate limits off) as the target."""
    engine = make_engine(data_dir=data_dir)
    upgrade(engine)
    sessions = make_session_factory(engine)
    previous = TARGET.app, TARGET.ids
    TARGET.ids = seed(sessions, NOW)
    settings = ApiSettings(data_dir=data_dir, api_rate_per_min=0)
    TARGET.app = create_app(settings, sessions=sessions, clock=lambda: NOW,
                            resolve=public_resolver)
    try:
        yield TARGET.ids
    finally:
        TARGET.app, TARGET.ids = previous
        engine.dispose()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One seeded store for every generated request of the module."""
    with _installed(tmp_path_factory.mktemp("fuzz") / "data") as ids:
        yield ids


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A seeded store of the test's own (its requests may delete what they name)."""
    with _installed(tmp_path / "data") as ids:
        yield ids


def _call_and_validate(case: schemathesis.Case) -> None:
    # Schema-valid is not always meaningful: the API also checks what a schema cannot say
    # (areas inside the region, E.164 numbers, a cursor it handed out), so that check is off.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


@AS_AGENCY.parametrize()
@FUZZ_SETTINGS
def test_no_route_fails_or_breaks_its_schema_for_an_agency_key(
        case: schemathesis.Case, seeded: dict[str, str]) -> None:
    _call_and_validate(case)


@AS_ADMIN.parametrize()
@FUZZ_SETTINGS
def test_no_route_fails_or_breaks_its_schema_for_an_admin_key(
        case: schemathesis.Case, seeded: dict[str, str]) -> None:
    _call_and_validate(case)


@ANONYMOUS.parametrize()
@FUZZ_SETTINGS
def test_no_route_fails_or_breaks_its_schema_without_a_key(
        case: schemathesis.Case, seeded: dict[str, str]) -> None:
    _call_and_validate(case)


# --- every route on ids, on the seeded records themselves -------------------------------------

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/v1/subscriptions/{subscription_id}"): {
        "area": {"type": "Polygon", "coordinates": [[[7.1, 46.1], [7.3, 46.1], [7.3, 46.3],
                                                     [7.1, 46.1]]]},
        "channels": [{"kind": "webhook", "address": "https://north.example/h"}]},
    ("POST", "/v1/alerts/{identifier}/ack"): {"by": "fuzz"},
    ("POST", "/v1/agencies/{agency_id}/keys"): {"label": "fuzz", "expires_in_days": 1},
}


def _on_seeded_ids() -> list[tuple[str, str]]:
    """(method, path) of every operation whose path parameters are all seeded kinds."""
    known = set(_real_ids({"north_alert": "", "south_alert": "", "shared_alert": "",
                           "north_key_id": "", "south_key_id": ""}))
    return [(method.upper(), path) for path, item in DOCUMENT["paths"].items()
            for method in item if "{" in path
            and set(re.findall(r"{(\w+)}", path)) <= known]


@pytest.mark.parametrize("token_name", ["north", "south", "admin", None])
@pytest.mark.parametrize(("method", "path"), _on_seeded_ids())
def test_routes_on_seeded_records_answer_within_their_schema(
        fresh: dict[str, str], method: str, path: str, token_name: str | None) -> None:
    operation = ANONYMOUS[path][method]
    names = re.findall(r"{(\w+)}", path)
    headers = {"Authorization": f"{PLACEHOLDER.decode()}{token_name}"} if token_name else {}
    body = BODIES.get((method, path))
    for values in itertools.product(*(_real_ids(fresh)[n] for n in names)):
        case = operation.Case(path_parameters=dict(zip(names, values, strict=True)),
                              headers=headers, **({"body": body} if body else {}))
        _call_and_validate(case)
