"""``tocsin api-key`` and ``tocsin serve``: keys made by an operator, the real server on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from alerts.model import Agency
from store import repo
from store.db import session_scope
from workers.cli.main import app
from workers.demo_receivers import free_port, port_open

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str,
        sessions: sessionmaker[Session]) -> dict[str, str]:
    monkeypatch.setenv("TOCSIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOCSIN_DATABASE_URL", db_url)
    with session_scope(sessions) as session:
        repo.add_agency(session, Agency("north", "North"))
    return {**os.environ, "TOCSIN_API_RATE_PER_MIN": "0"}


def _token(args: list[str]) -> str:
    result = runner.invoke(app, ["api-key", "create", *args])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_api_key_create_list_and_revoke_never_show_a_secret_twice(env: dict[str, str]) -> None:
    token = _token(["--agency", "north", "--label", "duty"])
    key_id = token.split("_")[1]
    listed = runner.invoke(app, ["api-key", "list"]).output
    assert key_id in listed and "duty" in listed and token.split("_", 2)[2] not in listed
    assert runner.invoke(app, ["api-key", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["api-key", "revoke", "0000000000000000"]).exit_code == 1


def test_api_key_create_needs_exactly_one_of_agency_or_admin(env: dict[str, str]) -> None:
    assert runner.invoke(app, ["api-key", "create"]).exit_code == 2
    assert runner.invoke(app, ["api-key", "create", "--admin", "--agency", "north"]
                         ).exit_code == 2
    unknown = runner.invoke(app, ["api-key", "create", "--agency", "nobody"])
    assert unknown.exit_code == 2 and "no agency" in unknown.output


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_tocsin_serve_answers_health_the_public_feed_and_a_keyed_route(
        env: dict[str, str]) -> None:
    token = _token(["--agency", "north"])
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from workers.cli.main import main; main()", "serve",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, "tocsin serve did not listen within 60 s"
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        assert _get(f"{base}/health") == (200, b'{"status":"ok","store":"ok"}')
        status, feed = _get(f"{base}/feed/public.atom")
        assert status == 200 and b"<feed" in feed
        status, me = _get(f"{base}/v1/me", token)
        assert status == 200 and json.loads(me)["agency_id"] == "north"
        assert _get(f"{base}/v1/me")[0] == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr:
            server.stderr.close()
