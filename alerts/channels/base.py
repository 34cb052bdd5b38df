"""What every channel adapter receives and returns, the :class:`Channel` protocol, and the registry.

A channel hands one :class:`OutgoingMessage` to the outside world (an HTTP receiver, an SMTP
server, an SMS gateway, an MQTT broker, the CAP feed files) and returns a :class:`Receipt`.
It raises :class:`~alerts.errors.RetryableDispatchError` for a passing failure and
:class:`~alerts.errors.PermanentDispatchError` for one that retrying cannot fix; the
dispatcher decides by that type alone, never by parsing messages.

A message carries the exact CAP bytes that were stored with the alert and the text variants
in the subscriber's language: channels never compose or render anything themselves, so what
was sent can always be reproduced from the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from alerts.errors import RetryableDispatchError
from alerts.model import ChannelAddress, ChannelKind, Level, MsgType
from alerts.text import MessageText

MessageKind = Literal["alert", "digest", "escalation"]


class ChannelNotConfiguredError(RetryableDispatchError):
    """No adapter for a channel kind on this worker: retried after a long wait."""

    retry_after_s = 600.0


@dataclass(frozen=True, slots=True)
class AlertContent:
    """One stored alert as a channel sends it.

    Attributes:
        identifier: CAP identifier.
        event_id: Tocsin's event id (CAP ``incidents``): MQTT keeps one retained message each.
        sender: CAP sender.
        msg_type: Alert, Update or Cancel.
        level: green, yellow, orange or red (always written in words to people).
        hazard_kind: ``flood_depth``, ``shaking_mmi``...
        area_description: CAP ``areaDesc``, plain words.
        sent: when the message was issued (timezone-aware).
        expires: when it expires.
        cap_xml: the CAP 1.2 message exactly as stored (XSD-valid bytes).
        text: the text variants in the subscriber's language.
        map_png: the map of the area, when the alert has one.
        references: CAP identifiers of the earlier messages of the event (Update, Cancel).
    """

    identifier: str
    event_id: str
    sender: str
    msg_type: MsgType
    level: Level
    hazard_kind: str
    area_description: str
    sent: datetime
    expires: datetime
    cap_xml: bytes
    text: MessageText
    map_png: bytes | None = None
    references: tuple[str, ...] = ()


def alert_json(alert: AlertContent) -> dict[str, Any]:
    """The fields of one alert as the JSON channels (webhook, MQTT) carry them."""
    return {
        "identifier": alert.identifier,
        "event_id": alert.event_id,
        "sender": alert.sender,
        "msg_type": alert.msg_type.value,
        "level": alert.level.value,
        "hazard_kind": alert.hazard_kind,
        "area_description": alert.area_description,
        "sent": alert.sent.isoformat(),
        "expires": alert.expires.isoformat(),
        "headline": alert.text.headline,
        "description": alert.text.description,
        "instruction": alert.text.instruction,
        "references": list(alert.references),
        "cap_xml": alert.cap_xml.decode("utf-8"),
    }


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One delivery as handed to a channel: who, where, and the alert(s) it carries.

    Attributes:
        idempotency_key: the same key on every attempt of this delivery; receivers use it to
            process a payload once however often it arrives.
        channel: the channel kind and the subscriber's address on it.
        agency_id: the receiving agency.
        subscription_id: the subscription the alert matched.
        language: the language the text is in.
        alerts: the alert carried; a digest carries several, newest last.
        kind: ``alert``, ``digest`` (several low-level alerts in one message) or
            ``escalation`` (a red alert re-sent on the next channel because nobody
            acknowledged it).
        attempt: 1 for the first attempt, then 2, 3...
    """

    idempotency_key: str
    channel: ChannelAddress
    agency_id: str
    subscription_id: str
    language: str
    alerts: tuple[AlertContent, ...]
    kind: MessageKind = "alert"
    attempt: int = 1

    def __post_init__(self) -> None:
        if not self.alerts:
            raise ValueError(f"delivery {self.idempotency_key}: a message carries at least "
                             "one alert")

    @property
    def alert(self) -> AlertContent:
        """The alert carried (for a digest: the newest one)."""
        return self.alerts[-1]

    @property
    def top_level(self) -> Level:
        """The highest level among the alerts carried."""
        return max((a.level for a in self.alerts), key=lambda level: level.rank)


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the receiving side answered: enough to show an operator where the message went.

    Attributes:
        channel: the channel kind.
        address: where it went.
        detail: the receiver's own words: HTTP status, SMTP queue id, MQTT message id, the
            feed file written...
        remote_id: the receiver's id for the message, if it gave one.
    """

    channel: ChannelKind
    address: str
    detail: str
    remote_id: str | None = None


@runtime_checkable
class Channel(Protocol):
    """One channel adapter: sends a message or raises a retryable or a permanent error."""

    kind: ChannelKind

    def send(self, message: OutgoingMessage) -> Receipt:
        """Hand ``message`` to the receiver.

        Raises:
            RetryableDispatchError: a passing failure; the same message may be sent again.
            PermanentDispatchError: retrying cannot help; the reason says why.
        """
        ...


@dataclass(frozen=True, slots=True)
class ChannelRegistry:
    """An immutable map of channel kind to its adapter; ``register`` returns a new one."""

    channels: Mapping[ChannelKind, Channel] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", MappingProxyType(dict(self.channels)))

    def register(self, channel: Channel) -> ChannelRegistry:
        """A registry with ``channel`` added (or replacing the adapter of its kind)."""
        return ChannelRegistry({**self.channels, ChannelKind(channel.kind): channel})

    def get(self, kind: ChannelKind | str) -> Channel:
        """The adapter for ``kind``.

        Raises:
            ChannelNotConfiguredError: no adapter is configured for that kind on this worker.
                Retryable (with a long wait): it is the deployment's fault, not the
                message's, and another worker or a fixed setting may deliver it.
        """
        try:
            return self.channels[ChannelKind(kind)]
        except (KeyError, ValueError):
            configured = sorted(k.value for k in self.channels)
            raise ChannelNotConfiguredError(
                f"no {kind} channel is configured on this worker (configured: "
                f"{configured or 'none'}); set its TOCSIN_* settings (docs/dispatch.md)"
            ) from None

    def __contains__(self, kind: object) -> bool:
        return kind in self.channels

    def __iter__(self) -> Iterator[ChannelKind]:
        return iter(self.channels)
