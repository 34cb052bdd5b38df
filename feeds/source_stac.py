"""STAC feeds: items of a static catalog (pystac) or a STAC API search (pystac-client).

Each new item, keyed by its id and the chosen asset's href, has that asset fetched by
href (a local path, relative to the catalog or absolute, or an http(s) URL) and
archived with ``issued_at`` = the item's datetime (else ``start_datetime``, else
``created``). A re-published item whose asset href changed is a new payload.

The state of a STAC feed (JSON)::

    {"seen": ["item-id|href", ...],          # bounded, oldest dropped first
     "item_failures": {"item-id|href": 2},   # fetch attempts that failed, per item
     ...screen keys (see feeds.source_base)}
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pystac
from pystac.stac_io import DefaultStacIO

from feeds.archive import Archive, ArchivedPayload
from feeds.base import to_utc
from feeds.errors import ArchiveError, FeedError, FeedUnavailableError
from feeds.feed_config import FeedConfig, StacSourceConfig
from feeds.source_base import PollResult, after, begin_state, finish, screen_payload
from feeds.source_http import fetch_to_archive

# Media types the readers know (feeds.read); the first asset with one is read by default.
READABLE_MEDIA_TYPES = frozenset({
    "image/tiff", "image/vnd.stac.geotiff", "application/x-netcdf", "application/netcdf",
    "application/x-grib", "application/x-grib2", "application/xml", "text/xml",
})
SEEN_ITEMS_KEPT = 10_000
# An asset that fails this many polls in a row is given up (noted) so it cannot block a feed.
MAX_ITEM_ATTEMPTS = 5


class _HttpxStacIO(DefaultStacIO):
    """pystac I/O that reads remote catalogs with httpx (timeouts, shared headers)."""

    def __init__(self, client: httpx.Client, headers: dict[str, str], timeout_s: float) -> None:
        super().__init__()
        self.client, self.request_headers, self.timeout_s = client, headers, timeout_s

    def read_text_from_href(self, href: str) -> str:
        """Read ``href`` over http(s) with httpx, anything else as pystac does."""
        if urlsplit(href).scheme in ("http", "https"):
            resp = self.client.get(href, headers=self.request_headers, timeout=self.timeout_s,
                                   follow_redirects=True)
            resp.raise_for_status()
            return resp.text
        return super().read_text_from_href(href)


def _item_time(item: pystac.Item) -> datetime | None:
    props = item.properties
    return to_utc(item.datetime or props.get("start_datetime") or props.get("created"))


def _item_span(item: pystac.Item) -> tuple[datetime | None, datetime | None]:
    props = item.properties
    if item.datetime is not None:
        return to_utc(item.datetime), to_utc(item.datetime)
    return to_utc(props.get("start_datetime")), to_utc(props.get("end_datetime"))


def _local_path(href: str) -> Path | None:
    parts = urlsplit(href)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and href[1:3] in (":\\", ":/")):
        return Path(href)
    return None


class StacSource:
    """A static STAC catalog or a STAC API, filtered by collection, bbox and datetime.

    Args:
        feed: the feed (its source is a :class:`StacSourceConfig`).
        archive: where fetched assets go.
        client: an httpx client for remote catalogs and assets; one is made per poll if
            ``None``. (STAC API searches go through pystac-client's own session.)
    """

    def __init__(self, feed: FeedConfig, archive: Archive,
                 client: httpx.Client | None = None) -> None:
        if not isinstance(feed.source, StacSourceConfig):
            raise TypeError(f"feed {feed.id!r} is not a stac feed")
        self.feed, self.feed_id, self.archive, self.client = feed, feed.id, archive, client
        self.config: StacSourceConfig = feed.source

    def poll(self, state: dict[str, Any], *, now: datetime) -> PollResult:
        """List matching items, archive the assets of new ones (up to ``limit``).

        Args:
            state: the state returned by the previous poll (``{}`` the first time).
            now: the current time (aware).

        Returns:
            The poll's result; a missing or broken catalog gives ``error``, not an exception.
        """
        st = begin_state(state)
        client = self.client or httpx.Client(timeout=self.config.timeout_s)
        try:
            return self._poll(st, now, client)
        finally:
            if self.client is None:
                client.close()

    def _poll(self, st: dict[str, Any], now: datetime, client: httpx.Client) -> PollResult:
        where = self.config.api or self.config.catalog
        next_at = after(now, self.feed.poll_interval_s)
        try:
            items = self._search(client) if self.config.api else self._walk(client)
        # pystac and pystac-client surface a broken catalog as many unrelated types
        # (STACError, JSONDecodeError, KeyError, OSError, requests and httpx errors):
        # whatever it is, the feed reports it and the next poll retries.
        except Exception as exc:  # noqa: BLE001
            return finish(st, now=now, payloads=[], next_poll_at=next_at, notes=[],
                          error=f"cannot read the STAC {'API' if self.config.api else 'catalog'}"
                          f" {where}: {type(exc).__name__}: {exc}")
        seen: list[str] = st.setdefault("seen", [])
        seen_set = set(seen)
        notes: list[str] = []
        errors: list[str] = []
        fresh: list[tuple[str, pystac.Item, pystac.Asset]] = []
        for item in items:
            chosen = self._choose_asset(item)
            if chosen is None:
                key = f"{item.id}|"
                if key not in seen_set:
                    notes.append(f"item {item.id}: no asset "
                                 f"{self.config.asset or 'with a readable media type'}; skipped")
                    seen.append(key)
                    seen_set.add(key)
                continue
            key = f"{item.id}|{chosen.get_absolute_href() or chosen.href}"
            if key not in seen_set:
                fresh.append((key, item, chosen))
        # Oldest first, so the pipeline sees the feed in time order where it can.
        fresh.sort(key=lambda t: (_item_time(t[1]) is None, _item_time(t[1]) or now, t[1].id))
        if len(fresh) > self.config.limit:
            notes.append(f"{len(fresh) - self.config.limit} more new item(s) left for the "
                         "next poll")
            fresh, next_at = fresh[: self.config.limit], now
        payloads = self._fetch_all(fresh, st, now, client, notes, errors)
        del seen[:-SEEN_ITEMS_KEPT]
        error = None
        if errors:
            error = "; ".join(errors[:3]) + (f" (and {len(errors) - 3} more)"
                                              if len(errors) > 3 else "")
        return finish(st, now=now, payloads=payloads, next_poll_at=next_at, notes=notes,
                      error=error)

    def _fetch_all(self, fresh: list[tuple[str, pystac.Item, pystac.Asset]],
                   st: dict[str, Any], now: datetime, client: httpx.Client, notes: list[str],
                   errors: list[str]) -> list[ArchivedPayload]:
        seen: list[str] = st["seen"]
        failures: dict[str, int] = st.setdefault("item_failures", {})
        payloads: list[ArchivedPayload] = []
        for key, item, asset in fresh:
            try:
                payload = self._fetch(item, asset, now, client)
            except (httpx.HTTPError, FeedError, OSError) as exc:
                failures[key] = failures.get(key, 0) + 1
                if failures[key] >= MAX_ITEM_ATTEMPTS:
                    notes.append(f"item {item.id}: gave up after {failures.pop(key)} failed "
                                 f"fetches: {exc}")
                    seen.append(key)
                else:
                    errors.append(f"item {item.id}: {exc}")
                continue
            failures.pop(key, None)
            seen.append(key)
            if payload is not None and screen_payload(payload, st, notes):
                payloads.append(payload)
        return payloads

    def _fetch(self, item: pystac.Item, asset: pystac.Asset, now: datetime,
               client: httpx.Client) -> ArchivedPayload | None:
        href = asset.get_absolute_href() or asset.href
        issued_at = _item_time(item)
        local = _local_path(href)
        if local is not None:
            if not local.is_file():
                raise FileNotFoundError(f"asset {href} not found")
            return self.archive.store(local, feed_id=self.feed_id, source_uri=href,
                                      fetched_at=now, original_name=local.name,
                                      issued_at=issued_at, media_type=asset.media_type)
        if urlsplit(href).scheme not in ("http", "https"):
            raise ArchiveError(href, "unsupported asset href scheme (local paths and "
                               "http(s) only)")
        fetched = fetch_to_archive(
            client, href, archive=self.archive, feed_id=self.feed_id, now=now,
            headers=dict(self.config.headers), timeout_s=self.config.timeout_s,
            max_body_bytes=self.config.max_body_bytes, issued_at=issued_at, source_uri=href)
        if fetched.status != 200:
            raise FeedUnavailableError(href, f"HTTP {fetched.status} {fetched.reason}")
        return fetched.payload

    def _choose_asset(self, item: pystac.Item) -> pystac.Asset | None:
        if self.config.asset is not None:
            return item.assets.get(self.config.asset)
        for asset in item.assets.values():
            media = (asset.media_type or "").split(";")[0].strip().lower()
            if media in READABLE_MEDIA_TYPES:
                return asset
        return None

    def _walk(self, client: httpx.Client) -> list[pystac.Item]:
        """Items of the static catalog that pass the collection, bbox and datetime filters."""
        href = self.config.catalog
        assert href is not None
        io = _HttpxStacIO(client, dict(self.config.headers), self.config.timeout_s)
        root = pystac.read_file(href, stac_io=io)
        if not isinstance(root, pystac.Catalog):
            raise pystac.STACError(f"{href} is a {type(root).__name__}, not a catalog")
        return [item for item in root.get_items(recursive=True) if self._wanted(item)]

    def _wanted(self, item: pystac.Item) -> bool:
        cfg = self.config
        if cfg.collections is not None and item.collection_id not in cfg.collections:
            return False
        if cfg.bbox is not None:
            if item.bbox is None:
                return False
            half = len(item.bbox) // 2  # 2-D or 3-D bbox: mins first, then maxes
            minx, miny, maxx, maxy = (*item.bbox[:2], *item.bbox[half:half + 2])
            if maxx < cfg.bbox[0] or minx > cfg.bbox[2] or maxy < cfg.bbox[1] \
                    or miny > cfg.bbox[3]:
                return False
        if cfg.datetime_range is not None:
            start, end = cfg.datetime_range
            first, last = _item_span(item)
            if first is None and last is None:
                return False
            if start is not None and (last or first) < start:  # type: ignore[operator]
                return False
            if end is not None and (first or last) > end:  # type: ignore[operator]
                return False
        return True

    def _search(self, client: httpx.Client) -> Iterable[pystac.Item]:
        """Items found by a STAC API item search."""
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO

        cfg = self.config
        assert cfg.api is not None
        # No urllib3 retries: the feed's own poll schedule is the retry policy.
        io = StacApiIO(max_retries=None)
        try:
            api = Client.open(cfg.api, headers=dict(cfg.headers), stac_io=io,
                              timeout=cfg.timeout_s)
            # A search link without "method" means GET (STAC API spec); POST is preferred
            # where offered (long filters), and pystac-client does not fall back by itself.
            methods = {link.extra_fields.get("method") or "GET"
                       for link in api.get_links("search")}
            search = api.search(
                method="POST" if "POST" in methods or not methods else "GET",
                collections=list(cfg.collections) if cfg.collections else None,
                bbox=list(cfg.bbox) if cfg.bbox else None, datetime=cfg.datetime,
                max_items=cfg.limit, limit=cfg.limit)
            return list(search.items())
        finally:
            io.session.close()
