"""The demo's local receivers: a webhook and SMS-gateway server, a mail server, an MQTT ear.

They stand where an agency's systems would: the HTTP server checks each webhook's signature
with the agency's own secret and keeps each idempotency key's payload once (as the webhook
contract asks receivers to); the SMTP server (aiosmtpd) keeps each mail; the MQTT listener
(only where a broker is reachable) keeps what arrives on the agencies' topics.
"""

from __future__ import annotations

import email
import json
import queue
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.channels.webhook import verify_signature


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether something listens on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Received:
    """One message as a receiver got it."""

    channel: str
    address: str
    key: str
    summary: str
    verified: bool | None = None
    body: dict[str, Any] = field(default_factory=dict)


class HttpReceiver(ThreadingHTTPServer):
    """Webhooks on ``/hook/<agency>`` (signature checked) and the SMS gateway on ``/sms``."""

    daemon_threads = True

    def __init__(self, secret_for: Callable[[str], str]) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.secret_for = secret_for
        self.received: dict[str, Received] = {}
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> HttpReceiver:
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HttpReceiver

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        key = self.headers.get("Idempotency-Key", "")
        data = json.loads(body or b"{}")
        if self.path.startswith("/sms"):
            got = Received("sms", data.get("to", ""), key, data.get("text", ""), body=data)
        else:
            agency = data.get("agency_id", "")
            verified = verify_signature(self.server.secret_for(agency),
                                        self.headers.get("Tocsin-Timestamp"),
                                        self.headers.get("Tocsin-Signature"), body,
                                        now=datetime.now(UTC))
            alerts = data.get("alerts", [])
            headline = alerts[-1]["headline"] if alerts else ""
            got = Received("webhook", self.path, key, headline, verified, data)
        with self.server.lock:
            self.server.received.setdefault(key, got)  # each key processed once
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


class Mailbox:
    """aiosmtpd handler keeping each message once (by its Message-ID)."""

    def __init__(self) -> None:
        self.received: dict[str, Received] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Keep the message (aiosmtpd calls this once the DATA is in)."""
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        key = str(message.get("Tocsin-Idempotency-Key") or message["Message-ID"])
        for rcpt in envelope.rcpt_tos:
            self.received.setdefault(key, Received("email", rcpt, key,
                                                   str(message["Subject"])))
        return "250 Message accepted for delivery"


class MqttEar:
    """An MQTT 5 subscriber on ``{root}/#`` (for the demo's agencies' topics)."""

    def __init__(self, host: str, port: int, root: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue[Any] = queue.Queue()
        self.received: dict[str, Received] = {}
        ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"tocsin-demo-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        ready.wait(5)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if not message.payload:
            return
        data = json.loads(message.payload)
        key = data.get("idempotency_key", message.topic)
        self.received.setdefault(key, Received("mqtt", message.topic, key,
                                               data.get("headline", ""), body=data))

    def clear(self) -> None:
        """Delete the retained messages the demo left on its topics, then disconnect."""
        for got in list(self.received.values()):
            self.client.publish(got.address, b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()
