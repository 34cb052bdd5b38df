"""What the HTTP channels (webhook, SMS gateway) share: the SSRF guard and the outcome rules.

Destinations come from subscriptions (webhook URLs) or settings (the gateway), so an alert
could be used to make Tocsin call into its own network. :func:`check_destination` refuses
plain http and every private, loopback, link-local, multicast or reserved address unless the
operator allow-listed it. :func:`post` sends one request, never follows a redirect (the
target could be private), reads at most :data:`MAX_BODY_BYTES` of the answer, and turns the
answer into the dispatcher's two outcomes: :class:`HttpRetryableError` or
:class:`HttpPermanentError`.

The guard resolves the name, then the client resolves it again when it connects; a
receiver controlling its DNS could answer differently the second time (DNS rebinding).
Deployments that need to close that gap route the channels through an egress proxy that
applies the same rules.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from alerts.errors import PermanentDispatchError, RetryableDispatchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]

MAX_BODY_BYTES = 64 * 1024
"""At most this much of an answer is read: a receiver cannot make a worker hold more."""

RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""Client-error statuses that mean "later", not "never" (plus every 5xx)."""

# NAT64 (RFC 6052) embeds an IPv4 address in the last 32 bits; a gateway would reach it.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class HttpRetryableError(RetryableDispatchError):
    """A passing HTTP failure (5xx, 408, 425, 429, timeout, connection error).

    Attributes:
        status: the HTTP status, or None when no answer came (timeout, connection error).
        retry_after_s: seconds the receiver asked to wait (``Retry-After``), if it did.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class HttpPermanentError(PermanentDispatchError):
    """An HTTP failure retrying cannot fix (4xx, 3xx, refused destination).

    Attributes:
        status: the HTTP status, or None when the request was refused before sending.
            410 means the receiver asks never to be sent to again.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A 2xx answer: its status, headers and (at most :data:`MAX_BODY_BYTES` of) body."""

    status: int
    headers: httpx.Headers
    body: bytes


def parse_allow_hosts(entries: Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Split an allow-list into host names and IP networks.

    Args:
        entries: host names (``hooks.internal``), IP literals (``10.1.2.3``, ``::1``,
            ``[::1]``) or CIDRs (``10.0.0.0/8``).

    Returns:
        The lower-cased names and the networks (an IP literal is a one-address network).

    Raises:
        ValueError: an entry is empty.
    """
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().strip("[]").rstrip(".").lower()
        if not entry:
            raise ValueError(f"allow-list entry {raw!r} is empty")
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry)
    return frozenset(names), tuple(networks)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True when ``address`` is a public unicast address (and so is any address it embeds).

    Args:
        address: an IPv4 or IPv6 address.

    Returns:
        False for private, loopback, link-local, multicast, reserved, unspecified, shared
        (100.64.0.0/10) and documentation addresses, and for IPv6 forms of those.
    """
    embedded = _embedded_ipv4(address)
    if embedded is not None and not is_public(embedded):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
        or address.is_loopback or address.is_link_local or address.is_private
    )


def _covered(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    candidates = [address, _embedded_ipv4(address)]
    return any(c is not None and c.version == n.version and c in n
               for c in candidates for n in networks)


def origin(url: httpx.URL) -> str:
    """``scheme://host[:port]`` of a URL: what errors name (paths may hold tokens)."""
    port = f":{url.port}" if url.port is not None else ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}{port}"


def _redacted(url: str) -> str:
    """A URL as errors may show it: its origin when it parses, else only its scheme."""
    try:
        return origin(httpx.URL(url)) + "/…"
    except (httpx.InvalidURL, TypeError, UnicodeError):
        return url.split(":", 1)[0] + ":…" if ":" in url else "…"


