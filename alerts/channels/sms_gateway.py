"""The SMS channel through a configurable HTTP gateway (Twilio-like, Vonage-like, in-house).

Gateways differ in the shape of their request, so the body is a template with
placeholders; every value is escaped for the body's content type before it is put in, so
a quote or a newline in an alert can never break the body or add a field to it. The
contract operators configure against is ``docs/sms-gateway.md``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote_plus

import httpx

from alerts.channels._http import HttpPermanentError, check_destination, parse_allow_hosts, post
from alerts.channels.base import AlertContent, OutgoingMessage, Receipt
from alerts.model import ChannelKind
from alerts.sms import fit_sms, gsm7_punctuation, sms_segments

ContentType = Literal["application/json", "application/x-www-form-urlencoded"]
CONTENT_TYPES: tuple[str, ...] = ("application/json", "application/x-www-form-urlencoded")

PLACEHOLDERS = frozenset({"to", "text", "sender_id", "idempotency_key", "encoding", "segments"})
"""The names a body template may use, each written ``{name}``."""

DEFAULT_BODY_TEMPLATE = ('{"to": "{to}", "from": "{sender_id}", "text": "{text}", '
                         '"reference": "{idempotency_key}"}')

# Only {identifier} is a placeholder: the braces of a JSON template stay literal.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "idempotency-key",
                               "transfer-encoding", "connection", "accept-encoding"})
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_PHONE = re.compile(r"^\+?[0-9]{3,15}$")

# Values that would break a body if escaping were wrong: the validation fills them in.
_SAMPLE = {"to": "+41790000000", "text": 'Red alert: "quoted"\nline \\ & = é',
           "sender_id": "Tocsin", "idempotency_key": "k" * 64, "encoding": "GSM-7",
           "segments": "1"}


def _no_line_breaks(what: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must not contain a line break")


@dataclass(frozen=True, slots=True)
class NoAuth:
    """The gateway needs no credentials (it trusts the network, or the URL holds a token)."""

    def headers(self) -> dict[str, str]:
        """No header."""
        return {}


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic authentication.

    Attributes:
        username: the account (no colon).
        password: the password.
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if ":" in self.username:
            raise ValueError("basic-auth username must not contain ':'")
        _no_line_breaks("basic-auth username", self.username)

    def headers(self) -> dict[str, str]:
        """The ``Authorization: Basic ...`` header."""
        pair = f"{self.username}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """A bearer token (``Authorization: Bearer <token>``)."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("bearer token must not be empty")
        _no_line_breaks("bearer token", self.token)

    def headers(self) -> dict[str, str]:
        """The ``Authorization: Bearer ...`` header."""
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True, slots=True)
class HeaderAuth:
    """A credential in a header of the gateway's choosing (``X-API-Key: ...``).

    Attributes:
        name: the header name; not one Tocsin sets itself (Content-Type, Idempotency-Key...).
        value: the credential.
    """

    name: str
    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _HEADER_NAME.match(self.name):
            raise ValueError(f"auth header name {self.name!r} is not a valid header name")
        if self.name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"auth header {self.name!r} is set by Tocsin itself")
        _no_line_breaks(f"auth header {self.name}", self.value)

    def headers(self) -> dict[str, str]:
        """The configured header."""
        return {self.name: self.value}


SmsAuth = NoAuth | BasicAuth | BearerAuth | HeaderAuth


def escape_value(value: str, content_type: str) -> str:
    """``value`` escaped for where a template puts it.

    Args:
        value: the raw value.
        content_type: the body's content type.

    Returns:
        For JSON, the value's JSON string escaping without the surrounding quotes (the
        template supplies those); for forms, its percent-encoding (``&`` and ``=`` too).
    """
    if content_type == "application/json":
        return json.dumps(value, ensure_ascii=False)[1:-1]
    return quote_plus(value, safe="")


def render_body(template: str, content_type: str, values: dict[str, str]) -> bytes:
    """Fill ``template`` with escaped ``values``.

    Args:
        template: the body template.
        content_type: the body's content type (chooses the escaping).
        values: a value for each placeholder name.

    Returns:
        The UTF-8 body.
    """
    return _PLACEHOLDER.sub(lambda m: escape_value(values[m.group(1)], content_type),
                            template).encode("utf-8")


