"""The MQTT channel: each alert is published, retained, to its own event topic (MQTT 5).

The subscription's address is a topic root (``agencies/bern``); each alert carried goes to
``{root}/{hazard_kind}/{area_slug}/{event_id}`` with ``retain`` set, so the retained message
on an event topic is always that event's latest message (Alert, then Update, then Cancel)
and a subscriber that connects late still sees it. Publishing is QoS 1 and waits for the
broker's PUBACK.

The payload is deterministic JSON (sorted keys). MQTT 5 properties carry the content type,
the idempotency key as a user property, and a message expiry matching the alert's, so the
broker drops a retained alert once it has expired.

One connection per send: connect, publish, wait for the acknowledgements, disconnect. A
delivery is rare and must not depend on a long-lived session that may have silently died.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import ssl
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.channels.base import AlertContent, OutgoingMessage, Receipt, alert_json
from alerts.errors import DispatchError, PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind

Clock = Callable[[], datetime]

# CONNACK reason codes (MQTT 5, section 3.2.2.2) that retrying with the same settings cannot
# fix: wrong credentials, no authorisation, a banned or invalid client, a protocol the
# broker does not speak. Everything else (server unavailable or busy, quota or rate
# exceeded, unspecified) is treated as passing.
PERMANENT_CONNACK_CODES: frozenset[int] = frozenset({
    0x84,  # Unsupported Protocol Version
    0x85,  # Client Identifier not valid
    0x86,  # Bad User Name or Password
    0x87,  # Not authorized
    0x8A,  # Banned
    0x8C,  # Bad authentication method
})
# MQTT 3.1.1 return codes, for brokers that answer a v5 CONNECT the old way.
_PERMANENT_V3_CONNACK = frozenset({1, 2, 4, 5})
# PUBACK reason codes that refuse this publication for good.
PERMANENT_PUBACK_CODES: frozenset[int] = frozenset({
    0x87,  # Not authorized
    0x90,  # Topic Name invalid
    0x95,  # Packet too large
    0x99,  # Payload format invalid
})
_TOPIC_FORBIDDEN = re.compile(r"[+#\x00]")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How to reach the MQTT broker.

    Attributes:
        host: the broker.
        port: 1883, or 8883 for TLS.
        username: user name, when the broker asks for one.
        password: the password for ``username``.
        tls: connect over TLS (verifying the broker's certificate).
        ca_file: a PEM file of CA certificates to trust instead of the system ones.
        client_id_prefix: the start of each connection's client id (a random suffix keeps
            concurrent workers from taking over each other's connection).
        keepalive_s: MQTT keep-alive.
        qos: the quality of service of each publication (1: acknowledged at least once).
        timeout_s: how long to wait for the connection, CONNACK and each PUBACK.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    client_id_prefix: str = "tocsin"
    keepalive_s: int = 30
    qos: int = 1
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"MQTT qos must be 0, 1 or 2, not {self.qos!r}")


def area_slug(area_description: str) -> str:
    """A lowercase ASCII slug of an area's name, for one topic level.

    ``"Zürich Nord"`` gives ``"zurich-nord"``; a name with no ASCII letter left gives
    ``"area"``.
    """
    ascii_text = unicodedata.normalize("NFKD", area_description).encode("ascii", "ignore")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.decode("ascii").lower()).strip("-")
    return slug[:64].rstrip("-") or "area"


def _topic_level(value: str, what: str) -> str:
    if not value or "/" in value or _TOPIC_FORBIDDEN.search(value):
        raise PermanentDispatchError(f"MQTT: {what} {value!r} cannot be one topic level")
    return value


def topic_root(address: str) -> str:
    """The subscription's topic root, checked: no wildcards, no empty levels.

    Raises:
        PermanentDispatchError: the address cannot be a topic root.
    """
    root = address.strip().strip("/")
    if not root or _TOPIC_FORBIDDEN.search(root) or "//" in root or root.startswith("$"):
        raise PermanentDispatchError(f"MQTT: {address!r} is not a usable topic root (no "
                                     "wildcards, no empty levels, not a $ system topic)")
    return root


def event_topic(root: str, alert: AlertContent) -> str:
    """``{root}/{hazard_kind}/{area_slug}/{event_id}``: one retained message per event."""
    return "/".join((topic_root(root), _topic_level(alert.hazard_kind, "hazard kind"),
                     area_slug(alert.area_description), _topic_level(alert.event_id, "event id")))


def alert_key(message: OutgoingMessage, alert: AlertContent) -> str:
    """The idempotency key of one publication: the delivery's own for a single alert.

    A digest publishes several alerts, each on its own event topic; each gets a key of its
    own (derived from the delivery's key and the alert's identifier), so that a receiver
    deduplicating by key keeps every one of them.
    """
    if len(message.alerts) == 1:
        return message.idempotency_key
    joined = f"{message.idempotency_key}\x1f{alert.identifier}".encode()
    return hashlib.sha256(joined).hexdigest()


def payload(message: OutgoingMessage, alert: AlertContent) -> bytes:
    """The JSON payload of one alert: deterministic (sorted keys), UTF-8."""
    body: dict[str, Any] = {
        **alert_json(alert),
        "idempotency_key": alert_key(message, alert),
        "delivery_key": message.idempotency_key,
        "kind": message.kind,
        "agency_id": message.agency_id,
        "subscription_id": message.subscription_id,
        "language": message.language,
        "level_text": alert.text.level_text,
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def publish_properties(key: str, expires: datetime, now: datetime) -> Properties:
    """MQTT 5 PUBLISH properties: JSON content type, the key, expiry at the alert's."""
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1  # UTF-8 text
    props.UserProperty = [("idempotency-key", key)]
    props.MessageExpiryInterval = max(1, math.ceil((expires - now).total_seconds()))
    return props


