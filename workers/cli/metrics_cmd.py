"""``tocsin metrics``: serve the store's Prometheus metrics over HTTP until interrupted."""

from __future__ import annotations

import threading
from typing import Annotated
from wsgiref.simple_server import WSGIServer

import typer
from rich.console import Console

from workers.cli.store_cmds import _fail, load_settings, open_store
from workers.metrics import DEFAULT_PORT, serve_metrics

console = Console()

_JOIN_INTERVAL_S = 0.5  # short joins keep the main thread responsive to Ctrl-C


def metrics(
    host: Annotated[str, typer.Option(
        help="Address to listen on (0.0.0.0 to let a Prometheus on another machine "
             "scrape).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = DEFAULT_PORT,
) -> None:
    """Serve the metrics of the store at http://HOST:PORT/metrics until Ctrl-C.

    Every scrape reads the store (TOCSIN_DATABASE_URL), so one exporter shows the work of
    all the workers: feed items, alerts, deliveries and their latencies.
    """
    sessions = open_store(load_settings())
    try:
        server, thread = serve_metrics(sessions, host=host, port=port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc}", 1) from exc
    console.print(f"Serving metrics on http://{host}:{server.server_port}/metrics "
                  "(Ctrl-C to stop)")
    try:
        wait_until_interrupted(server, thread)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.shutdown()
        server.server_close()


def wait_until_interrupted(server: WSGIServer, thread: threading.Thread) -> None:
    """Block while the server's thread runs; Ctrl-C raises KeyboardInterrupt out of it.

    Args:
        server: the metrics server (unused here; lets a test scrape it while waiting).
        thread: the thread serving it.
    """
    while thread.is_alive():
        thread.join(_JOIN_INTERVAL_S)
