"""The three replay sources give the same messages: a folder, the ingest archive, STAC.

The flood runs 1-3 are replayed from a folder of feed files, from an ingest archive
(written with ``feeds.archive.Archive`` as the live pipeline does, plus a corrupt payload)
and from a static STAC catalog built with pystac; the CAP bytes are the same each time.
The corrupt payload is quarantined in the run with its reason and the replay goes on; the
source archive is left as it was.
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pystac
import pytest
from tocsin_testing.replay import (
    FEED_FILES,
    ReplayMaterial,
    cap_files,
    make_material,
    replay_args,
    replay_env,
)
from typer.testing import CliRunner

from feeds.archive import Archive
from workers.cli.main import app

runner = CliRunner()
FLOOD = "river-forecast"
ISSUED = [datetime(2024, 5, 14, 6, tzinfo=UTC), datetime(2024, 5, 14, 18, tzinfo=UTC),
          datetime(2024, 5, 16, 6, tzinfo=UTC)]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> ReplayMaterial:
    return make_material(tmp_path_factory.mktemp("replay-sources"))


def _replay(material: ReplayMaterial, source: Path, out: Path, *more: str) -> None:
    result = runner.invoke(app, replay_args(source, out, "--workers", "0", "--feeds", FLOOD,
                                            *more), env=replay_env(material))
    assert result.exit_code == 0, result.output


def _items(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "outputs" / "items.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def folder_run(material: ReplayMaterial) -> Path:
    out = material.root / "run-folder"
    _replay(material, material.source, out)
    return out


def test_a_folder_of_feed_files_replays_the_flood_as_three_messages(folder_run: Path) -> None:
    assert len(cap_files(folder_run)) == 3
    assert json.loads((folder_run / "run.json").read_text("utf-8"))["source"]["kind"] == \
        "directory"


def test_the_ingest_archive_replays_the_same_messages_and_quarantines_a_bad_payload(
        material: ReplayMaterial, folder_run: Path, tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    for name, issued in zip(FEED_FILES[FLOOD], ISSUED, strict=True):
        archive.store(material.feed_file(name), feed_id=FLOOD, source_uri=f"file:///in/{name}",
                      fetched_at=issued + timedelta(minutes=5), original_name=name)
    archive.store(b"II*\x00 not really a GeoTIFF", feed_id=FLOOD, source_uri="file:///in/bad",
                  fetched_at=ISSUED[1] + timedelta(hours=1), original_name="broken.tif")
    out = tmp_path / "run"
    _replay(material, tmp_path / "archive", out)
    assert cap_files(out) == cap_files(folder_run)
    items = {r["name"]: r for r in _items(out)}
    assert items["broken.tif"]["status"] == "quarantined"
    assert items["broken.tif"]["reason"].startswith("cannot read broken.tif")
    assert [items[n]["decision"] for n in FEED_FILES[FLOOD]] == ["alert", "update", "cancel"]
    assert len(list((out / "archive" / "quarantine" / FLOOD).glob("*-broken.tif"))) == 1
    assert not (tmp_path / "archive" / "quarantine" / FLOOD).exists()  # source untouched
    manifest = json.loads((out / "run.json").read_text("utf-8"))
    assert manifest["source"]["kind"] == "archive"


def test_a_static_stac_catalog_replays_the_same_messages(
        material: ReplayMaterial, folder_run: Path, tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    catalog = pystac.Catalog(id="floods", description="Flood forecast runs")
    extent = pystac.Extent(pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                           pystac.TemporalExtent([[ISSUED[0], ISSUED[-1]]]))
    collection = pystac.Collection(id=FLOOD, description="River forecast", extent=extent)
    catalog.add_child(collection)
    for name, issued in zip(FEED_FILES[FLOOD], ISSUED, strict=True):
        shutil.copyfile(material.feed_file(name), assets / name)
        item = pystac.Item(id=name.removesuffix(".tif"), geometry=None, bbox=None,
                           datetime=issued, properties={})
        item.add_asset("data", pystac.Asset(href=str(assets / name),
                                            media_type=pystac.MediaType.GEOTIFF))
        collection.add_item(item)
    catalog.normalize_hrefs(str(tmp_path / "stac"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    out = tmp_path / "run"
    _replay(material, tmp_path / "stac" / "catalog.json", out)
    assert cap_files(out) == cap_files(folder_run)
    manifest = json.loads((out / "run.json").read_text("utf-8"))
    assert manifest["source"]["kind"] == "stac"


def test_items_before_the_window_are_skipped_and_the_event_starts_later(
        material: ReplayMaterial, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _replay(material, material.source, out, "--from", "2024-05-14T12:00:00Z")
    items = {r["name"]: r for r in _items(out)}
    assert items["flood_depth_run1.tif"]["status"] == "skipped"
    assert items["flood_depth_run1.tif"]["reason"].startswith("outside the window")
    assert items["flood_depth_run2.tif"]["decision"] == "alert"
    timeline = json.loads((out / "outputs" / "timeline.json").read_text("utf-8"))
    assert [m["msg_type"] for m in timeline[0]["messages"]] == ["Alert", "Cancel"]
