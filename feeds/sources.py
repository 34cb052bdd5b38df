"""Feed sources: a directory watched by polling, HTTP(S), STAC; and the factory for them.

Every source follows :class:`feeds.source_base.FeedSource`:
``poll(state, *, now) -> PollResult``. It archives what it fetches and returns the new
payloads with the state for the next poll; it never raises for a feed that is down, slow
or broken (``PollResult.error`` says what happened). The HTTP and STAC sources live in
:mod:`feeds.source_http` and :mod:`feeds.source_stac`.

The state of a directory feed (JSON)::

    {"files": {"sub/name.tif": {"size": 1234, "mtime_ns": 1714557600000000000,
                                "checksum": "sha256:..."}},   # null until archived
     ...screen keys (see feeds.source_base)}

It holds only the files present at the last poll, so it is bounded by the directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from feeds.archive import Archive, ArchivedPayload
from feeds.errors import ArchiveError
from feeds.feed_config import DirectorySourceConfig, FeedConfig
from feeds.source_base import FeedSource, PollResult, after, begin_state, finish, screen_payload
from feeds.source_http import HttpSource
from feeds.source_stac import StacSource

# Names that writers use while a file is incomplete (browsers, rsync, curl, editors).
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".filepart", ".download")
# Keep one poll short when a backlog lands at once; the rest come on the next polls.
MAX_NEW_FILES_PER_POLL = 50
# A file waiting to settle is looked at again this soon at the earliest.
MIN_RECHECK_S = 1.0


def is_partial_name(name: str) -> bool:
    """Whether a file name marks a hidden or still-being-written file."""
    return name.startswith(".") or name.endswith("~") or name.lower().endswith(PARTIAL_SUFFIXES)


class DirectorySource:
    """Files appearing in a directory; only complete ones are archived.

    A file is complete once its size and mtime are unchanged since the previous poll and
    its mtime is at least ``settle_s`` old, so files written in place are picked up only
    when they stop growing (files renamed into place are simply complete). Empty files
    are waited on: writers often create a file before filling it.

    Args:
        feed: the feed (its source is a :class:`DirectorySourceConfig`).
        archive: where complete files are copied.
        client: unused; accepted so every source is built the same way.
    """

    def __init__(self, feed: FeedConfig, archive: Archive,
                 client: httpx.Client | None = None) -> None:
        if not isinstance(feed.source, DirectorySourceConfig):
            raise TypeError(f"feed {feed.id!r} is not a directory feed")
        self.feed, self.feed_id, self.archive = feed, feed.id, archive
        self.config: DirectorySourceConfig = feed.source

    def poll(self, state: dict[str, Any], *, now: datetime) -> PollResult:
        """List the directory, archive files that became complete since the last poll.

        Args:
            state: the state returned by the previous poll (``{}`` the first time).
            now: the current time (aware); compared with file mtimes for ``settle_s``.

        Returns:
            The poll's result; a missing directory gives ``error`` and keeps the state.
        """
        st = begin_state(state)
        next_at = after(now, self.feed.poll_interval_s)
        folder = self.config.path
        try:
            if not folder.is_dir():
                raise FileNotFoundError(f"directory {folder} does not exist")
            entries = self._list(folder)
        except OSError as exc:
            # The files seen before are kept: a remount that brings them back must not
            # make them new again.
            return finish(st, now=now, payloads=[], next_poll_at=next_at, notes=[],
                          error=f"cannot list {folder}: {exc}; looking again at the next poll")
        before: dict[str, dict[str, Any]] = st.get("files", {})
        files: dict[str, dict[str, Any]] = {}
        payloads: list[ArchivedPayload] = []
        notes: list[str] = []
        waiting = False
        for rel, path, size, mtime_ns in entries:
            record = {"size": size, "mtime_ns": mtime_ns, "checksum": None}
            prev = before.get(rel)
            unchanged = prev is not None and (prev["size"], prev["mtime_ns"]) == (size, mtime_ns)
            if unchanged and prev.get("checksum"):  # type: ignore[union-attr]
                files[rel] = prev  # type: ignore[assignment]
                continue
            settled = now.timestamp() - mtime_ns / 1e9 >= self.config.settle_s
            if not (unchanged and settled and size > 0) or len(payloads) >= MAX_NEW_FILES_PER_POLL:
                files[rel], waiting = record, True
                continue
            files[rel] = self._archive_file(rel, path, record, now, st, notes, payloads)
            waiting = waiting or files[rel]["checksum"] is None
        st["files"] = files
        if waiting:
            next_at = min(next_at, after(now, max(self.config.settle_s, MIN_RECHECK_S)))
        return finish(st, now=now, payloads=payloads, next_poll_at=next_at, notes=notes,
                      error=None)

    def _list(self, folder: Path) -> list[tuple[str, Path, int, int]]:
        """``(relative name, path, size, mtime_ns)`` of candidate files, oldest first."""
        found = []
        for path in folder.glob(self.config.pattern):
            rel = path.relative_to(folder)
            if any(is_partial_name(part) for part in rel.parts):
                continue
            try:
                if not path.is_file():
                    continue
                stat = path.stat()
            except FileNotFoundError:  # gone between listing and stat
                continue
            found.append((rel.as_posix(), path, stat.st_size, stat.st_mtime_ns))
        return sorted(found, key=lambda e: (e[3], e[0]))

    def _archive_file(self, rel: str, path: Path, record: dict[str, Any], now: datetime,
                      st: dict[str, Any], notes: list[str],
                      payloads: list[ArchivedPayload]) -> dict[str, Any]:
        mtime = datetime.fromtimestamp(record["mtime_ns"] / 1e9, tz=UTC)
        try:
            payload = self.archive.store(
                path, feed_id=self.feed_id, source_uri=str(path), fetched_at=now,
                original_name=path.name, last_modified=mtime.isoformat())
            after_stat = path.stat()
        except (ArchiveError, FileNotFoundError) as exc:
            notes.append(f"{rel}: vanished or unreadable while being archived ({exc})")
            return record
        if (after_stat.st_size, after_stat.st_mtime_ns) != (record["size"], record["mtime_ns"]):
            # Written to while being copied: what was archived may be torn, so it is not
            # passed on; the file is looked at again once it settles.
            notes.append(f"{rel}: changed while being archived; waiting for it to settle")
            return {"size": after_stat.st_size, "mtime_ns": after_stat.st_mtime_ns,
                    "checksum": None}
        if screen_payload(payload, st, notes):
            payloads.append(payload)
        return {**record, "checksum": payload.checksum}


SourceFactory = Callable[[FeedConfig, Archive, httpx.Client | None], FeedSource]

SOURCE_TYPES: Mapping[str, SourceFactory] = MappingProxyType({
    "directory": DirectorySource,
    "http": HttpSource,
    "stac": StacSource,
})
"""Source type (``source.type`` in the feeds TOML) -> source class; immutable."""


def make_source(feed_config: FeedConfig, archive: Archive, *,
                client: httpx.Client | None = None) -> FeedSource:
    """Build the source of a feed.

    Args:
        feed_config: the feed, from :func:`feeds.feed_config.load_feed_config`.
        archive: where the source archives what it fetches.
        client: an httpx client to share between HTTP and STAC polls (the caller closes it).

    Returns:
        The source; call ``poll(state, now=...)`` on it.
    """
    return SOURCE_TYPES[feed_config.source.type](feed_config, archive, client)


__all__ = ["SOURCE_TYPES", "DirectorySource", "FeedSource", "HttpSource", "PollResult",
           "StacSource", "is_partial_name", "make_source"]