def validate_template(template: str, content_type: str) -> None:
    """Refuse a template that uses unknown placeholders or does not yield a valid body.

    Args:
        template: the body template.
        content_type: the body's content type.

    Raises:
        ValueError: an unknown placeholder (named), ``{to}`` or ``{text}`` missing, or a
            sample fill that is not valid JSON / not ``name=value`` pairs.
    """
    used = {m.group(1) for m in _PLACEHOLDER.finditer(template)}
    unknown = sorted(used - PLACEHOLDERS)
    if unknown:
        raise ValueError(f"SMS body template uses unknown placeholder(s) "
                         f"{', '.join('{' + u + '}' for u in unknown)}; known: "
                         f"{', '.join(sorted(PLACEHOLDERS))}")
    missing = sorted({"to", "text"} - used)
    if missing:
        names = ", ".join("{" + m + "}" for m in missing)
        raise ValueError(f"SMS body template must contain {names}")
    sample = render_body(template, content_type, _SAMPLE).decode("utf-8")
    if content_type == "application/json":
        try:
            json.loads(sample)
        except ValueError as exc:
            raise ValueError(f"SMS body template is not valid JSON once filled in (put "
                             f"text placeholders inside quotes): {exc}") from None
    else:
        try:
            parse_qsl(sample, keep_blank_values=True, strict_parsing=True)
        except ValueError as exc:
            raise ValueError(f"SMS form template must be name=value pairs joined by '&': "
                             f"{exc}") from None


@dataclass(frozen=True, slots=True)
class SmsGatewayConfig:
    """Settings of the SMS gateway channel.

    Attributes:
        url: the gateway's endpoint (https unless allow-listed).
        auth: :class:`NoAuth`, :class:`BasicAuth`, :class:`BearerAuth` or :class:`HeaderAuth`.
        body_template: the request body with ``{placeholder}`` fields (see
            :data:`PLACEHOLDERS`); a form template looks like ``to={to}&text={text}``.
        content_type: ``application/json`` or ``application/x-www-form-urlencoded``.
        sender_id: the sender shown on the phone (alphanumeric ID or number).
        max_segments: the most SMS parts a digest may take (single alerts come fitted).
        allow_hosts: host names, IPs or CIDRs that may be private or plain http.
        timeout_s: connect, read and write timeout of each request.
        message_id_field: the top-level JSON field of the answer holding the gateway's
            message id (None: do not read one).
        user_agent: the ``User-Agent`` sent.
    """

    url: str
    auth: SmsAuth = NoAuth()
    body_template: str = DEFAULT_BODY_TEMPLATE
    content_type: ContentType = "application/json"
    sender_id: str = "Tocsin"
    max_segments: int = 1
    allow_hosts: tuple[str, ...] = ()
    timeout_s: float = 10.0
    message_id_field: str | None = "id"
    user_agent: str = "Tocsin-SMS/1"

    def __post_init__(self) -> None:
        try:
            parsed = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"SMS gateway url is not a valid URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("SMS gateway url must be an http(s) URL with a host")
        if self.content_type not in CONTENT_TYPES:
            raise ValueError(f"SMS gateway content_type must be one of {CONTENT_TYPES}, got "
                             f"{self.content_type!r}")
        if not isinstance(self.auth, NoAuth | BasicAuth | BearerAuth | HeaderAuth):
            raise ValueError(f"SMS gateway auth must be NoAuth, BasicAuth, BearerAuth or "
                             f"HeaderAuth, got {type(self.auth).__name__}")
        if not self.sender_id:
            raise ValueError("SMS gateway sender_id must not be empty")
        if self.max_segments < 1:
            raise ValueError(f"SMS max_segments must be 1 or more, got {self.max_segments}")
        if not self.timeout_s > 0:
            raise ValueError(f"SMS gateway timeout_s must be positive, got {self.timeout_s}")
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        parse_allow_hosts(self.allow_hosts)
        validate_template(self.body_template, self.content_type)


