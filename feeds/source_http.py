"""HTTP(S) polling: conditional GETs, polite spacing, exponential backoff on errors.

The state of an HTTP feed (JSON)::

    {"etag": "W/abc123", "last_modified": "Wed, 01 May 2024 10:00:00 GMT",
     "last_request_at": "2024-05-01T10:05:00+00:00", "not_before": null,
     "failures": 0, "last_status": 200, ...screen keys (see feeds.source_base)}

``not_before`` is the earliest time the server may be asked again (backoff or
``Retry-After``); ``last_request_at`` plus ``min_interval_s`` is the other bound. A poll
before both are past sends no request and says when it may.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from feeds.archive import Archive, ArchivedPayload
from feeds.base import to_utc
from feeds.errors import ArchiveError, PayloadTooLargeError
from feeds.feed_config import FeedConfig, HttpSourceConfig
from feeds.source_base import PollResult, after, begin_state, finish, screen_payload

# A reply taking more than this share of the timeout is noted as slow in feeds status.
SLOW_SHARE_OF_TIMEOUT = 0.5
# A server's Retry-After is honoured up to a day; beyond that it is more likely a bug.
MAX_RETRY_AFTER_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Fetched:
    """The outcome of one GET: its status, and the archived payload on a 200."""

    status: int
    reason: str
    payload: ArchivedPayload | None
    retry_after_s: float | None
    elapsed_s: float


def parse_http_date(text: str | None) -> datetime | None:
    """An HTTP date (``Last-Modified``) as an aware UTC datetime, or ``None``."""
    if not text:
        return None
    try:
        return to_utc(parsedate_to_datetime(text))
    except (TypeError, ValueError):
        return None


def _retry_after_s(text: str | None, now: datetime) -> float | None:
    if not text:
        return None
    if text.strip().isdigit():
        return min(float(text.strip()), MAX_RETRY_AFTER_S)
    when = parse_http_date(text)
    if when is None:
        return None
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


def _capped(chunks: Any, max_bytes: int, url: str) -> Any:
    total = 0
    for block in chunks:
        total += len(block)
        if total > max_bytes:
            raise PayloadTooLargeError(url, f"body exceeds the cap of {max_bytes} bytes")
        yield block


def name_from_url(url: str) -> str:
    """The last path segment of ``url`` (``depth.tif``), or ``"payload"``."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "payload"


