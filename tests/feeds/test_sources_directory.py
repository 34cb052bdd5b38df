"""The directory source: only complete files, each archived once, the feed never stops."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feeds.archive import Archive
from feeds.feed_config import DirectorySourceConfig, FeedConfig
from feeds.sources import DirectorySource, is_partial_name, make_source

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def write(path: Path, data: bytes, mtime: datetime) -> Path:
    """Write ``data`` to ``path`` and set its mtime (the source compares it with ``now``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def source(tmp_path: Path, inbox: Path) -> DirectorySource:
    feed = FeedConfig(id="drop-box", source=DirectorySourceConfig(path=inbox, settle_s=2.0),
                      poll_interval_s=60.0)
    made = make_source(feed, Archive(tmp_path / "archive"))
    assert isinstance(made, DirectorySource)
    return made


def poll_twice(source: DirectorySource, state: dict, now: datetime):
    first = source.poll(state, now=now)
    return first, source.poll(first.state, now=now + timedelta(seconds=3))


def test_a_file_renamed_into_place_is_archived_once_it_has_been_seen_unchanged(source, inbox):
    write(inbox / ".depth.tif.part", b"depth grid", T0)
    os.replace(inbox / ".depth.tif.part", inbox / "depth.tif")
    first, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    assert first.payloads == [] and first.error is None
    assert first.next_poll_at == T0 + timedelta(seconds=7)  # back soon, not in a minute
    [payload] = second.payloads
    assert payload.original_name == "depth.tif" and payload.path.read_bytes() == b"depth grid"
    assert payload.source_uri == str(inbox / "depth.tif") and payload.issued_at is None
    assert payload.last_modified == T0.isoformat()
    assert second.next_poll_at == T0 + timedelta(seconds=68)
    json.dumps(second.state)  # the caller persists it as JSON


def test_a_growing_file_is_not_picked_up_until_it_stops_changing(source, inbox):
    path = write(inbox / "rain.nc", b"CDF\x01 part one", T0)
    now = T0 + timedelta(seconds=5)
    state = source.poll({}, now=now).state
    write(path, b"CDF\x01 part one, part two", T0 + timedelta(seconds=6))
    grew = source.poll(state, now=now + timedelta(seconds=2))
    assert grew.payloads == []
    # Unchanged since the last poll but modified only 1 s ago: not settled yet.
    fresh = source.poll(grew.state, now=T0 + timedelta(seconds=7))
    assert fresh.payloads == []
    settled = source.poll(fresh.state, now=T0 + timedelta(seconds=9))
    [payload] = settled.payloads
    assert payload.path.read_bytes() == b"CDF\x01 part one, part two"


def test_dot_files_and_partial_downloads_are_ignored(source, inbox):
    for name in (".hidden.tif", "a.part", "b.tmp", "c.partial", "d.crdownload", "e.filepart",
                 "f.download", "g.tif~", "h.TMP"):
        write(inbox / name, b"x", T0)
    write(inbox / ".cache" / "inside.tif", b"x", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    assert second.payloads == [] and second.state["files"] == {}


@pytest.mark.parametrize("name", ["x.part", ".x", "x~", "x.CRDOWNLOAD"])
def test_partial_names_are_recognised(name):
    assert is_partial_name(name)


def test_the_same_file_is_not_archived_again(source, inbox):
    write(inbox / "depth.tif", b"once", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    third = source.poll(second.state, now=T0 + timedelta(minutes=5))
    assert len(second.payloads) == 1 and third.payloads == []
    assert len(list(source.archive.iter_provenance("drop-box"))) == 1


def test_a_file_changed_under_the_same_name_is_a_new_payload(source, inbox):
    path = write(inbox / "depth.tif", b"version 1", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    write(path, b"version 2", T0 + timedelta(minutes=1))
    _, fourth = poll_twice(source, second.state, T0 + timedelta(minutes=2))
    [payload] = fourth.payloads
    assert payload.path.read_bytes() == b"version 2"
    assert payload.checksum != second.payloads[0].checksum


def test_a_file_sent_again_under_another_name_is_archived_but_not_passed_on(source, inbox):
    write(inbox / "a.tif", b"same bytes", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    write(inbox / "b.tif", b"same bytes", T0 + timedelta(minutes=1))
    _, fourth = poll_twice(source, second.state, T0 + timedelta(minutes=2))
    assert fourth.payloads == []
    assert any("same content as an earlier payload" in n for n in fourth.notes)
    seen = list(source.archive.iter_provenance("drop-box"))
    assert [p.original_name for p in seen] == ["a.tif", "b.tif"] and seen[1].duplicate


def test_a_change_of_format_is_noted(source, inbox):
    write(inbox / "a.tif", b"II*\x00 tiff", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    write(inbox / "b.nc", b"CDF\x01 netcdf", T0 + timedelta(minutes=1))
    _, fourth = poll_twice(source, second.state, T0 + timedelta(minutes=2))
    assert len(fourth.payloads) == 1
    assert any("format changed from geotiff to netcdf" in n for n in fourth.notes)


def test_a_file_that_disappears_is_forgotten(source, inbox):
    path = write(inbox / "depth.tif", b"here", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    path.unlink()
    gone = source.poll(second.state, now=T0 + timedelta(minutes=1))
    assert gone.state["files"] == {} and gone.error is None


def test_a_missing_directory_is_an_error_then_the_feed_recovers(source, inbox):
    write(inbox / "depth.tif", b"before", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=5))
    inbox.rename(inbox.with_name("unmounted"))
    down = source.poll(second.state, now=T0 + timedelta(minutes=1))
    assert down.payloads == [] and "does not exist" in down.error
    assert down.state["files"] == second.state["files"]  # nothing forgotten while down
    assert down.state["last_error"] == down.error
    inbox.with_name("unmounted").rename(inbox)
    write(inbox / "new.tif", b"after", T0 + timedelta(minutes=1))
    _, back = poll_twice(source, down.state, T0 + timedelta(minutes=2))
    assert [p.original_name for p in back.payloads] == ["new.tif"] and back.error is None
    assert back.state["last_error"] is None


def test_the_pattern_selects_files_and_the_oldest_come_first(tmp_path, inbox):
    feed = FeedConfig(id="nc-only", source=DirectorySourceConfig(path=inbox, pattern="*.nc"))
    source = make_source(feed, Archive(tmp_path / "archive"))
    write(inbox / "late.nc", b"CDF\x01 late", T0 + timedelta(seconds=1))
    write(inbox / "early.nc", b"CDF\x01 early", T0)
    write(inbox / "other.tif", b"II*\x00", T0)
    _, second = poll_twice(source, {}, T0 + timedelta(seconds=10))
    assert [p.original_name for p in second.payloads] == ["early.nc", "late.nc"]


def test_the_callers_state_is_not_modified(source, inbox):
    write(inbox / "depth.tif", b"x", T0)
    state: dict = {}
    source.poll(state, now=T0 + timedelta(seconds=5))
    assert state == {}
