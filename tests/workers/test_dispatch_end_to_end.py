"""``tocsin assess`` then ``tocsin dispatch`` on the sample region, to real receivers.

One agency subscribes with every channel: a webhook and an SMS gateway (a real HTTP server),
e-mail (a real aiosmtpd server), MQTT (the Mosquitto broker on this machine) and its own CAP
feed. The flood's three runs give an Alert, an Update and a Cancel; the SMTP server is down
when the Cancel is dispatched and back up later. Every receiver gets each message once, and
the CAP bytes they get are the stored ones.
"""

from __future__ import annotations

import email
import json
import os
import queue
import threading
import uuid
from email import policy
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion
from tocsin_testing import receiver as rx
from typer.testing import CliRunner

from alerts.channels.cap_feed import read_feed_entries
from feeds.region import load_region_pack
from feeds.sample import SampleRegion, build_sample_region
from workers.cli.main import app
from workers.demo_receivers import free_port, port_open

runner = CliRunner()
pytestmark = [pytest.mark.integration]








class Mailbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


class Topic:
    """A real MQTT 5 subscriber collecting what arrives under a topic root."""

    def __init__(self, root: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"e2e-{uuid.uuid4().hex[:10]}", protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *args: ready.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{root}/#", qos=1)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        assert ready.wait(10), "no SUBACK from Mosquitto"

    def drain(self) -> list[mqtt.MQTTMessage]:
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=0.5))
            except queue.Empty:
                return got

    def clear_retained(self, topics: set[str]) -> None:
        for topic in topics:
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return build_sample_region(tmp_path_factory.mktemp("region"), seed=3, size=120)


@pytest.fixture
def mosquitto() -> None:
    if not port_open("127.0.0.1", 1883):
        msg = "Mosquitto is not reachable on 127.0.0.1:1883"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (required in CI)")
        pytest.skip(msg)


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_channel_gets_the_alert_the_update_and_the_cancel_once_even_with_smtp_down(
        sample: SampleRegion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        mosquitto: None) -> None:
    smtp_port = free_port()
    topic_root = f"tocsin-test/{uuid.uuid4().hex}"
    with rx.running() as http:
        mailbox = Mailbox()
        smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        settings = {
            "DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": "", "LANGUAGES": "en,fr",
            "WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "SMS_ALLOW_HOSTS": "127.0.0.1",
            "SMS_GATEWAY_URL": http.url.replace("/hook", "/sms"), "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port), "SMTP_SECURITY": "none", "MQTT_HOST": "127.0.0.1",
            "DISPATCH_RETRY_BASE_S": "1", "DISPATCH_RETRY_MAX_S": "2",
        }
        for name, value in settings.items():
            monkeypatch.setenv(f"TOCSIN_{name}", value)
        _ok(["agency", "add", "valley", "--name", "Valley civil protection"])
        zones = ",".join(load_region_pack(sample.manifest).zones["zone_id"])
        _ok(["subscribe", "add", "valley-all", "--agency", "valley", "--zones", zones,
             "--region", str(sample.manifest), "--channel", f"webhook:{http.url}",
             "--channel", "email:duty@valley.example", "--channel", "sms:+41790000000",
             "--channel", f"mqtt:{topic_root}", "--channel", "cap_feed:valley",
             "--min-level", "yellow", "--language", "fr"])
        topic = Topic(topic_root)
        try:
            feeds = sample.root / "feeds"
            for run in (1, 2):
                _ok(["assess", str(feeds / f"flood_depth_run{run}.tif"), "--region",
                     str(sample.manifest)])
                assert "failed" not in _ok(["dispatch"])
            smtp.stop()  # the mail server goes down before the Cancel
            _ok(["assess", str(feeds / "flood_depth_run3.tif"), "--region", str(sample.manifest)])
            _ok(["dispatch"])
            pending = _ok(["deliveries", "list", "--status", "pending"])
            assert "email" in pending
            smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
            smtp.start()
            assert "failed" not in _ok(["dispatch"])
            retained = topic.drain()
        finally:
            topic.clear_retained({m.topic for m in topic.drain()} | set())
            topic.close()
            smtp.stop()
        listing = _ok(["deliveries", "list", "--limit", "100"])
    assert "error" not in listing.split("outbox:")[1] and "pending" not in \
        listing.split("outbox:")[1]
    hooks = [b for b in http.processed.values() if "/sms" not in json.dumps(b)
             and "alerts" in b]
    kinds = [b["alerts"][0]["msg_type"] for b in hooks]
    assert kinds == ["Alert", "Update", "Cancel"]
    assert all(b["language"] == "fr" for b in hooks)
    sms = [b for b in http.processed.values() if "to" in b]
    assert [b["to"] for b in sms] == ["+41790000000"] * 3
    assert len(mailbox.messages) == 3  # SMTP down, then up: the Cancel arrives once
    subjects = [m["Subject"] for m in mailbox.messages]
    assert len(set(subjects)) == 3
    cap_attached = [p.get_content() for m in mailbox.messages for p in m.iter_attachments()
                    if p.get_filename() == "alert.cap.xml"]
    stored = [b["alerts"][0]["cap_xml"].encode("utf-8") for b in hooks]
    assert [c if isinstance(c, bytes) else c.encode() for c in cap_attached] == stored
    assert len(retained) >= 3 and all(m.properties.UserProperty for m in retained)
    data = tmp_path / "data" / "cap-feed"
    (entry,) = read_feed_entries(data / "valley.atom")  # one event, latest message
    assert entry.msg_type.value == "Cancel"
    (public_entry,) = read_feed_entries(data / "public.atom")
    assert public_entry.identifier == entry.identifier