def fetch_to_archive(client: httpx.Client, url: str, *, archive: Archive, feed_id: str,
                     now: datetime, headers: dict[str, str], timeout_s: float,
                     max_body_bytes: int, issued_at: datetime | None = None,
                     source_uri: str | None = None) -> Fetched:
    """GET ``url`` and stream a 200 body into the archive.

    Redirects are followed within http(s) only (httpx refuses other schemes).

    Raises:
        httpx.HTTPError: a timeout, connection error or refused redirect.
        PayloadTooLargeError: the body is over ``max_body_bytes`` (nothing is archived).
        ArchiveError: the archive cannot be written.
    """
    with client.stream("GET", url, headers=headers, timeout=timeout_s,
                       follow_redirects=True) as resp:
        payload = None
        if resp.status_code == 200:
            if resp.url.scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol(f"redirected to {resp.url}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_body_bytes:
                raise PayloadTooLargeError(url, f"Content-Length {declared} exceeds the cap "
                                           f"of {max_body_bytes} bytes")
            last_modified = resp.headers.get("last-modified")
            media_type = resp.headers.get("content-type", "").split(";")[0].strip() or None
            payload = archive.store_chunks(
                _capped(resp.iter_bytes(), max_body_bytes, url), feed_id=feed_id,
                source_uri=source_uri or str(resp.url), fetched_at=now,
                original_name=name_from_url(str(resp.url)),
                issued_at=issued_at or parse_http_date(last_modified),
                etag=resp.headers.get("etag"), last_modified=last_modified,
                media_type=media_type)
    return Fetched(status=resp.status_code, reason=resp.reason_phrase, payload=payload,
                   retry_after_s=_retry_after_s(resp.headers.get("retry-after"), now),
                   elapsed_s=resp.elapsed.total_seconds())


class HttpSource:
    """One URL polled with ``If-None-Match`` / ``If-Modified-Since``.

    Args:
        feed: the feed (its source is an :class:`HttpSourceConfig`).
        archive: where fetched payloads go.
        client: an httpx client to share (connection reuse); one is made per poll if
            ``None``. Per-request timeouts come from the feed either way.
    """

    def __init__(self, feed: FeedConfig, archive: Archive,
                 client: httpx.Client | None = None) -> None:
        if not isinstance(feed.source, HttpSourceConfig):
            raise TypeError(f"feed {feed.id!r} is not an http feed")
        self.feed, self.feed_id, self.archive, self.client = feed, feed.id, archive, client
        self.config: HttpSourceConfig = feed.source

    def poll(self, state: dict[str, Any], *, now: datetime) -> PollResult:
        """Send one conditional GET unless politeness or backoff forbids it yet.

        Args:
            state: the state returned by the previous poll (``{}`` the first time).
            now: the current time (aware).

        Returns:
            The poll's result; ``error`` says what went wrong, nothing is raised.
        """
        st = begin_state(state)
        earliest = self._earliest_request_at(st)
        if earliest is not None and now < earliest:
            return PollResult(payloads=[], state=st, next_poll_at=earliest, notes=[
                f"not polled: the server may be asked again at {earliest.isoformat()} "
                "(polite minimum interval or backoff)"], error=None)
        st["last_request_at"] = now.isoformat()
        headers = dict(self.config.headers)
        if st.get("etag"):
            headers["If-None-Match"] = st["etag"]
        if st.get("last_modified"):
            headers["If-Modified-Since"] = st["last_modified"]
        client = self.client or httpx.Client(timeout=self.config.timeout_s)
        try:
            fetched = fetch_to_archive(
                client, self.config.url, archive=self.archive, feed_id=self.feed_id, now=now,
                headers=headers, timeout_s=self.config.timeout_s,
                max_body_bytes=self.config.max_body_bytes, source_uri=self.config.url)
        except httpx.TimeoutException:
            return self._failed(st, now, f"no answer within {self.config.timeout_s:g} s "
                                f"from {self.config.url}", retry_after_s=None)
        except (httpx.UnsupportedProtocol, httpx.TooManyRedirects) as exc:
            return self._refused(st, now, f"{self.config.url}: {exc}")
        except httpx.HTTPError as exc:
            return self._failed(st, now, f"cannot reach {self.config.url}: {exc}",
                                retry_after_s=None)
        except (PayloadTooLargeError, ArchiveError) as exc:
            return self._refused(st, now, str(exc))
        finally:
            if self.client is None:
                client.close()
        return self._answered(st, now, fetched)

    def _earliest_request_at(self, st: dict[str, Any]) -> datetime | None:
        bounds = [to_utc(st.get("not_before"))]
        last = to_utc(st.get("last_request_at"))
        if last is not None:
            bounds.append(last + timedelta(seconds=self.config.min_interval_s))
        found = [b for b in bounds if b is not None]
        return max(found) if found else None

    def _normal_next(self, now: datetime) -> datetime:
        return after(now, max(self.feed.poll_interval_s, self.config.min_interval_s))

    def _answered(self, st: dict[str, Any], now: datetime, fetched: Fetched) -> PollResult:
        st["last_status"] = fetched.status
        notes: list[str] = []
        if fetched.elapsed_s > SLOW_SHARE_OF_TIMEOUT * self.config.timeout_s:
            notes.append(f"slow answer: {fetched.elapsed_s:.1f} s (timeout "
                         f"{self.config.timeout_s:g} s)")
        if fetched.status == 429 or fetched.status >= 500:
            return self._failed(st, now, f"HTTP {fetched.status} {fetched.reason} from "
                                f"{self.config.url}", fetched.retry_after_s, notes)
        if fetched.status not in (200, 304):
            return self._refused(st, now, f"HTTP {fetched.status} {fetched.reason} from "
                                 f"{self.config.url}", notes)
        st["failures"], st["not_before"] = 0, None
        payloads: list[ArchivedPayload] = []
        if fetched.status == 304:
            notes.append("not modified since the last fetch")
        elif fetched.payload is not None:
            payload = fetched.payload
            for key, value in (("etag", payload.etag), ("last_modified", payload.last_modified)):
                if value:
                    st[key] = value
                else:
                    st.pop(key, None)
            if screen_payload(payload, st, notes):
                payloads.append(payload)
        return finish(st, now=now, payloads=payloads, next_poll_at=self._normal_next(now),
                      notes=notes, error=None)

    def _failed(self, st: dict[str, Any], now: datetime, error: str,
                retry_after_s: float | None, notes: list[str] | None = None) -> PollResult:
        """A transient failure: back off exponentially, at least as long as Retry-After."""
        failures = int(st.get("failures", 0)) + 1
        base_s = max(self.feed.poll_interval_s, self.config.min_interval_s)
        delay_s = min(self.config.max_backoff_s, base_s * 2.0**failures)
        if retry_after_s is not None:
            delay_s = max(delay_s, retry_after_s)
        retry_at = after(now, delay_s)
        st["failures"], st["not_before"] = failures, retry_at.isoformat()
        message = f"{error}; retrying in {delay_s:g} s (failure {failures} in a row)"
        return finish(st, now=now, payloads=[], next_poll_at=retry_at, notes=notes or [],
                      error=message)

    def _refused(self, st: dict[str, Any], now: datetime, error: str,
                 notes: list[str] | None = None) -> PollResult:
        """A failure that waiting will not cure: say so, poll again at the normal interval."""
        st["not_before"] = None
        next_at = self._normal_next(now)
        return finish(st, now=now, payloads=[], next_poll_at=next_at, notes=notes or [],
                      error=f"{error}; not a transient error, next poll at the normal "
                      f"interval ({next_at.isoformat()})")

