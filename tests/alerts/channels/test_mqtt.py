"""The MQTT channel against the real Mosquitto broker on 127.0.0.1:1883 (anonymous access)."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.channels.mqtt import (
    MqttChannel,
    MqttConfig,
    area_slug,
    connack_error,
    event_topic,
    payload,
    publish_properties,
)
from alerts.errors import PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind, Level, MsgType

BROKER = ("127.0.0.1", 1883)
WAIT_S = 5.0
SENT = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)  # when make_message's alerts are sent


@pytest.fixture
def broker() -> tuple[str, int]:
    """Mosquitto on 127.0.0.1:1883; the test is skipped without it (failed in CI)."""
    try:
        socket.create_connection(BROKER, timeout=1.0).close()
    except OSError as exc:
        why = f"the Mosquitto MQTT broker is not reachable on {BROKER[0]}:{BROKER[1]} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return BROKER


class Subscriber:
    """A real MQTT 5 client that collects what arrives on a topic filter."""

    def __init__(self, topic_filter: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"test-{uuid.uuid4().hex[:12]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.connect(*BROKER)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), "no SUBACK from Mosquitto"

    def get(self, timeout: float = WAIT_S) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def subscribed(topic_filter: str) -> Iterator[Subscriber]:
    subscriber = Subscriber(topic_filter)
    try:
        yield subscriber
    finally:
        subscriber.close()


@pytest.fixture
def root(broker: tuple[str, int]) -> Iterator[str]:
    """A fresh topic root; every retained message under it is cleared afterwards."""
    topic_root = f"tocsin-test/{uuid.uuid4().hex}"
    yield topic_root
    with subscribed(f"{topic_root}/#") as sweeper:
        retained: set[str] = set()
        while True:
            try:
                retained.add(sweeper.get(timeout=0.3).topic)
            except queue.Empty:
                break
        for topic in retained:  # an empty retained payload deletes the retained message
            sweeper.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(WAIT_S)


def channel(port: int = BROKER[1], **changes: Any) -> MqttChannel:
    config = MqttConfig(**{"host": BROKER[0], "port": port, "timeout_s": WAIT_S, **changes})
    return MqttChannel(config, clock=lambda: SENT + timedelta(minutes=1))


def test_a_subscriber_receives_the_alert_as_json_with_the_idempotency_key(root, make_message):
    message = make_message(ChannelKind.MQTT, root, key="f00d" * 16)
    with subscribed(f"{root}/#") as subscriber:
        receipt = channel().send(message)
        received = subscriber.get()
    alert = message.alert
    assert received.topic == f"{root}/flood_depth/aare-valley/{alert.event_id}"
    assert received.qos == 1
    body = json.loads(received.payload)
    assert body["idempotency_key"] == "f00d" * 16
    assert (body["kind"], body["agency_id"], body["subscription_id"], body["language"]) == (
        "alert", "ag-1", "sub-1", "en")
    assert (body["identifier"], body["event_id"], body["msg_type"], body["level"]) == (
        alert.identifier, alert.event_id, "Alert", "red")
    assert body["headline"] == alert.text.headline
    assert body["expires"] == alert.expires.isoformat()
    assert body["cap_xml"].encode("utf-8") == alert.cap_xml
    props = received.properties
    assert props.ContentType == "application/json"
    assert ("idempotency-key", "f00d" * 16) in props.UserProperty
    # Mosquitto forwards the remaining lifetime: 12 h minus the minute the clock says.
    assert 12 * 3600 - 60 - 5 <= props.MessageExpiryInterval <= 12 * 3600 - 60
    assert receipt.channel is ChannelKind.MQTT and receipt.address == root
    assert received.topic in receipt.detail and receipt.remote_id is not None


def test_a_late_subscriber_sees_only_the_latest_message_of_the_event(root, make_message):
    first = make_message(ChannelKind.MQTT, root, key="1" * 64)
    update = make_message(ChannelKind.MQTT, root, key="2" * 64, msg_type=MsgType.UPDATE,
                          sequence=2)
    assert first.alert.event_id == update.alert.event_id
    sender = channel()
    sender.send(first)
    sender.send(update)
    with subscribed(f"{root}/#") as late:
        retained = late.get()
        with pytest.raises(queue.Empty):
            late.get(timeout=0.5)
    assert retained.retain
    assert retained.topic == event_topic(root, update.alert)
    body = json.loads(retained.payload)
    assert (body["msg_type"], body["identifier"]) == ("Update", update.alert.identifier)
    assert body["references"] == [first.alert.identifier]


def test_after_a_cancel_the_retained_message_of_the_event_is_the_cancel(root, make_message):
    sender = channel()
    for sequence, msg_type in enumerate((MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL), 1):
        sender.send(make_message(ChannelKind.MQTT, root, key=f"{sequence}" * 64,
                                 msg_type=msg_type, sequence=sequence))
    with subscribed(f"{root}/#") as late:
        body = json.loads(late.get().payload)
        with pytest.raises(queue.Empty):
            late.get(timeout=0.3)
    assert body["msg_type"] == "Cancel" and len(body["references"]) == 2


def test_a_digest_publishes_each_alert_on_its_own_event_topic(root, make_message):
    alerts = [make_message(ChannelKind.MQTT, root, level=Level.YELLOW, event_id=f"ev-{i}").alert
              for i in (1, 2)]
    with subscribed(f"{root}/#") as subscriber:
        channel().send(make_message(ChannelKind.MQTT, root, alerts=alerts,
                                    message_kind="digest"))
        got = [subscriber.get(), subscriber.get()]
    assert {m.topic for m in got} == {f"{root}/flood_depth/aare-valley/ev-{i}" for i in (1, 2)}
    # Each alert its own key (a receiver deduplicating by key keeps both), and the
    # delivery's key beside it.
    keys = {dict(m.properties.UserProperty)["idempotency-key"] for m in got}
    assert len(keys) == 2 and "k" * 64 not in keys
    assert {json.loads(m.payload)["delivery_key"] for m in got} == {"k" * 64}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_port_with_no_broker_is_retried(make_message):
    with pytest.raises(RetryableDispatchError, match="ConnectionRefusedError"):
        channel(port=_closed_port()).send(make_message(ChannelKind.MQTT, "agencies/bern"))


def test_a_broker_that_never_answers_is_retried(make_message):
    with socket.socket() as listener:  # accepts the TCP connection, never sends CONNACK
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(RetryableDispatchError, match="no CONNACK"):
            channel(port=listener.getsockname()[1], timeout_s=0.3).send(
                make_message(ChannelKind.MQTT, "agencies/bern"))


@pytest.mark.parametrize("address", ["agencies/+/bern", "agencies/#", "", "a//b", "$SYS/x"])
def test_a_topic_root_that_cannot_be_one_fails_permanently(make_message, address):
    with pytest.raises(PermanentDispatchError, match="topic root"):
        channel(port=_closed_port()).send(make_message(ChannelKind.MQTT, address))


# The broker allows anonymous access only, so the refused-credentials path is tested on the
# CONNACK mapping itself.
@pytest.mark.parametrize(("code", "permanent"), [
    (0x86, True),   # Bad User Name or Password
    (0x87, True),   # Not authorized
    (0x8A, True),   # Banned
    (0x8C, True),   # Bad authentication method
    (0x84, True),   # Unsupported Protocol Version
    (4, True),      # MQTT 3.1.1: bad user name or password
    (5, True),      # MQTT 3.1.1: not authorised
    (0x80, False),  # Unspecified error
    (0x88, False),  # Server unavailable
    (0x89, False),  # Server busy
    (0x97, False),  # Quota exceeded
    (0x9F, False),  # Connection rate exceeded
    (3, False),     # MQTT 3.1.1: server unavailable
])
def test_refused_credentials_fail_permanently_and_a_busy_broker_is_retried(code, permanent):
    error = connack_error(code, "reason", "MQTT broker x:1883")
    assert isinstance(error, PermanentDispatchError if permanent else RetryableDispatchError)
    assert f"{code:#04x}" in str(error)


def test_the_payload_is_deterministic_json_with_sorted_keys(make_message):
    message = make_message(ChannelKind.MQTT, "agencies/bern")
    first, second = payload(message, message.alert), payload(message, message.alert)
    assert first == second
    body = json.loads(first)
    assert list(body) == sorted(body)
    assert body["sent"] == "2026-05-12T06:00:00+00:00"


def test_the_message_expires_with_the_alert_and_after_one_second_at_least(make_message):
    alert = make_message(ChannelKind.MQTT, "agencies/bern").alert
    props = publish_properties("k", alert.expires, alert.sent)
    assert props.MessageExpiryInterval == 12 * 3600
    late = publish_properties("k", alert.expires, alert.expires + timedelta(days=1))
    assert late.MessageExpiryInterval == 1


@pytest.mark.parametrize(("name", "slug"), [
    ("Aare valley", "aare-valley"),
    ("Zürich Nord / Süd", "zurich-nord-sud"),
    ("  Saint-Gervais-les-Bains ", "saint-gervais-les-bains"),
    ("東京", "area"),
])
def test_an_area_name_becomes_a_lowercase_ascii_topic_level(name, slug):
    assert area_slug(name) == slug
