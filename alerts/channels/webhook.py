"""The webhook channel: a signed JSON POST to the agency's HTTPS endpoint.

The body is serialized deterministically, so every attempt of a delivery sends the same
bytes but for its ``attempt`` number; the receiver deduplicates on ``Idempotency-Key``.
Each request is signed with the agency's own secret, derived from one master secret
(:func:`webhook_secret_for`), so a receiver can prove the payload came from Tocsin and is
fresh. The contract agencies build
against is ``docs/webhooks.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from alerts.channels._http import HttpPermanentError, check_destination, parse_allow_hosts, post
from alerts.channels.base import AlertContent, OutgoingMessage, Receipt, alert_json
from alerts.model import ChannelKind

SIGNATURE_VERSION = "v1"
DEFAULT_USER_AGENT = "Tocsin-Webhook/1"


def webhook_secret_for(master_secret: bytes, agency_id: str) -> str:
    """The signing secret of one agency: hex HMAC-SHA256(master, ``tocsin-webhook:<id>``).

    Deriving it means only the master secret is stored; each agency is given its own
    secret, and one agency's secret never verifies another agency's payloads.

    Args:
        master_secret: the deployment's webhook master secret.
        agency_id: the agency.

    Returns:
        64 hex characters; the receiver uses their UTF-8 bytes as the HMAC key.
    """
    return hmac.new(master_secret, b"tocsin-webhook:" + agency_id.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Tocsin-Signature`` value for ``body`` sent at ``timestamp``.

    Args:
        secret: the agency's secret (:func:`webhook_secret_for`).
        timestamp: Unix seconds, as in ``Tocsin-Timestamp``.
        body: the exact request body.

    Returns:
        ``t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``.
    """
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body,
                      hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def verify_signature(secret: str, timestamp_header: str | None,
                     signature_header: str | None, body: bytes, *, now: datetime,
                     tolerance_s: float = 300) -> bool:
    """Check a webhook request the way a receiver should (stdlib only: copy it).

    Args:
        secret: the agency's secret.
        timestamp_header: the ``Tocsin-Timestamp`` header.
        signature_header: the ``Tocsin-Signature`` header.
        body: the raw request body, exactly as received.
        now: the receiver's current time (timezone-aware).
        tolerance_s: how far the timestamp may be from ``now``, either way; older requests
            are refused so a captured request cannot be replayed later.

    Returns:
        True when the timestamp is fresh, matches the signature's ``t`` and one ``v1``
        signature is the HMAC of ``"<t>." + body`` (compared in constant time).
    """
    if not timestamp_header or not signature_header:
        return False
    parts = [p.strip().partition("=") for p in signature_header.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    candidates = [v for k, _, v in parts if k == SIGNATURE_VERSION]
    if stamps != [timestamp_header.strip()] or not candidates:
        return False
    try:
        timestamp = int(stamps[0])
    except ValueError:
        return False
    if abs(now.timestamp() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).rpartition("=")[2]
    # Every candidate is compared, so timing says nothing about which one matched.
    matches = [hmac.compare_digest(expected, c) for c in candidates]
    return any(matches)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Settings of the webhook channel.

    Attributes:
        master_secret: the secret every agency's signing secret is derived from.
        allow_hosts: host names, IPs or CIDRs that may be private or plain http (internal
            receivers); everything else must be https to a public address.
        timeout_s: connect, read and write timeout of each request.
        user_agent: the ``User-Agent`` sent.
    """

    master_secret: bytes = field(repr=False)
    allow_hosts: tuple[str, ...] = ()
    timeout_s: float = 10.0
    user_agent: str = DEFAULT_USER_AGENT

    def __post_init__(self) -> None:
        if not self.master_secret:
            raise ValueError("webhook master_secret must not be empty")
        if not self.timeout_s > 0:
            raise ValueError(f"webhook timeout_s must be positive, got {self.timeout_s}")
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        parse_allow_hosts(self.allow_hosts)


def alert_payload(alert: AlertContent) -> dict[str, Any]:
    """One alert as it appears in the webhook body's ``alerts`` list."""
    return alert_json(alert)


def webhook_body(message: OutgoingMessage) -> bytes:
    """The request body: the same bytes for the same message (attempt included), on any host.

    Args:
        message: the delivery.

    Returns:
        Compact UTF-8 JSON with sorted keys.
    """
    payload = {
        "idempotency_key": message.idempotency_key,
        "kind": message.kind,
        "agency_id": message.agency_id,
        "subscription_id": message.subscription_id,
        "language": message.language,
        "attempt": message.attempt,
        "alerts": [alert_payload(a) for a in message.alerts],
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


class WebhookChannel:
    """Sends each message as a signed JSON POST to the subscription's URL.

    Args:
        config: the channel's settings.
        client: the HTTP client to use (tests, shared pools, an egress proxy); one is
            created, without proxies from the environment, when omitted, and
            :meth:`close` closes only a client the channel created.
        clock: the current time, for ``Tocsin-Timestamp``.
    """

    kind = ChannelKind.WEBHOOK

    def __init__(self, config: WebhookConfig, *, client: httpx.Client | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(
            follow_redirects=False, trust_env=False, timeout=config.timeout_s)
        self._clock = clock

    def send(self, message: OutgoingMessage) -> Receipt:
        """POST ``message`` to its URL.

        Args:
            message: a webhook delivery; its address is the receiver's URL.

        Returns:
            A receipt whose detail is the HTTP status (``"HTTP 200"``).

        Raises:
            HttpRetryableError: 408, 425, 429 (``retry_after_s`` set from ``Retry-After``),
                5xx, timeout, connection failure, or a host that does not resolve.
            HttpPermanentError: 3xx (never followed), other 4xx (``status`` 410: stop
                sending), or a refused destination (see ``docs/webhooks.md``).
        """
        url = message.channel.address
        if message.channel.kind != ChannelKind.WEBHOOK:
            raise HttpPermanentError(f"delivery {message.idempotency_key}: a "
                                     f"{message.channel.kind} address sent to the webhook "
                                     "channel")
        check_destination(url, self.config.allow_hosts)
        body = webhook_body(message)
        timestamp = int(self._clock().timestamp())
        secret = webhook_secret_for(self.config.master_secret, message.agency_id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.config.user_agent,
            "Idempotency-Key": message.idempotency_key,
            "Tocsin-Timestamp": str(timestamp),
            "Tocsin-Signature": sign(secret, timestamp, body),
        }
        answer = post(self._client, url, content=body, headers=headers,
                      timeout_s=self.config.timeout_s)
        return Receipt(channel=ChannelKind.WEBHOOK, address=url,
                       detail=f"HTTP {answer.status}")

    def close(self) -> None:
        """Close the HTTP client if the channel created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> WebhookChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