def connack_error(code: int, reason: str, where: str) -> DispatchError:
    """The dispatch error for a CONNACK that refused the connection.

    Args:
        code: the MQTT 5 reason code (0x80 and up), or an MQTT 3.1.1 return code (1-5).
        reason: the reason in words.
        where: the broker, for the message.
    """
    words = f"{where} refused the connection: {reason} (reason code {code:#04x})"
    if code in PERMANENT_CONNACK_CODES or code in _PERMANENT_V3_CONNACK:
        return PermanentDispatchError(words)
    return RetryableDispatchError(words)


class MqttChannel:
    """Publishes each alert of a delivery, retained, to its event topic."""

    kind = ChannelKind.MQTT

    def __init__(self, config: MqttConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))

    def send(self, message: OutgoingMessage) -> Receipt:
        """Publish every alert of ``message`` and wait for the broker to acknowledge each.

        Returns:
            A receipt naming the topics and the broker's acknowledgements; ``remote_id``
            is the MQTT packet id of the last publication.

        Raises:
            RetryableDispatchError: the broker is unreachable, drops the connection, or does
                not acknowledge in time.
            PermanentDispatchError: the broker refuses the credentials or the
                authorisation, or the topic root is unusable.
        """
        root = message.channel.address
        now = self._clock()
        publications = [(event_topic(root, alert), payload(message, alert),
                         publish_properties(alert_key(message, alert), alert.expires, now))
                        for alert in message.alerts]
        acks = _Session(self.config).publish_all(publications)
        topics = ", ".join(topic for topic, _, _ in publications)
        details = "; ".join(f"mid {mid}: {reason}" for mid, reason in acks)
        return Receipt(channel=ChannelKind.MQTT, address=topic_root(root),
                       detail=f"published to {topics} (PUBACK {details})",
                       remote_id=str(acks[-1][0]))


class _Session:
    """One connection to the broker, for one send."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.where = f"MQTT broker {config.host}:{config.port}"
        self._connected = threading.Event()
        self._connack: ReasonCode | None = None
        self._gone = threading.Event()
        self._pubacks: dict[int, ReasonCode] = {}
        self._lock = threading.Lock()

    def _client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{cfg.client_id_prefix}-{uuid.uuid4().hex[:16]}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,  # a failed send is retried by the dispatcher
        )
        client.connect_timeout = cfg.timeout_s
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        self._connack = reason
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        self._gone.set()
        self._connected.set()  # wake a wait for CONNACK: the broker hung up instead

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        with self._lock:
            self._pubacks[mid] = reason

    def publish_all(self, publications: list[tuple[str, bytes, Properties]],
                    ) -> list[tuple[int, str]]:
        """Connect, publish each (topic, payload, properties), wait for each PUBACK.

        Returns:
            (packet id, acknowledgement in words) per publication.
        """
        cfg = self.config
        client = self._client()
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDispatchError(f"{self.where}: TLS certificate not trusted: "
                                         f"{exc.verify_message}") from exc
        except OSError as exc:  # refused, timed out, unreachable
            raise RetryableDispatchError(f"{self.where}: {type(exc).__name__}: {exc}") from exc
        client.loop_start()
        try:
            self._wait_for_connack()
            return [self._publish(client, *publication) for publication in publications]
        finally:
            client.disconnect()
            client.loop_stop()  # joins the network thread, which closes the socket

    def _wait_for_connack(self) -> None:
        if not self._connected.wait(self.config.timeout_s):
            raise RetryableDispatchError(
                f"{self.where}: no CONNACK within {self.config.timeout_s:g} s")
        reason = self._connack
        if reason is None:
            raise RetryableDispatchError(f"{self.where}: closed the connection before CONNACK")
        if reason.is_failure:
            raise connack_error(reason.value, str(reason), self.where)

    def _publish(self, client: mqtt.Client, topic: str, body: bytes,
                 properties: Properties) -> tuple[int, str]:
        cfg = self.config
        info = client.publish(topic, body, qos=cfg.qos, retain=True, properties=properties)
        deadline = time.monotonic() + cfg.timeout_s
        try:
            # Short waits, so that a broker hanging up is noticed at once, not at the timeout.
            while not info.is_published() and not self._gone.is_set():
                if time.monotonic() >= deadline:
                    break
                info.wait_for_publish(0.05)
            published = info.is_published()
        except (RuntimeError, ValueError) as exc:  # not queued: the connection is gone
            raise RetryableDispatchError(f"{self.where}: publishing to {topic} failed: "
                                         f"{exc}") from exc
        if not published:
            why = "the broker closed the connection" if self._gone.is_set() else (
                f"no PUBACK within {cfg.timeout_s:g} s")
            raise RetryableDispatchError(f"{self.where}: {topic} not acknowledged: {why}")
        with self._lock:
            reason = self._pubacks.get(info.mid)
        if reason is not None and reason.is_failure:
            words = f"{self.where} refused the message on {topic}: {reason} ({reason.value:#04x})"
            if reason.value in PERMANENT_PUBACK_CODES:
                raise PermanentDispatchError(words)
            raise RetryableDispatchError(words)
        return info.mid, str(reason) if reason is not None else "sent"
