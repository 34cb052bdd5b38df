"""Load the feeds TOML: one ``[[feed]]`` entry per feed, checked field by field.

A feeds file has an optional top-level ``region`` (a region-pack manifest) and one
``[[feed]]`` table per feed: its ``id``, its ``source`` (``type = "directory" | "http" |
"stac"`` and that type's fields), the reader options (:class:`feeds.base.ReadOptions`),
the hazard ``kind``, ``nature``, ``breaks`` and ``poll_interval_s``. Relative paths are
resolved against the file's folder. ``docs/feeds.md`` has a full example.

Every error is a :class:`~feeds.errors.FeedConfigError` whose message names the file, the
feed and the field and says what was expected. Unknown keys are refused by name: a typo
must not silently drop a setting. See ``docs/feeds.md`` for every field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from feeds.base import REDUCTIONS, ReadOptions, Reduction, to_utc
from feeds.errors import FeedConfigError, FeedNotFoundError
from geo.types import BBox, HazardKind, Nature

DEFAULT_POLL_INTERVAL_S = 300.0
DEFAULT_SETTLE_S = 2.0
# Polite default: most public hazard feeds update at most every few minutes.
DEFAULT_MIN_INTERVAL_S = 60.0
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_MAX_BODY_BYTES = 2 * 1024**3
DEFAULT_STAC_LIMIT = 100

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_FEED_KEYS = frozenset({
    "id", "source", "kind", "nature", "units", "variable", "time", "member", "reduce",
    "threshold", "nodata", "crs", "breaks", "poll_interval_s", "region", "enabled",
})
_SOURCE_KEYS: Mapping[str, frozenset[str]] = MappingProxyType({
    "directory": frozenset({"type", "path", "pattern", "settle_s"}),
    "http": frozenset({"type", "url", "min_interval_s", "timeout_s", "headers",
                       "max_backoff_s", "max_body_bytes"}),
    "stac": frozenset({"type", "catalog", "api", "collections", "bbox", "datetime", "asset",
                       "limit", "timeout_s", "headers", "max_body_bytes"}),
})


@dataclass(frozen=True, slots=True)
class DirectorySourceConfig:
    """Files appearing in a local (or mounted) directory."""

    path: Path
    pattern: str = "*"
    settle_s: float = DEFAULT_SETTLE_S
    type: Literal["directory"] = "directory"


@dataclass(frozen=True, slots=True)
class HttpSourceConfig:
    """One URL polled with conditional GETs."""

    url: str
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    type: Literal["http"] = "http"


@dataclass(frozen=True, slots=True)
class StacSourceConfig:
    """Items of a static STAC catalog (``catalog``) or a STAC API (``api``).

    ``datetime`` is the RFC 3339 interval as written (passed on to the API);
    ``datetime_range`` is the parsed ``(start, end)``, either end ``None`` when open.
    """

    catalog: str | None = None
    api: str | None = None
    collections: tuple[str, ...] | None = None
    bbox: BBox | None = None
    datetime: str | None = None
    datetime_range: tuple[datetime | None, datetime | None] | None = None
    asset: str | None = None
    limit: int = DEFAULT_STAC_LIMIT
    timeout_s: float = DEFAULT_TIMEOUT_S
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    type: Literal["stac"] = "stac"


SourceConfig = DirectorySourceConfig | HttpSourceConfig | StacSourceConfig


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """One feed: its source, how to read its files, and what it carries."""

    id: str
    source: SourceConfig
    kind: HazardKind | None = None
    nature: Nature | None = None
    units: str | None = None
    variable: str | None = None
    time: str | datetime | int | None = None
    member: int | str | None = None
    reduce: Reduction | None = None
    threshold: float | None = None
    nodata: float | None = None
    crs: str | None = None
    breaks: tuple[float, ...] | None = None
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    region: Path | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class FeedsConfig:
    """Every feed of one feeds TOML file, in file order."""

    path: Path
    region: Path | None
    feeds: tuple[FeedConfig, ...]

    def get(self, feed_id: str) -> FeedConfig:
        """The feed called ``feed_id``.

        Raises:
            KeyError: no such feed (the message lists the ids).
        """
        for feed in self.feeds:
            if feed.id == feed_id:
                return feed
        raise KeyError(f"no feed {feed_id!r} in {self.path}; feeds: "
                       f"{[f.id for f in self.feeds]}")


def to_read_options(feed: FeedConfig) -> ReadOptions:
    """The reader options of ``feed``, for :func:`feeds.read.read_hazard`."""
    return ReadOptions(
        kind=feed.kind, units=feed.units, nature=feed.nature, variable=feed.variable,
        time=feed.time, member=feed.member, reduce=feed.reduce, threshold=feed.threshold,
        nodata=feed.nodata, crs=feed.crs,
    )


def load_feed_config(path: str | Path) -> FeedsConfig:
    """Load and check a feeds TOML file.

    Args:
        path: the TOML file; relative paths inside it are resolved against its folder.

    Returns:
        The feeds, in file order.

    Raises:
        FeedNotFoundError: the file does not exist.
        FeedConfigError: invalid TOML, or a missing, unknown or invalid field.
    """
    toml_path = Path(path)
    if not toml_path.is_file():
        raise FeedNotFoundError(toml_path, "feeds file not found")
    try:
        doc = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FeedConfigError(toml_path, f"is not valid TOML: {exc}") from exc
    top = _Checker(toml_path, None)
    unknown = sorted(set(doc) - {"region", "feed"})
    if unknown:
        raise top.error("", f"unknown top-level key(s) {unknown}; expected 'region' and "
                        "[[feed]] entries")
    region = top.existing_file(doc, "region")
    entries = doc.get("feed", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise top.error("feed", "expected [[feed]] tables")
    feeds: list[FeedConfig] = []
    for i, entry in enumerate(entries):
        feed = _load_feed(toml_path, entry, i, region)
        if any(f.id == feed.id for f in feeds):
            raise FeedConfigError(toml_path, f"feed {feed.id!r} id: duplicate feed id",
                                  feed_id=feed.id, field="id")
        feeds.append(feed)
    return FeedsConfig(path=toml_path, region=region, feeds=tuple(feeds))


def _load_feed(toml_path: Path, entry: dict[str, Any], index: int,
               region: Path | None) -> FeedConfig:
    feed_id = entry.get("id")
    if not isinstance(feed_id, str) or not _SLUG.match(feed_id):
        raise FeedConfigError(
            toml_path, f"feed #{index + 1} id: expected a slug (a-z, 0-9, '-', '_', up to "
            f"64 characters), got {feed_id!r}", field="id")
    c = _Checker(toml_path, feed_id)
    c.refuse_unknown(entry, _FEED_KEYS, "")
    kind, nature = c.choice(entry, "kind", HazardKind), c.choice(entry, "nature", Nature)
    reduce = entry.get("reduce")
    if reduce is not None and reduce not in REDUCTIONS:
        raise c.error("reduce", f"expected one of {list(REDUCTIONS)}, got {reduce!r}")
    time = entry.get("time")
    if time is not None and (isinstance(time, bool)
                             or not isinstance(time, str | int | datetime)):
        raise c.error("time", f"expected an ISO time, a TOML datetime or an index, got {time!r}")
    member = entry.get("member")
    if member is not None and (isinstance(member, bool) or not isinstance(member, int | str)):
        raise c.error("member", f"expected an index or a member label, got {member!r}")
    feed = FeedConfig(
        id=feed_id, source=_load_source(c, entry.get("source")), kind=kind, nature=nature,
        units=c.text(entry, "units"), variable=c.text(entry, "variable"), time=time,
        member=member, reduce=reduce, threshold=c.number(entry, "threshold"),
        nodata=c.number(entry, "nodata"), crs=c.text(entry, "crs"),
        breaks=c.breaks(entry), poll_interval_s=c.positive(entry, "poll_interval_s",
                                                           DEFAULT_POLL_INTERVAL_S),
        region=c.existing_file(entry, "region") or region,
        enabled=c.flag(entry, "enabled", True),
    )
    try:
        to_read_options(feed)
    except ValueError as exc:  # the reader options' own consistency checks
        raise c.error("reduce", str(exc)) from exc
    return feed


def _load_source(c: _Checker, table: object) -> SourceConfig:
    if not isinstance(table, dict):
        raise c.error("source", "expected a table with type = \"directory\", \"http\" or "
                      "\"stac\"")
    kind = table.get("type")
    if kind not in _SOURCE_KEYS:
        raise c.error("source.type", f"expected \"directory\", \"http\" or \"stac\", got {kind!r}")
    c.refuse_unknown(table, _SOURCE_KEYS[kind], "source.")
    if kind == "directory":
        return DirectorySourceConfig(
            path=c.resolve(c.text(table, "path", "source.", required=True)),
            pattern=c.text(table, "pattern", "source.") or "*",
            settle_s=c.number(table, "settle_s", prefix="source.", default=DEFAULT_SETTLE_S,
                              minimum=0.0),
        )
    if kind == "http":
        return HttpSourceConfig(
            url=c.url(table, "url", required=True),
            min_interval_s=c.number(table, "min_interval_s", prefix="source.",
                                    default=DEFAULT_MIN_INTERVAL_S, minimum=0.0),
            timeout_s=c.positive(table, "timeout_s", DEFAULT_TIMEOUT_S, "source."),
            headers=c.headers(table),
            max_backoff_s=c.positive(table, "max_backoff_s", DEFAULT_MAX_BACKOFF_S, "source."),
            max_body_bytes=int(c.positive(table, "max_body_bytes", DEFAULT_MAX_BODY_BYTES,
                                          "source.")),
        )
    return _load_stac(c, table)


def _load_stac(c: _Checker, table: dict[str, Any]) -> StacSourceConfig:
    catalog, api = table.get("catalog"), c.url(table, "api")
    if (catalog is None) == (api is None):
        raise c.error("source.catalog", "expected exactly one of catalog (a catalog.json "
                      "path or URL) and api (a STAC API URL)")
    if catalog is not None:
        text = c.text(table, "catalog", "source.")
        assert text is not None
        catalog = c.url(table, "catalog") if "://" in text else str(c.resolve(text))
    collections = table.get("collections")
    if collections is not None and (
        not isinstance(collections, list) or not collections
        or not all(isinstance(x, str) and x for x in collections)
    ):
        raise c.error("source.collections", f"expected a list of collection ids, got "
                      f"{collections!r}")
    bbox = table.get("bbox")
    if bbox is not None:
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(_is_number(v) for v in bbox)
                or not (bbox[0] < bbox[2] and bbox[1] < bbox[3])):
            raise c.error("source.bbox", f"expected [minx, miny, maxx, maxy] with min < max, "
                          f"got {bbox!r}")
        bbox = tuple(float(v) for v in bbox)
    interval = c.text(table, "datetime", "source.")
    limit = table.get("limit", DEFAULT_STAC_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise c.error("source.limit", f"expected a whole number >= 1, got {limit!r}")
    return StacSourceConfig(
        catalog=catalog, api=api,
        collections=tuple(collections) if collections else None, bbox=bbox,
        datetime=interval, datetime_range=c.interval(interval) if interval else None,
        asset=c.text(table, "asset", "source."), limit=limit,
        timeout_s=c.positive(table, "timeout_s", DEFAULT_TIMEOUT_S, "source."),
        headers=c.headers(table),
        max_body_bytes=int(c.positive(table, "max_body_bytes", DEFAULT_MAX_BODY_BYTES,
                                      "source.")),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Field readers that raise errors naming the file, the feed and the field."""

    def __init__(self, path: Path, feed_id: str | None) -> None:
        self.path, self.feed_id = path, feed_id

    def error(self, name: str, reason: str) -> FeedConfigError:
        where = f"feed {self.feed_id!r} " if self.feed_id else ""
        return FeedConfigError(self.path, f"{where}{name}: {reason}" if name else
                               f"{where}{reason}", feed_id=self.feed_id, field=name or None)

    def refuse_unknown(self, table: Mapping[str, Any], allowed: frozenset[str],
                       prefix: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(prefix + unknown[0], f"unknown key(s) {unknown}; expected some "
                             f"of {sorted(allowed)}")

    def resolve(self, text: str | None) -> Path:
        assert text is not None
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def text(self, table: Mapping[str, Any], key: str, prefix: str = "",
             required: bool = False) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                raise self.error(prefix + key, "missing; expected a text value")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(prefix + key, f"expected a non-empty text, got {value!r}")
        return value

    def number(self, table: Mapping[str, Any], key: str, *, prefix: str = "",
               default: float | None = None, minimum: float | None = None) -> Any:
        value = table.get(key, default)
        if value is None:
            return None
        if not _is_number(value):
            raise self.error(prefix + key, f"expected a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(prefix + key, f"expected a number >= {minimum}, got {value!r}")
        return float(value)

    def positive(self, table: Mapping[str, Any], key: str, default: float,
                 prefix: str = "") -> float:
        value = table.get(key, default)
        if not _is_number(value) or value <= 0:
            raise self.error(prefix + key, f"expected a number > 0, got {value!r}")
        return float(value)

    def flag(self, table: Mapping[str, Any], key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, table: Mapping[str, Any], key: str, enum: type[Any]) -> Any:
        value = table.get(key)
        if value is None:
            return None
        try:
            return enum(value)
        except ValueError:
            raise self.error(key, f"expected one of {[m.value for m in enum]}, "
                             f"got {value!r}") from None

    def breaks(self, table: Mapping[str, Any]) -> tuple[float, ...] | None:
        value = table.get("breaks")
        if value is None:
            return None
        if (not isinstance(value, list) or not value or not all(_is_number(v) for v in value)
                or any(b <= a for a, b in zip(value, value[1:], strict=False))):
            raise self.error("breaks", f"expected a non-empty list of strictly increasing "
                             f"numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def url(self, table: Mapping[str, Any], key: str, required: bool = False) -> str | None:
        value = self.text(table, key, "source.", required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.error("source." + key, f"expected an http(s) URL, got {value!r}")
        return value

    def headers(self, table: Mapping[str, Any]) -> Mapping[str, str]:
        value = table.get("headers", {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error("source.headers", f"expected a table of text values, got {value!r}")
        return MappingProxyType(dict(value))

    def existing_file(self, table: Mapping[str, Any], key: str) -> Path | None:
        text = self.text(table, key)
        if text is None:
            return None
        path = self.resolve(text)
        if not path.is_file():
            raise self.error(key, f"expected an existing region manifest, {path} is not a file")
        return path

    def interval(self, text: str) -> tuple[datetime | None, datetime | None]:
        ends = text.split("/")
        if len(ends) > 2:
            raise self.error("source.datetime", f"expected an RFC 3339 time or interval "
                             f"'start/end' ('..' for an open end), got {text!r}")
        parsed: list[datetime | None] = []
        for end in ends:
            if end in ("", ".."):
                parsed.append(None)
                continue
            value = to_utc(end)
            if value is None or "T" not in end.upper():
                raise self.error("source.datetime", f"expected RFC 3339 times such as "
                                 f"2024-05-01T00:00:00Z, got {end!r}")
            parsed.append(value)
        start, stop = parsed[0], parsed[-1]
        if len(ends) == 1 and start is None:
            raise self.error("source.datetime", f"expected a time, got {text!r}")
        if start is not None and stop is not None and stop < start:
            raise self.error("source.datetime", f"the interval ends before it starts: {text!r}")
        return start, stop
