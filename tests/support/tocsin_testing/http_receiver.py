"""A real HTTP receiver on 127.0.0.1 for the HTTP channel tests.

It records every request and answers from a script (one :class:`Reply` per request, then
200). The channel tests import it as ``tocsin_testing.http_receiver``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``delay_s`` holds it back (for client timeouts)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver(ThreadingHTTPServer):
    """The server: ``script`` answers, ``requests`` records, ``url`` is its base URL."""

    daemon_threads = False
    block_on_close = True  # server_close waits for handlers: no thread outlives a test

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = []
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_reply(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            return self.script.pop(0) if self.script else Reply()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that timed out has gone: writing to it fails, and that is expected.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        recorded = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                            body)
        reply = self.server.next_reply(recorded)
        if reply.delay_s:
            self.server.release.wait(reply.delay_s)
        # One request per connection: no idle keep-alive handler holds up server_close.
        self.close_connection = True
        self.send_response(reply.status)
        self.send_header("Connection", "close")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """Start a receiver in a thread; stop it, and release any held reply, on exit."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        thread.join()
        server.server_close()
