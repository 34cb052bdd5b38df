"""The public feed file served with validators and compression, read once per change.

The CAP feed channel replaces the file atomically (a rename), so its inode, size and
modification time change with every write: they make the ETag without hashing megabytes
per request. The bytes and their gzip are kept until the file changes, so a poll that
finds nothing new costs a ``stat`` and a 304.
"""

from __future__ import annotations

import gzip
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

GZIP_LEVEL = 6


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One version of the feed file: its validators and its bytes, plain and gzipped."""

    etag: str
    last_modified: datetime
    data: bytes
    gzipped: bytes

    def last_modified_header(self) -> str:
        """``Last-Modified`` as HTTP writes dates."""
        return format_datetime(self.last_modified, usegmt=True)

    def not_modified(self, if_none_match: str | None, if_modified_since: str | None) -> bool:
        """Whether the client's copy is this version (``If-None-Match`` wins, RFC 9110)."""
        if if_none_match is not None:
            tags = {t.strip() for t in if_none_match.split(",")}
            return "*" in tags or self.etag in tags or self.etag.removeprefix("W/") in tags
        if if_modified_since is not None:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError, IndexError):
                return False
            if since.tzinfo is None:
                return False
            return self.last_modified.replace(microsecond=0) <= since
        return False


class FeedFile:
    """The current version of one feed file, re-read only when the file changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._version: FeedVersion | None = None

    def current(self) -> FeedVersion | None:
        """The file's current version; None when there is no file yet.

        Raises:
            OSError: the file exists but cannot be read.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp == self._stamp and self._version is not None:
                return self._version
        data = self.path.read_bytes()
        version = FeedVersion(
            etag=f'"{stamp[0]:x}-{stamp[1]:x}-{stamp[2]:x}"',
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            data=data, gzipped=gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
        with self._lock:
            self._stamp, self._version = stamp, version
        return version


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (and does not give it q=0)."""
    for part in (accept_encoding or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
