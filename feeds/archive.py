"""The payload archive: every ingested byte, content-addressed, with its provenance.

Layout under the archive root::

    objects/sha256/<2 hex>/<64 hex><suffix>      the bytes, written once, never overwritten
    provenance/<feed_id>.jsonl                   one JSON line per payload seen (append-only)
    quarantine/<feed_id>/<64 hex>-<name>         payloads that failed to read (hard links)
    quarantine/<feed_id>/<64 hex>-<name>.reason.json
    tmp/                                         partial writes, renamed into objects/

Objects are written to ``tmp/`` and fsync'ed, then linked into place, so a reader never
sees half an object and two workers storing the same bytes cannot clobber each other.
Provenance lines are appended under an exclusive ``flock`` in one ``write`` so several
worker processes can share a feed's log. Replay reads the log back with
:meth:`Archive.iter_provenance` and finds exactly the bytes that were seen.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from feeds.base import to_utc
from feeds.errors import ArchiveError

_BLOCK_BYTES = 1 << 20
_FEED_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_MAX_NAME_CHARS = 120


class ProvenanceLineWarning(UserWarning):
    """A provenance line cannot be parsed (a torn write after a crash) and is skipped."""


@dataclass(frozen=True, slots=True)
class ArchivedPayload:
    """One payload as archived: where its bytes are and where they came from.

    Attributes:
        checksum: ``"sha256:<hex>"`` of the bytes (the same as :func:`feeds.base.file_checksum`).
        path: the archived object (read-only by convention; shared by every duplicate).
        size_bytes: its size.
        feed_id: the feed that fetched it.
        source_uri: where it was fetched from (file path, URL, STAC asset href).
        fetched_at: when it was fetched (UTC).
        issued_at: when the source says it was issued (HTTP Last-Modified, STAC datetime).
        etag: the HTTP ETag, if any.
        last_modified: the HTTP Last-Modified header (or a file's mtime, ISO), if any.
        media_type: the declared media type, if any.
        original_name: the file name at the source (unsanitised; see :func:`safe_name`).
        duplicate: the same bytes were archived before, by this feed or another.
    """

    checksum: str
    path: Path
    size_bytes: int
    feed_id: str
    source_uri: str
    fetched_at: datetime
    issued_at: datetime | None
    etag: str | None
    last_modified: str | None
    media_type: str | None
    original_name: str
    duplicate: bool

    @property
    def hex(self) -> str:
        """The hex digest without the ``sha256:`` prefix."""
        return self.checksum.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class QuarantinedPayload:
    """A payload set aside because it could not be read, with the reason."""

    path: Path
    checksum: str
    feed_id: str
    source_uri: str
    original_name: str
    reason: str
    at: datetime


def safe_name(name: str) -> str:
    """A file name safe to create inside a folder: no directories, no dot-prefix, short.

    ``"../../etc/passwd"`` gives ``"passwd"``; unusual characters become ``_``.
    """
    base = re.split(r"[/\\]", name)[-1]
    cleaned = _UNSAFE.sub("_", base).lstrip(".")[:_MAX_NAME_CHARS]
    return cleaned or "payload"


def _suffix(name: str) -> str:
    """The last one or two safe suffixes of ``name`` (``.tif``, ``.xml.gz``), else ``""``."""
    parts = [s for s in Path(safe_name(name)).suffixes if _SUFFIX.match(s)]
    return "".join(parts[-2:]).lower()


def _check_feed_id(feed_id: str) -> str:
    if not _FEED_ID.match(feed_id):
        raise ArchiveError(feed_id, "feed id must be a slug (a-z, 0-9, '-', '_')")
    return feed_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class Archive:
    """A content-addressed, append-only store of every payload ingested.

    Args:
        root: the archive folder (created when missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("objects/sha256", "provenance", "quarantine", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def store(self, data: bytes | Path, *, feed_id: str, source_uri: str, fetched_at: datetime,
              original_name: str, issued_at: datetime | None = None, etag: str | None = None,
              last_modified: str | None = None,
              media_type: str | None = None) -> ArchivedPayload:
        """Archive ``data`` (bytes, or a file copied block by block) and record its provenance.

        Args:
            data: the payload's bytes or a file holding them.
            feed_id: the feed (a slug); names the provenance log.
            source_uri: where the payload came from.
            fetched_at: when it was fetched (aware; stored as given).
            original_name: its name at the source (gives the object's suffix).
            issued_at: when the source says it was issued.
            etag: the HTTP ETag.
            last_modified: the HTTP Last-Modified header, or a file's mtime.
            media_type: the declared media type.

        Returns:
            The archived payload; ``duplicate`` is true when the bytes were there already.

        Raises:
            ArchiveError: the bytes cannot be read or written.
        """
        if isinstance(data, bytes | bytearray | memoryview):
            chunks: Iterable[bytes] = [bytes(data)]
            return self.store_chunks(chunks, feed_id=feed_id, source_uri=source_uri,
                                     fetched_at=fetched_at, original_name=original_name,
                                     issued_at=issued_at, etag=etag,
                                     last_modified=last_modified, media_type=media_type)
        try:
            fh = open(data, "rb")  # closed by the with below, after streaming
        except OSError as exc:
            raise ArchiveError(data, f"cannot read the payload: {exc.strerror or exc}") from exc
        with fh:
            return self.store_chunks(
                iter(lambda: fh.read(_BLOCK_BYTES), b""), feed_id=feed_id,
                source_uri=source_uri, fetched_at=fetched_at, original_name=original_name,
                issued_at=issued_at, etag=etag, last_modified=last_modified,
                media_type=media_type)

    def store_chunks(self, chunks: Iterable[bytes], *, feed_id: str, source_uri: str,
                     fetched_at: datetime, original_name: str,
                     issued_at: datetime | None = None, etag: str | None = None,
                     last_modified: str | None = None,
                     media_type: str | None = None) -> ArchivedPayload:
        """Like :meth:`store`, from an iterable of byte blocks (an HTTP body being streamed).

        An exception raised by ``chunks`` (a read timeout, a size cap) propagates and leaves
        nothing behind: the partial temp file is removed and no provenance is written.
        """
        _check_feed_id(feed_id)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", prefix="obj-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for block in chunks:
                    digest.update(block)
                    out.write(block)
                    size += len(block)
                out.flush()
                os.fsync(out.fileno())
            hex_digest = digest.hexdigest()
            path, duplicate = self._place(tmp, hex_digest, _suffix(original_name))
        except OSError as exc:
            if isinstance(exc, ArchiveError):
                raise
            raise ArchiveError(source_uri, f"cannot archive: {exc.strerror or exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        payload = ArchivedPayload(
            checksum="sha256:" + hex_digest, path=path, size_bytes=size, feed_id=feed_id,
            source_uri=source_uri, fetched_at=fetched_at, issued_at=issued_at, etag=etag,
            last_modified=last_modified, media_type=media_type, original_name=original_name,
            duplicate=duplicate,
        )
        self._append_provenance(payload)
        return payload

    def _place(self, tmp: Path, hex_digest: str, suffix: str) -> tuple[Path, bool]:
        """Link ``tmp`` into objects/ unless an object with that digest exists already."""
        shard = self.root / "objects" / "sha256" / hex_digest[:2]
        shard.mkdir(parents=True, exist_ok=True)
        # The same bytes under another suffix are still the same object: content decides.
        existing = sorted(shard.glob(hex_digest + "*"))
        if existing:
            return existing[0], True
        target = shard / (hex_digest + suffix)
        try:
            # link() fails if the target exists, so a racing worker's object is never replaced.
            os.link(tmp, target)
        except FileExistsError:
            return target, True
        except OSError:
            if target.exists():
                return target, True
            os.replace(tmp, target)  # filesystems without hard links
        _fsync_dir(shard)
        return target, False

    def _append_provenance(self, payload: ArchivedPayload) -> None:
        record = asdict(payload)
        record.update(path=str(payload.path.relative_to(self.root)),
                      fetched_at=_iso(payload.fetched_at), issued_at=_iso(payload.issued_at))
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        log = self.root / "provenance" / f"{payload.feed_id}.jsonl"
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
        except OSError as exc:
            raise ArchiveError(log, f"cannot append provenance: {exc.strerror or exc}") from exc

    def iter_provenance(self, feed_id: str, since: datetime | None = None,
                        until: datetime | None = None) -> Iterator[ArchivedPayload]:
        """The payloads a feed saw, by fetch time, for replay.

        Args:
            feed_id: the feed.
            since: only those fetched at or after this time.
            until: only those fetched before this time.

        Yields:
            Archived payloads in fetch-time order (ties in log order). Re-sent bytes appear
            once per time they were seen, with ``duplicate`` set.
        """
        log = self.root / "provenance" / f"{_check_feed_id(feed_id)}.jsonl"
        if not log.exists():
            return
        records: list[ArchivedPayload] = []
        with open(log, encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            lines = fh.readlines()
        for number, line in enumerate(lines, start=1):
            try:
                payload = self._from_record(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                warnings.warn(ProvenanceLineWarning(f"{log}:{number}: skipped: {exc}"),
                              stacklevel=2)
                continue
            if since is not None and payload.fetched_at < since:
                continue
            if until is not None and payload.fetched_at >= until:
                continue
            records.append(payload)
        yield from sorted(records, key=lambda p: p.fetched_at)

    def _from_record(self, record: dict[str, object]) -> ArchivedPayload:
        fetched_at = to_utc(record["fetched_at"])
        if fetched_at is None:
            raise ValueError(f"bad fetched_at {record['fetched_at']!r}")
        return ArchivedPayload(
            checksum=str(record["checksum"]), path=self.root / str(record["path"]),
            size_bytes=int(record["size_bytes"]),  # type: ignore[call-overload]
            feed_id=str(record["feed_id"]), source_uri=str(record["source_uri"]),
            fetched_at=fetched_at, issued_at=to_utc(record.get("issued_at")),
            etag=record.get("etag"),  # type: ignore[arg-type]
            last_modified=record.get("last_modified"),  # type: ignore[arg-type]
            media_type=record.get("media_type"),  # type: ignore[arg-type]
            original_name=str(record["original_name"]), duplicate=bool(record["duplicate"]),
        )

    def quarantine(self, payload: ArchivedPayload, reason: str, *, at: datetime) -> Path:
        """Set a payload aside with the reason it could not be read; idempotent.

        The archived object stays where it is (replay still finds it); the quarantine holds
        a hard link (or a copy across filesystems) and a ``.reason.json`` beside it. A second
        call for the same payload keeps the first reason and time.

        Args:
            payload: the archived payload.
            reason: why it was set aside (the reader's error message).
            at: when.

        Returns:
            The quarantined file, inside ``quarantine/<feed_id>/``.

        Raises:
            ArchiveError: the quarantine cannot be written.
        """
        folder = self.root / "quarantine" / _check_feed_id(payload.feed_id)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{payload.hex}-{safe_name(payload.original_name)}"
        note = target.with_name(target.name + ".reason.json")
        try:
            if not target.exists():
                self._link_or_copy(payload.path, target)
            if not note.exists():
                body = {"reason": reason, "feed_id": payload.feed_id,
                        "source_uri": payload.source_uri, "at": at.isoformat(),
                        "checksum": payload.checksum, "original_name": payload.original_name,
                        "fetched_at": _iso(payload.fetched_at),
                        "object": str(payload.path.relative_to(self.root))}
                self._write_atomic(note, json.dumps(body, indent=2, sort_keys=True).encode())
        except OSError as exc:
            raise ArchiveError(target, f"cannot quarantine: {exc.strerror or exc}") from exc
        return target

    def _link_or_copy(self, source: Path, target: Path) -> None:
        try:
            os.link(source, target)
        except FileExistsError:
            pass
        except OSError:  # another filesystem, or links not allowed: copy atomically
            fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="q-")
            os.close(fd)
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)

    def _write_atomic(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def list_quarantined(self, feed_id: str | None = None) -> list[QuarantinedPayload]:
        """The quarantined payloads of one feed (or all), oldest first.

        Raises:
            ArchiveError: a reason file cannot be parsed.
        """
        base = self.root / "quarantine"
        folders = [base / _check_feed_id(feed_id)] if feed_id else sorted(base.iterdir())
        found: list[QuarantinedPayload] = []
        for folder in folders:
            for note in sorted(folder.glob("*.reason.json")) if folder.is_dir() else []:
                try:
                    body = json.loads(note.read_text(encoding="utf-8"))
                    at = to_utc(body["at"])
                    found.append(QuarantinedPayload(
                        path=note.with_name(note.name.removesuffix(".reason.json")),
                        checksum=body["checksum"], feed_id=body["feed_id"],
                        source_uri=body["source_uri"], original_name=body["original_name"],
                        reason=body["reason"], at=at,  # type: ignore[arg-type]
                    ))
                except (OSError, ValueError, KeyError) as exc:
                    raise ArchiveError(note, f"unreadable quarantine note: {exc}") from exc
        return sorted(found, key=lambda q: (q.at, q.path.name))
