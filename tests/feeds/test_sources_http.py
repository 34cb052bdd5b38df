"""The HTTP source against a real local server: conditional GETs, politeness, backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from feeds.archive import Archive
from feeds.feed_config import FeedConfig, HttpSourceConfig
from feeds.source_http import HttpSource
from feeds.sources import make_source

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LAST_MODIFIED = "Wed, 01 May 2024 10:00:00 GMT"


@dataclass
class Reply:
    """One scripted answer; ``None`` fields fall back to the resource's current state."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes | None = None


@dataclass
class Resource:
    """What the server serves at ``/depth.tif``, plus scripted one-off replies."""

    body: bytes = b"II*\x00 depth v1"
    etag: str = '"v1"'
    last_modified: str = LAST_MODIFIED
    script: list[Reply] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)


def make_handler(resource: Resource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            resource.requests.append({"path": self.path, **dict(self.headers)})
            if self.path == "/moved":
                self._send(302, {"Location": "/depth.tif"}, b"")
                return
            if self.path != "/depth.tif":
                self._send(404, {}, b"not here")
                return
            reply = resource.script.pop(0) if resource.script else Reply()
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.status != 200:
                self._send(reply.status, reply.headers, reply.body or b"error")
                return
            if self.headers.get("If-None-Match") == resource.etag:
                self._send(304, {"ETag": resource.etag}, b"")
                return
            headers = {"ETag": resource.etag, "Last-Modified": resource.last_modified,
                       "Content-Type": "image/tiff", **reply.headers}
            self._send(200, headers, reply.body if reply.body is not None else resource.body)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

    return Handler


@pytest.fixture
def served() -> Iterator[tuple[str, Resource]]:
    resource = Resource()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(resource))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", resource
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as shared:
        yield shared


def http_source(tmp_path, url: str, client: httpx.Client | None, **source: object) -> HttpSource:
    options = {"min_interval_s": 0.0, "timeout_s": 2.0, "max_backoff_s": 50.0, **source}
    feed = FeedConfig(id="gauge", source=HttpSourceConfig(url=url, **options),
                      poll_interval_s=10.0)
    made = make_source(feed, Archive(tmp_path / "archive"), client=client)
    assert isinstance(made, HttpSource)
    return made


def test_a_200_is_archived_with_its_etag_and_last_modified(tmp_path, served, client):
    base, resource = served
    result = http_source(tmp_path, base + "/depth.tif", client).poll({}, now=T0)
    [payload] = result.payloads
    assert result.error is None and payload.path.read_bytes() == resource.body
    assert payload.etag == '"v1"' and payload.last_modified == LAST_MODIFIED
    assert payload.issued_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert payload.media_type == "image/tiff" and payload.original_name == "depth.tif"
    assert payload.source_uri == base + "/depth.tif" and payload.fetched_at == T0
    assert result.state["etag"] == '"v1"' and result.state["failures"] == 0
    assert result.next_poll_at == T0 + timedelta(seconds=10)


def test_an_unchanged_resource_answers_304_and_gives_no_payload(tmp_path, served, client):
    base, resource = served
    source = http_source(tmp_path, base + "/depth.tif", client)
    first = source.poll({}, now=T0)
    second = source.poll(first.state, now=T0 + timedelta(seconds=10))
    assert second.payloads == [] and second.error is None
    assert "not modified" in second.notes[0]
    assert resource.requests[-1]["If-None-Match"] == '"v1"'
    assert resource.requests[-1]["If-Modified-Since"] == LAST_MODIFIED


def test_a_new_version_is_fetched_once_the_etag_changes(tmp_path, served, client):
    base, resource = served
    source = http_source(tmp_path, base + "/depth.tif", client)
    first = source.poll({}, now=T0)
    resource.body, resource.etag = b"II*\x00 depth v2", '"v2"'
    resource.last_modified = "Wed, 01 May 2024 11:00:00 GMT"
    [payload] = source.poll(first.state, now=T0 + timedelta(seconds=10)).payloads
    assert payload.path.read_bytes() == b"II*\x00 depth v2" and payload.etag == '"v2"'


def test_the_polite_minimum_interval_holds_whatever_the_caller_asks(tmp_path, served, client):
    base, resource = served
    source = http_source(tmp_path, base + "/depth.tif", client, min_interval_s=60.0)
    first = source.poll({}, now=T0)
    assert first.next_poll_at == T0 + timedelta(seconds=60)  # not the 10 s poll interval
    early = source.poll(first.state, now=T0 + timedelta(seconds=30))
    assert early.payloads == [] and early.error is None and len(resource.requests) == 1
    assert early.next_poll_at == T0 + timedelta(seconds=60)
    assert "not polled" in early.notes[0]
    source.poll(early.state, now=T0 + timedelta(seconds=60))
    assert len(resource.requests) == 2


