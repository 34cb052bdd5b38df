"""The payload archive: content addressing, provenance for replay, quarantine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feeds.archive import Archive, ProvenanceLineWarning, safe_name
from feeds.base import file_checksum
from feeds.errors import ArchiveError

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def store(archive: Archive, data: bytes, *, feed_id: str = "gauge", name: str = "depth.tif",
          at: datetime = T0, **kwargs: object):
    return archive.store(data, feed_id=feed_id, source_uri=f"https://e.org/{name}",
                         fetched_at=at, original_name=name, **kwargs)


def test_bytes_are_stored_under_their_sha256_with_the_original_suffix(tmp_path):
    archive = Archive(tmp_path / "archive")
    payload = store(archive, b"hello", issued_at=T0 - timedelta(hours=1), etag='"v1"',
                    media_type="image/tiff")
    hex_digest = hashlib.sha256(b"hello").hexdigest()
    assert payload.checksum == f"sha256:{hex_digest}"
    assert payload.path == tmp_path / "archive/objects/sha256" / hex_digest[:2] / (
        hex_digest + ".tif")
    assert payload.path.read_bytes() == b"hello" and payload.size_bytes == 5
    assert payload.duplicate is False and payload.etag == '"v1"'
    assert file_checksum(payload.path) == payload.checksum
    assert list((tmp_path / "archive/tmp").iterdir()) == []


def test_a_file_is_copied_into_the_archive(tmp_path):
    source = tmp_path / "grid.xml.gz"
    source.write_bytes(b"\x1f\x8b fake")
    payload = Archive(tmp_path / "a").store(source, feed_id="quake", source_uri=str(source),
                                            fetched_at=T0, original_name=source.name)
    assert payload.path.name.endswith(".xml.gz") and payload.path.read_bytes() == b"\x1f\x8b fake"


def test_the_same_bytes_again_are_a_duplicate_for_any_feed_and_share_one_object(tmp_path):
    archive = Archive(tmp_path)
    first = store(archive, b"same")
    again = store(archive, b"same", feed_id="other", name="copy.nc")
    assert again.duplicate is True and again.path == first.path
    assert first.path.read_bytes() == b"same"
    assert len(list((tmp_path / "objects/sha256").rglob("*.*"))) == 1


def test_an_existing_object_is_never_overwritten(tmp_path):
    archive = Archive(tmp_path)
    first = store(archive, b"keep me")
    mtime_ns = first.path.stat().st_mtime_ns
    store(archive, b"keep me")
    assert first.path.stat().st_mtime_ns == mtime_ns


def test_provenance_is_read_back_in_fetch_order_within_a_time_range(tmp_path):
    archive = Archive(tmp_path)
    late = store(archive, b"b", at=T0 + timedelta(minutes=10), issued_at=T0, etag='"2"',
                 last_modified="Wed, 01 May 2024 10:00:00 GMT", media_type="image/tiff")
    early = store(archive, b"a", at=T0)
    store(archive, b"c", at=T0 + timedelta(minutes=20))
    store(archive, b"x", feed_id="elsewhere", at=T0)
    seen = list(archive.iter_provenance("gauge"))
    assert [p.checksum for p in seen][:2] == [early.checksum, late.checksum]
    assert seen[1] == late
    window = archive.iter_provenance("gauge", since=T0 + timedelta(minutes=5),
                                     until=T0 + timedelta(minutes=20))
    assert [p.checksum for p in window] == [late.checksum]
    assert list(archive.iter_provenance("never-polled")) == []


def test_a_torn_provenance_line_is_skipped_with_a_warning(tmp_path):
    archive = Archive(tmp_path)
    kept = store(archive, b"a")
    with open(tmp_path / "provenance/gauge.jsonl", "a") as fh:
        fh.write('{"checksum": "sha256:ab')
    with pytest.warns(ProvenanceLineWarning, match="gauge.jsonl:2"):
        assert list(archive.iter_provenance("gauge")) == [kept]


WORKER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from feeds.archive import Archive
archive = Archive(Path(sys.argv[1]))
n = int(sys.argv[2])
for i in range(60):
    archive.store(f"worker {n} payload {i}".encode() * 50, feed_id="shared",
                  source_uri=f"w{n}/{i}", fetched_at=datetime(2024, 5, 1, tzinfo=UTC),
                  original_name=f"p{i}.bin")
"""


def test_four_processes_appending_provenance_together_lose_no_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(n)],
                                env=env, cwd=REPO) for n in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    lines = (tmp_path / "provenance/shared.jsonl").read_text().splitlines()
    assert len(lines) == 240
    assert {json.loads(line)["source_uri"] for line in lines} == {
        f"w{n}/{i}" for n in range(4) for i in range(60)}


def test_quarantine_keeps_the_reason_and_is_idempotent(tmp_path):
    archive = Archive(tmp_path)
    payload = store(archive, b"not a raster")
    first = archive.quarantine(payload, "unrecognised hazard file", at=T0)
    again = archive.quarantine(payload, "a second opinion", at=T0 + timedelta(hours=1))
    assert first == again == tmp_path / "quarantine/gauge" / f"{payload.hex}-depth.tif"
    assert first.read_bytes() == b"not a raster" and payload.path.exists()
    [item] = archive.list_quarantined("gauge")
    assert item.reason == "unrecognised hazard file" and item.at == T0
    assert item.path == first and item.checksum == payload.checksum
    assert item.source_uri == "https://e.org/depth.tif"
    assert archive.list_quarantined() == [item]
    assert archive.list_quarantined("other") == []


def test_a_hostile_original_name_stays_inside_the_quarantine_folder(tmp_path):
    archive = Archive(tmp_path / "archive")
    payload = store(archive, b"evil", name="../../etc/passwd")
    path = archive.quarantine(payload, "bad", at=T0)
    folder = (tmp_path / "archive/quarantine/gauge").resolve()
    assert path.resolve().parent == folder and path.name == f"{payload.hex}-passwd"
    assert payload.path.resolve().is_relative_to((tmp_path / "archive").resolve())
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"), (".hidden", "hidden"),
    ("", "payload"), ("..", "payload"), ("a b;rm -rf.tif", "a_b_rm_-rf.tif"),
])
def test_safe_names_have_no_directories_and_no_leading_dot(name, expected):
    assert safe_name(name) == expected


def test_a_feed_id_that_is_not_a_slug_is_refused(tmp_path):
    with pytest.raises(ArchiveError, match="slug"):
        store(Archive(tmp_path), b"x", feed_id="../escape")


def test_an_unreadable_source_file_is_an_archive_error(tmp_path):
    with pytest.raises(ArchiveError, match="cannot read"):
        Archive(tmp_path).store(tmp_path / "missing.tif", feed_id="f", source_uri="x",
                                fetched_at=T0, original_name="missing.tif")


def test_a_stream_that_fails_midway_leaves_nothing_behind(tmp_path):
    archive = Archive(tmp_path)

    def chunks():
        yield b"partial"
        raise RuntimeError("connection dropped")

    with pytest.raises(RuntimeError):
        archive.store_chunks(chunks(), feed_id="f", source_uri="x", fetched_at=T0,
                             original_name="x.tif")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "objects/sha256").iterdir()) == []
    assert list(archive.iter_provenance("f")) == []
