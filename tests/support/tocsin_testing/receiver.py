"""A real webhook receiver on 127.0.0.1 that processes each idempotency key once.

It behaves as the webhook contract asks receivers to (docs/webhooks.md): it verifies nothing
but the key, answers from an optional script (status codes, delays), and counts per key how
often a payload arrived and whether it was processed. Loaded by path from the worker tests
(the tests folder is not a package under ``--import-mode=importlib``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(ThreadingHTTPServer):
    """``script``: statuses answered in turn (then 200); ``delay_s``: hold each answer."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.script: list[int] = []
        self.delay_s = 0.0
        self.arrivals: Counter[str] = Counter()
        self.processed: dict[str, dict] = {}
        self.received_at: dict[str, float] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/hook``."""
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = self.headers.get("Idempotency-Key", "")
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        with self.server.lock:
            self.server.arrivals[key] += 1
            status = self.server.script.pop(0) if self.server.script else 200
            if status < 300 and key not in self.server.processed:
                self.server.processed[key] = json.loads(body)
                self.server.received_at[key] = time.time()
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


@contextmanager
def running(port: int = 0) -> Iterator[Receiver]:
    """A receiver serving in a thread until the block ends."""
    server = Receiver(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
