"""Where a replay's items come from: the ingest archive, a directory of feed files, a STAC catalog.

Each source is listed into :class:`SourceItem` values (feed, local file, checksum, the time
the source gives), in a deterministic order, and recorded once in the run store's
``feed_items`` table: that row is the item's progress (fetched, assessing, then assessed,
skipped or quarantined with the reason). Which feed an item belongs to:

- archive: the feed whose provenance log saw it (``provenance/<feed>.jsonl``);
- directory: files under ``SOURCE/<feed id>/`` (the feed's ``pattern`` for directory feeds,
  else every file); without such a folder, files directly in ``SOURCE`` that match a
  directory feed's ``pattern``;
- STAC catalog: for a STAC feed, the items of its ``collections`` (all when it has none) and
  its ``asset``; for any other feed, the items of the collection named after the feed.

Nothing is fetched over the network: a STAC asset that is not a local file is listed as a
note (replay the archive the live STAC feed filled instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy.orm import Session, sessionmaker

from feeds.archive import Archive
from feeds.base import file_checksum, to_utc
from feeds.feed_config import DirectorySourceConfig, FeedConfig, StacSourceConfig
from feeds.source_stac import READABLE_MEDIA_TYPES
from feeds.sources import is_partial_name
from store import feeds_repo
from store.db import session_scope
from workers.replay_manifest import ReplayInputError

SOURCE_KINDS = ("archive", "directory", "stac")


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One payload a source holds for a feed.

    Attributes:
        feed_id: the feed it belongs to.
        path: the local file.
        checksum: ``sha256:<hex>`` of its bytes.
        original_name: the file name at the source.
        source_uri: where it came from (archived URI, file path, STAC asset href).
        source_time: the issue time the source gives (provenance, STAC datetime), if any.
        fetched_at: when it was fetched (archive), else the file's mtime or the STAC time.
    """

    feed_id: str
    path: Path
    checksum: str
    original_name: str
    source_uri: str
    source_time: datetime | None
    fetched_at: datetime


def detect_source(path: Path) -> str:
    """``archive``, ``directory`` or ``stac`` for the ``--archive`` argument.

    Raises:
        ReplayInputError: it does not exist, or is a file that is not a STAC catalog.
    """
    if not path.exists():
        raise ReplayInputError(f"--archive {path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise ReplayInputError(f"--archive {path}: a file must be a STAC catalog "
                                   "(catalog.json); give a folder for an archive or feed files")
        return "stac"
    if (path / "provenance").is_dir() and (path / "objects").is_dir():
        return "archive"
    if (path / "catalog.json").is_file():
        return "stac"
    return "directory"


def discover(kind: str, path: Path, feeds: Sequence[FeedConfig]) -> tuple[list[SourceItem],
                                                                          list[str]]:
    """Every item of ``feeds`` the source holds, and notes on what was left out.

    Raises:
        ReplayInputError: the source cannot be read (a broken catalog).
    """
    if kind == "archive":
        return _from_archive(Archive(path), feeds), []
    if kind == "directory":
        return _from_directory(path, feeds), []
    return _from_stac(path if path.is_file() else path / "catalog.json", feeds)


def _from_archive(archive: Archive, feeds: Sequence[FeedConfig]) -> list[SourceItem]:
    items = []
    for feed in feeds:
        seen: set[str] = set()
        for payload in archive.iter_provenance(feed.id):
            if payload.checksum in seen:  # the same bytes again: live ingested them once
                continue
            seen.add(payload.checksum)
            items.append(SourceItem(feed.id, payload.path, payload.checksum,
                                    payload.original_name, payload.source_uri,
                                    payload.issued_at, payload.fetched_at))
    return items


def _from_directory(root: Path, feeds: Sequence[FeedConfig]) -> list[SourceItem]:
    items = []
    for feed in feeds:
        own = root / feed.id
        pattern = feed.source.pattern if isinstance(feed.source, DirectorySourceConfig) \
            else None
        if own.is_dir():
            folder, pattern = own, pattern or "**/*"
        elif pattern is not None:
            folder = root
        else:
            continue
        for file in sorted(folder.glob(pattern)):
            rel = file.relative_to(folder)
            if not file.is_file() or any(is_partial_name(part) for part in rel.parts):
                continue
            mtime = datetime.fromtimestamp(file.stat().st_mtime, UTC)
            items.append(SourceItem(feed.id, file.resolve(), file_checksum(file), file.name,
                                    str(file.resolve()), None, mtime))
    return items


def _from_stac(catalog: Path, feeds: Sequence[FeedConfig]) -> tuple[list[SourceItem],
                                                                     list[str]]:
    import pystac

    try:
        root = pystac.read_file(str(catalog))
    except (OSError, ValueError, pystac.STACError) as exc:
        raise ReplayInputError(f"--archive {catalog}: cannot read the STAC catalog: "
                               f"{exc}") from exc
    if not isinstance(root, pystac.Catalog):
        raise ReplayInputError(f"--archive {catalog}: a {type(root).__name__}, not a catalog")
    stac_items = sorted(root.get_items(recursive=True), key=lambda i: (i.collection_id or "",
                                                                        i.id))
    items: list[SourceItem] = []
    notes: list[str] = []
    for feed in feeds:
        config = feed.source if isinstance(feed.source, StacSourceConfig) else None
        for item in stac_items:
            if config is not None:
                if config.collections is not None and item.collection_id not in \
                        config.collections:
                    continue
            elif item.collection_id != feed.id:
                continue
            asset = _choose_asset(item, config.asset if config else None)
            if asset is None:
                notes.append(f"STAC item {item.id}: no readable asset for feed {feed.id}")
                continue
            href = asset.get_absolute_href() or asset.href
            local = _local_path(href)
            if local is None:
                notes.append(f"STAC item {item.id}: asset {href} is not a local file; replay "
                             "the archive the live feed filled instead")
                continue
            when = to_utc(item.datetime or item.properties.get("start_datetime")
                          or item.properties.get("created"))
            fetched = when or (datetime.fromtimestamp(local.stat().st_mtime, UTC)
                               if local.exists() else datetime(1970, 1, 1, tzinfo=UTC))
            checksum = file_checksum(local) if local.exists() else f"missing:{href}"
            items.append(SourceItem(feed.id, local, checksum, local.name, href, when, fetched))
    return items, notes


def _choose_asset(item: Any, name: str | None) -> Any | None:
    assets = item.assets
    if name is not None:
        return assets.get(name)
    for asset in assets.values():
        media = (asset.media_type or "").split(";")[0].strip().lower()
        if media in READABLE_MEDIA_TYPES:
            return asset
    return None


def _local_path(href: str) -> Path | None:
    parts = urlsplit(href)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "":
        return Path(href)
    return None


def register_items(sessions: sessionmaker[Session], items: Sequence[SourceItem]) -> list[int]:
    """Record the items in the run store (once: the same feed and bytes are one item)."""
    ids = []
    with session_scope(sessions) as session:
        for item in items:
            item_id, _new = feeds_repo.add_item(
                session, feed_id=item.feed_id, checksum=item.checksum,
                archive_path=str(item.path), source_uri=item.source_uri,
                original_name=item.original_name, fetched_at=item.fetched_at,
                issued_at=item.source_time)
            ids.append(item_id)
    return list(dict.fromkeys(ids))