def test_server_errors_back_off_exponentially_up_to_the_cap_then_reset(tmp_path, served,
                                                                       client):
    base, resource = served
    resource.script = [Reply(status=500), Reply(status=503), Reply(status=502)]
    source = http_source(tmp_path, base + "/depth.tif", client)
    state: dict = {}
    now = T0
    delays = []
    for _ in range(3):
        result = source.poll(state, now=now)
        assert result.payloads == [] and "HTTP 5" in result.error
        delays.append((result.next_poll_at - now).total_seconds())
        state, now = result.state, result.next_poll_at
    assert delays == [20.0, 40.0, 50.0] and state["failures"] == 3
    recovered = source.poll(state, now=now)
    assert len(recovered.payloads) == 1 and recovered.error is None
    assert recovered.state["failures"] == 0
    assert recovered.next_poll_at == now + timedelta(seconds=10)


def test_a_poll_during_backoff_sends_nothing(tmp_path, served, client):
    base, resource = served
    resource.script = [Reply(status=500)]
    source = http_source(tmp_path, base + "/depth.tif", client)
    failed = source.poll({}, now=T0)
    early = source.poll(failed.state, now=T0 + timedelta(seconds=5))
    assert len(resource.requests) == 1 and early.next_poll_at == failed.next_poll_at


def test_a_slow_server_times_out_and_backs_off(tmp_path, served, client):
    base, resource = served
    resource.script = [Reply(delay_s=0.6)]
    source = http_source(tmp_path, base + "/depth.tif", client, timeout_s=0.2)
    result = source.poll({}, now=T0)
    assert result.payloads == [] and "no answer within 0.2 s" in result.error
    assert result.state["failures"] == 1 and result.next_poll_at == T0 + timedelta(seconds=20)


def test_a_slow_but_complete_answer_is_noted(tmp_path, served, client):
    base, resource = served
    resource.script = [Reply(delay_s=0.3)]
    result = http_source(tmp_path, base + "/depth.tif", client, timeout_s=0.5).poll({}, now=T0)
    assert len(result.payloads) == 1 and any("slow answer" in n for n in result.notes)


def test_retry_after_is_honoured_beyond_the_backoff(tmp_path, served, client):
    base, resource = served
    resource.script = [Reply(status=429, headers={"Retry-After": "120"})]
    result = http_source(tmp_path, base + "/depth.tif", client).poll({}, now=T0)
    assert "HTTP 429" in result.error
    assert result.next_poll_at == T0 + timedelta(seconds=120)


def test_a_client_error_is_reported_and_polled_at_the_normal_interval(tmp_path, served, client):
    base, _ = served
    result = http_source(tmp_path, base + "/gone.tif", client).poll({}, now=T0)
    assert "HTTP 404" in result.error and "normal interval" in result.error
    assert result.next_poll_at == T0 + timedelta(seconds=10)
    assert result.state.get("failures", 0) == 0


def test_a_vanished_server_is_an_error_with_backoff(tmp_path, client):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there any more
    result = http_source(tmp_path, f"http://127.0.0.1:{port}/depth.tif", client).poll(
        {}, now=T0)
    assert result.payloads == [] and "cannot reach" in result.error
    assert result.state["failures"] == 1


def test_a_body_over_the_cap_is_refused_and_nothing_is_archived(tmp_path, served, client):
    base, _ = served
    source = http_source(tmp_path, base + "/depth.tif", client, max_body_bytes=4)
    result = source.poll({}, now=T0)
    assert result.payloads == [] and "exceeds the cap of 4 bytes" in result.error
    assert list(source.archive.iter_provenance("gauge")) == []
    assert list((tmp_path / "archive/tmp").iterdir()) == []


def test_the_same_bytes_under_a_new_etag_are_not_passed_on_twice(tmp_path, served, client):
    base, resource = served
    source = http_source(tmp_path, base + "/depth.tif", client)
    first = source.poll({}, now=T0)
    resource.etag = '"v1-again"'
    again = source.poll(first.state, now=T0 + timedelta(seconds=10))
    assert again.payloads == [] and "same content" in again.notes[0]
    assert [p.duplicate for p in source.archive.iter_provenance("gauge")] == [False, True]


def test_a_payload_issued_before_one_already_seen_is_noted(tmp_path, served, client):
    base, resource = served
    source = http_source(tmp_path, base + "/depth.tif", client)
    first = source.poll({}, now=T0)
    resource.body, resource.etag = b"II*\x00 older", '"v0"'
    resource.last_modified = "Wed, 01 May 2024 08:00:00 GMT"
    late = source.poll(first.state, now=T0 + timedelta(seconds=10))
    assert len(late.payloads) == 1
    assert any("out of time order" in n for n in late.notes)


def test_redirects_within_http_are_followed(tmp_path, served):
    base, resource = served
    result = http_source(tmp_path, base + "/moved", None).poll({}, now=T0)
    [payload] = result.payloads
    assert payload.path.read_bytes() == resource.body
    assert payload.source_uri == base + "/moved"


def test_configured_headers_are_sent(tmp_path, served, client):
    base, resource = served
    http_source(tmp_path, base + "/depth.tif", client,
                headers={"Authorization": "Bearer token"}).poll({}, now=T0)
    assert resource.requests[0]["Authorization"] == "Bearer token"
