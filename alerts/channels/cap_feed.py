"""The CAP feed channel: Atom feeds of CAP 1.2 messages written as files, one per feed id.

A subscription on this channel names a feed (``public``, or an agency's feed name). Sending
stores each carried alert's CAP bytes once, immutably, as ``{directory}/cap/{identifier}.xml``
and rewrites ``{directory}/{feed_id}.atom`` (see :mod:`alerts.channels.atom`) so that it holds
the current message of each event: an Update replaces its Alert, a Cancel replaces both and
stays until it expires, expired entries are dropped, newest first, at most ``max_entries``.

The feed file is the only state: every send re-reads it (and the CAP files it links to)
under an exclusive ``flock`` on ``{feed_id}.lock``, because several worker processes write
the same feed; files are replaced atomically (temporary file in the same folder, fsync,
``os.replace``), so a reader, such as the HTTP API serving these files byte for byte,
always sees a whole feed.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alerts.channels.atom import (
    FeedEntry,
    FeedFormatError,
    is_safe_slug,
    parse_atom_feed,
    render_atom_feed,
)
from alerts.channels.base import AlertContent, OutgoingMessage, Receipt
from alerts.errors import CapError, PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind, MsgType

__all__ = ["PUBLIC_FEED", "CapFeedChannel", "CapFeedConfig", "merge_entries",
           "read_feed_entries"]

PUBLIC_FEED = "public"
"""The feed id of the public feed: it only ever carries messages of CAP scope Public."""
_FILE_MODE = 0o644  # mkstemp makes 0600 files; the server reading them may be another user


@dataclass(frozen=True, slots=True)
class CapFeedConfig:
    """Where and how the feeds are written.

    Attributes:
        directory: the folder holding the feeds, ``cap/`` and the lock files.
        base_url: public URL prefix where ``directory`` is served, for links and the feed
            ids; None writes links relative to the feed file.
        title_prefix: the feed title is ``"{title_prefix}: {feed_id}"``.
        author_name: the feed author.
        max_entries: entries kept per feed, newest first.
    """

    directory: Path
    base_url: str | None = None
    title_prefix: str = "Tocsin alerts"
    author_name: str = "Tocsin"
    max_entries: int = 500

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {self.max_entries}")


def _utc_now() -> datetime:
    # A module-level function rather than a lambda: the channel stays picklable.
    return datetime.now(UTC)


class CapFeedChannel:
    """Writes CAP messages into Atom feed files; safe across processes sharing a folder.

    Args:
        config: the folder and the feed settings.
        clock: the current time (timezone-aware), for dropping expired entries.
    """

    kind = ChannelKind.CAP_FEED

    def __init__(self, config: CapFeedConfig, *,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.config = config
        self._clock = clock

    def send(self, message: OutgoingMessage) -> Receipt:
        """Store the carried CAP messages and bring the feed named by the address up to date.

        Sending the same message again leaves every file byte-identical.

        Returns:
            A receipt whose detail is the feed file (relative to the folder) and its number
            of entries.

        Raises:
            PermanentDispatchError: unsafe feed id or CAP identifier, invalid CAP, a
                non-public message for the public feed, or a CAP file already stored with
                other bytes.
            RetryableDispatchError: a file could not be written or read (disk full,
                permission, a feed that cannot be read back); the message names the path.
        """
        feed_id = message.channel.address
        if message.channel.kind != ChannelKind.CAP_FEED:
            raise PermanentDispatchError(f"a {message.channel.kind} address was handed to the "
                                         "CAP feed channel")
        if not is_safe_slug(feed_id):
            raise PermanentDispatchError(
                f"feed id {feed_id!r} is not a safe name (letters, digits, '-', '_', '.', no "
                "leading dot, at most 200 characters)")
        incoming = [self._entry(alert, feed_id) for alert in message.alerts]
        now = self._clock()
        if now.utcoffset() is None:
            raise ValueError("the CAP feed channel's clock must return aware datetimes")
        directory = self.config.directory
        path = directory
        try:
            (directory / "cap").mkdir(parents=True, exist_ok=True)
            for entry in incoming:
                path = directory / "cap" / f"{entry.identifier}.xml"
                _store_immutable(path, entry.cap_xml)
            path = directory / f"{feed_id}.lock"
            with _exclusive(path):
                path = directory / f"{feed_id}.atom"
                count = self._update_feed(path, feed_id, incoming, now)
        except (PermanentDispatchError, RetryableDispatchError):
            raise
        except OSError as exc:
            raise RetryableDispatchError(f"CAP feed {feed_id}: cannot write {path}: "
                                         f"{exc.strerror or exc}") from exc
        return Receipt(channel=self.kind, address=feed_id,
                       detail=f"{feed_id}.atom ({count} entries)")

    def _entry(self, alert: AlertContent, feed_id: str) -> FeedEntry:
        if not is_safe_slug(alert.identifier):
            raise PermanentDispatchError(f"CAP identifier {alert.identifier!r} is not a safe "
                                         "file name")
        try:
            entry = FeedEntry.from_alert(alert)
        except (CapError, FeedFormatError) as exc:
            raise PermanentDispatchError(f"CAP {alert.identifier} cannot go into a feed: "
                                         f"{exc}") from exc
        # The public feed is served to anyone: a Restricted or Private message (its
        # addresses, its restriction) never goes there, whatever a subscription says.
        if feed_id == PUBLIC_FEED and entry.scope != "Public":
            raise PermanentDispatchError(f"CAP {alert.identifier} has scope {entry.scope}; "
                                         "the public feed carries Public messages only")
        return entry

    def _update_feed(self, path: Path, feed_id: str, incoming: Sequence[FeedEntry],
                     now: datetime) -> int:
        old_bytes = path.read_bytes() if path.exists() else None
        current = None
        if old_bytes is not None:
            try:
                current = parse_atom_feed(old_bytes, _cap_loader(path.parent))
            except FeedFormatError as exc:
                # Retryable, not permanent: dropping the alert would hide it; an operator
                # repairs or removes the feed (the CAP files stay) and the retry goes through.
                raise RetryableDispatchError(f"CAP feed {path} cannot be read back: {exc}; "
                                             "repair or remove it") from exc
        held = current.entries if current else ()
        entries = merge_entries(held, incoming, now=now, max_entries=self.config.max_entries)
        ids = [e.identifier for e in entries]
        if current is not None and ids == [e.identifier for e in held]:
            updated = current.updated  # nothing changed: same bytes, same updated
        else:
            # Never backwards (workers' clocks differ), never before its newest entry.
            updated = max([now, *(e.sent for e in entries),
                           *([current.updated] if current else [])])
        try:
            data = render_atom_feed(feed_id, f"{self.config.title_prefix}: {feed_id}",
                                    entries, updated=updated, base_url=self.config.base_url,
                                    author_name=self.config.author_name)
        except FeedFormatError as exc:  # the entries read back rendered before: a new one
            raise PermanentDispatchError(f"CAP feed {feed_id}: {exc}") from exc
        if data != old_bytes:
            _write_atomic(path, data)
        return len(entries)


def _cap_rank(entry: FeedEntry) -> tuple[bool, datetime, int, str]:
    # A Cancel ends its event: nothing but a later Cancel replaces it. Otherwise the later
    # message wins; Update over Alert at the same instant; the identifier breaks ties.
    order = {MsgType.ALERT: 0, MsgType.CANCEL: 2}.get(entry.msg_type, 1)
    return entry.msg_type is MsgType.CANCEL, entry.sent, order, entry.identifier


def merge_entries(current: Iterable[FeedEntry], incoming: Iterable[FeedEntry], *,
                  now: datetime, max_entries: int) -> list[FeedEntry]:
    """The entries a feed keeps: the latest message of each event, unexpired, newest first.

    Args:
        current: the feed's entries.
        incoming: the messages being added (a message already held is kept as held).
        now: entries whose ``expires`` is before it are dropped.
        max_entries: at most this many, the newest.

    Returns:
        The entries in feed order: by ``sent``, newest first, then by identifier.
    """
    by_event: dict[str, FeedEntry] = {}
    for entry in (*current, *incoming):
        held = by_event.get(entry.event_id)
        if held is None or _cap_rank(entry) > _cap_rank(held):
            by_event[entry.event_id] = entry
    live = [entry for entry in by_event.values() if entry.expires >= now]
    live.sort(key=lambda entry: (entry.sent, entry.identifier), reverse=True)
    return live[:max_entries]


def read_feed_entries(path: Path) -> list[FeedEntry]:
    """The entries of a feed file, each with its stored CAP bytes from ``cap/`` beside it.

    Raises:
        FeedFormatError: not a feed of this channel, or an embedded CAP differs from its
            stored file.
        OSError: a file cannot be read.
    """
    feed = parse_atom_feed(Path(path).read_bytes(), _cap_loader(Path(path).parent))
    return list(feed.entries)


def _cap_loader(directory: Path) -> Callable[[str], bytes]:
    def load(identifier: str) -> bytes:
        if not is_safe_slug(identifier):
            raise FeedFormatError(f"CAP identifier {identifier!r} is not a safe file name")
        try:
            return (directory / "cap" / f"{identifier}.xml").read_bytes()
        except FileNotFoundError as exc:
            raise FeedFormatError(f"the CAP file of entry {identifier} is missing") from exc

    return load


# --- files ------------------------------------------------------------------------------


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _temp_copy(folder: Path, name: str, data: bytes) -> str:
    """Write ``data`` to a new fsynced temporary file in ``folder``; returns its path."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    temp = _temp_copy(path.parent, path.name, data)
    try:
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _store_immutable(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` once; the same bytes again are fine, others are refused.

    ``os.link`` creates the name only if it is free, atomically: of two processes storing
    the same identifier at once, one creates the file and the other compares with it.
    """
    if _check_existing(path, data):
        return
    temp = _temp_copy(path.parent, path.name, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        _check_existing(path, data)
    finally:
        with suppress(OSError):
            os.unlink(temp)
    _fsync_dir(path.parent)


def _check_existing(path: Path, data: bytes) -> bool:
    try:
        stored = path.read_bytes()
    except FileNotFoundError:
        return False
    if stored != data:
        raise PermanentDispatchError(f"{path} already holds other bytes for this CAP identifier: "
                                     "a stored CAP message never changes")
    return True