def digest_text(alerts: tuple[AlertContent, ...], max_segments: int) -> str:
    """One SMS listing several alerts: the count, then each level in words and its area.

    The most severe alerts come first, newest first within a level, so that what
    shortening cuts off is the least important.

    Args:
        alerts: the alerts of a digest, newest last.
        max_segments: the most SMS parts the text may take.

    Returns:
        The text, fitted to ``max_segments``.
    """
    ordered = sorted(enumerate(alerts), key=lambda item: (-item[1].level.rank, -item[0]))
    items = "; ".join(f"{a.text.level_text}: {a.text.event}, {a.area_description}"
                      for _, a in ordered)
    return fit_sms(gsm7_punctuation(f"Tocsin ({len(alerts)}): {items}"), max_segments)


def sms_text(message: OutgoingMessage, max_segments: int) -> str:
    """The SMS text of a delivery: the alert's own SMS, or a digest of several alerts."""
    if len(message.alerts) == 1:
        return fit_sms(message.alert.text.sms, max_segments)
    return digest_text(message.alerts, max_segments)


def normalize_phone(address: str) -> str:
    """The number as gateways expect it: digits with an optional leading ``+``.

    Raises:
        HttpPermanentError: the address is not a phone number (retrying cannot fix it).
    """
    number = _PHONE_SEPARATORS.sub("", address)
    if not _PHONE.match(number):
        raise HttpPermanentError(f"SMS address {address!r} is not a phone number")
    return number


class SmsGatewayChannel:
    """Sends each message as one SMS through the configured HTTP gateway.

    Args:
        config: the gateway's settings.
        client: the HTTP client to use; one is created, without proxies from the
            environment, when omitted, and :meth:`close` closes only a client the channel
            created.
    """

    kind = ChannelKind.SMS

    def __init__(self, config: SmsGatewayConfig, *, client: httpx.Client | None = None
                 ) -> None:
        self.config = config
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(
            follow_redirects=False, trust_env=False, timeout=config.timeout_s)

    def render(self, message: OutgoingMessage) -> bytes:
        """The request body for ``message`` (what :meth:`send` posts)."""
        text = sms_text(message, self.config.max_segments)
        encoding = sms_segments(text)
        values = {"to": normalize_phone(message.channel.address), "text": text,
                  "sender_id": self.config.sender_id,
                  "idempotency_key": message.idempotency_key,
                  "encoding": encoding.encoding, "segments": str(encoding.segments)}
        return render_body(self.config.body_template, self.config.content_type, values)

    def send(self, message: OutgoingMessage) -> Receipt:
        """Hand ``message`` to the gateway.

        Args:
            message: an SMS delivery; its address is the phone number.

        Returns:
            A receipt with the HTTP status and the gateway's message id, if it gave one.

        Raises:
            HttpRetryableError: 408, 425, 429 (``retry_after_s`` from ``Retry-After``), 5xx,
                timeout, connection failure, or a gateway host that does not resolve.
            HttpPermanentError: 3xx, other 4xx, a refused gateway URL, or an address that
                is not a phone number.
        """
        if message.channel.kind != ChannelKind.SMS:
            raise HttpPermanentError(f"delivery {message.idempotency_key}: a "
                                     f"{message.channel.kind} address sent to the SMS channel")
        to = normalize_phone(message.channel.address)
        body = self.render(message)
        check_destination(self.config.url, self.config.allow_hosts)
        headers = {"Content-Type": self.config.content_type,
                   "User-Agent": self.config.user_agent,
                   "Idempotency-Key": message.idempotency_key,
                   **self.config.auth.headers()}
        answer = post(self._client, self.config.url, content=body, headers=headers,
                      timeout_s=self.config.timeout_s)
        return Receipt(channel=ChannelKind.SMS, address=to, detail=f"HTTP {answer.status}",
                       remote_id=self._message_id(answer.body))

    def _message_id(self, body: bytes) -> str | None:
        """The gateway's id from the answer; None when absent (the SMS was still accepted)."""
        if self.config.message_id_field is None:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return None
        value = document.get(self.config.message_id_field) if isinstance(document, dict) \
            else None
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        return str(value) or None

    def close(self) -> None:
        """Close the HTTP client if the channel created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SmsGatewayChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