def check_destination(url: str, allow_hosts: Collection[str], *,
                      resolve: Resolver = _system_resolver) -> None:
    """Refuse a destination that is not https or that resolves to a non-public address.

    Plain http is accepted only when the URL's host is allow-listed (its name, or a literal
    IP inside an allow-listed IP or CIDR). Every address the host resolves to must be public,
    unless the host name is allow-listed or an allow-listed IP/CIDR covers that address.

    Args:
        url: the destination.
        allow_hosts: host names, IPs and CIDRs the operator trusts (internal receivers).
        resolve: ``(host, port) -> addresses``; the system resolver unless a test replaces it.

    Raises:
        HttpPermanentError: the URL is malformed, not http(s), http to a host that is not
            allow-listed, or an address is not public and not allow-listed.
        HttpRetryableError: the host does not resolve (DNS may come back).
    """
    try:
        parsed = httpx.URL(url)
        has_host = bool(parsed.host)  # decodes an IDNA host: a malformed one raises here
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        raise HttpPermanentError(f"destination {_redacted(url)!r} is not a valid URL: "
                                 f"{exc}") from None
    if parsed.scheme not in ("http", "https") or not has_host:
        raise HttpPermanentError(f"destination {origin(parsed)} must be an http(s) URL with a "
                                 "host")
    host = parsed.raw_host.decode("ascii").strip("[]").rstrip(".").lower()
    names, networks = parse_allow_hosts(allow_hosts)
    literal = _literal_ip(host)
    host_listed = host in names or (literal is not None and _covered(literal, networks))
    if parsed.scheme != "https" and not host_listed:
        raise HttpPermanentError(f"destination {origin(parsed)} refused: https is required "
                                 "(plain http only to allow-listed hosts)")
    if host in names:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        resolved = [literal] if literal is not None else [
            ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
    except (socket.gaierror, UnicodeError) as exc:
        raise HttpRetryableError(f"destination {origin(parsed)}: host does not resolve "
                                 f"({exc})") from None
    if not resolved:
        raise HttpRetryableError(f"destination {origin(parsed)}: host resolves to nothing")
    for address in resolved:
        if not is_public(address) and not _covered(address, networks):
            raise HttpPermanentError(f"destination {origin(parsed)} refused: {address} is not "
                                     "a public address (allow-list it to send there)")


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Args:
        value: the header value, or None.
        now: the current time for the date form (defaults to the system clock).

    Returns:
        The delay, at least 0, or None when the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _excerpt(body: bytes) -> str:
    """The first 200 characters of a body, whitespace folded so one log line shows it."""
    return " ".join(body.decode("utf-8", errors="replace").split())[:200]


def error_for_status(status: int, headers: Mapping[str, str], body: bytes, where: str
                     ) -> HttpRetryableError | HttpPermanentError | None:
    """The outcome of an answer: None for 2xx, else the error to raise.

    Args:
        status: the HTTP status.
        headers: the answer's headers (``Retry-After`` is read).
        body: the answer's body (its first 200 characters go into the message).
        where: the destination's origin, for the message.

    Returns:
        None for 2xx; :class:`HttpRetryableError` for 408, 425, 429 and 5xx;
        :class:`HttpPermanentError` for 1xx, 3xx (never followed) and other 4xx.
    """
    if 200 <= status < 300:
        return None
    reason = f"{where} answered HTTP {status}"
    excerpt = _excerpt(body)
    detail = f"{reason}: {excerpt}" if excerpt else reason
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        return HttpRetryableError(detail, status=status,
                                  retry_after_s=retry_after_seconds(headers.get("retry-after")))
    if 300 <= status < 400:
        location = _redacted(headers.get("location", ""))
        return HttpPermanentError(f"{reason} (redirect to {location!r}, not followed: "
                                  "configure the final URL)", status=status)
    if status == 410:
        return HttpPermanentError(f"{detail} (gone: stop sending to it)", status=status)
    return HttpPermanentError(detail, status=status)


def error_for_exception(exc: httpx.HTTPError, where: str
                        ) -> HttpRetryableError | HttpPermanentError:
    """The outcome of a request that got no answer.

    Args:
        exc: what httpx raised.
        where: the destination's origin, for the message.

    Returns:
        :class:`HttpPermanentError` when the request itself is wrong (bad URL or header),
        else :class:`HttpRetryableError` (timeouts, refused or reset connections, TLS).
    """
    if isinstance(exc, httpx.TimeoutException):
        return HttpRetryableError(f"{where} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return HttpPermanentError(f"request to {where} is invalid: {exc}")
    return HttpRetryableError(f"{where} could not be reached: {type(exc).__name__}: {exc}")


def post(client: httpx.Client, url: str, *, content: bytes, headers: Mapping[str, str],
         timeout_s: float) -> HttpAnswer:
    """POST ``content`` to ``url`` once, never following redirects, and judge the answer.

    Args:
        client: the client to send with (its own redirect setting is overridden).
        url: the destination, already passed through :func:`check_destination`.
        content: the body.
        headers: request headers.
        timeout_s: connect, read, write and pool timeout, each.

    Returns:
        The 2xx answer.

    Raises:
        HttpRetryableError: 408, 425, 429, 5xx, timeout or connection failure.
        HttpPermanentError: 3xx, other 4xx, or a request that cannot be sent.
    """
    try:
        where = origin(httpx.URL(url))
        # identity: a compressed body could expand far beyond what is read here.
        request = client.build_request(
            "POST", url, content=content, timeout=httpx.Timeout(timeout_s),
            headers={"Accept-Encoding": "identity", **headers})
    except httpx.InvalidURL as exc:
        raise HttpPermanentError(f"destination is not a valid URL: {exc}") from None
    try:
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            body = _read_capped(response)
        finally:
            response.close()
    except httpx.HTTPError as exc:
        raise error_for_exception(exc, where) from exc
    error = error_for_status(response.status_code, response.headers, body, where)
    if error is not None:
        raise error
    return HttpAnswer(response.status_code, response.headers, body)


def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk[: MAX_BODY_BYTES - size])
        size += len(chunks[-1])
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)
