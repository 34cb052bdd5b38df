"""The live pipeline without a broker: a watched folder, assessment, dispatch, feed health.

Sample flood runs land in a watched directory (written atomically, or growing); each is
archived, assessed against the sample region and delivered to a real webhook receiver. A
corrupt file is quarantined and the feed goes on; the same file twice is a repeat; an older
run after a newer one changes nothing; a feed that disappears shows its error.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tocsin_testing import receiver as rx
from typer.testing import CliRunner

from feeds.region import load_region_pack
from feeds.sample import SampleRegion, build_sample_region
from store import feeds_repo
from store.db import make_engine, make_session_factory, session_scope, upgrade
from workers.cli.main import app
from workers.pipeline import assess_item, open_pipeline, pending_items, poll_feed
from workers.settings import Settings

runner = CliRunner()






@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return build_sample_region(tmp_path_factory.mktemp("region"), seed=3, size=120)


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, sample: SampleRegion, incoming: Path) -> Settings:
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(f'''region = "{sample.manifest}"

[[feed]]
id = "river"
kind = "flood_depth"
nature = "forecast"
poll_interval_s = 60
[feed.source]
type = "directory"
path = "{incoming}"
pattern = "*.tif"
settle_s = 1
''', encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'tocsin.db'}"
    upgrade(url)
    return Settings(data_dir=tmp_path / "data", database_url=url, feeds_config=feeds,
                    webhook_allow_hosts=("127.0.0.1",), webhook_secret="pipeline-test")


@pytest.fixture
def pipeline(settings: Settings):
    engine = make_engine(settings.database_url)
    ctx = open_pipeline(settings, make_session_factory(engine))
    yield ctx
    ctx.close()
    engine.dispose()


def _drop(src: Path, folder: Path, name: str | None = None, *, age_s: float = 10) -> Path:
    """Write a feed file atomically (temporary name, then rename) with an mtime in the past."""
    target = folder / (name or src.name)
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(src, partial)
    past = time.time() - age_s
    os.utime(partial, (past, past))
    os.replace(partial, target)
    return target


def _poll_until_items(ctx, now: datetime, rounds: int = 3) -> list[int]:
    """Poll (a file is read once it was seen unchanged on two polls) and return new items."""
    got: list[int] = []
    for i in range(rounds):
        outcome = poll_feed(ctx, "river", now=now + timedelta(seconds=2 * i), force=True)
        assert outcome is not None and outcome.error is None, outcome
        got += outcome.item_ids
        if got:
            break
    return got


def _assess_all(ctx, now: datetime) -> list:
    return [assess_item(ctx, i, now=now) for i in pending_items(ctx, now=now)]


def test_a_flood_run_dropped_in_the_folder_is_archived_assessed_and_alerted(
        pipeline, sample: SampleRegion, incoming: Path) -> None:
    now = datetime.now(UTC)
    _drop(sample.root / "feeds" / "flood_depth_run1.tif", incoming)
    (item_id,) = _poll_until_items(pipeline, now)
    (outcome,) = _assess_all(pipeline, now)
    assert outcome.status == "assessed" and outcome.decision == "alert"
    assert outcome.alert_identifier.startswith("tocsin-flood_depth-")
    with session_scope(pipeline.sessions) as session:
        item = feeds_repo.get_item(session, item_id)
        (health,) = feeds_repo.feed_health(session, ["river"])
    assert Path(item.archive_path).read_bytes() == \
        (sample.root / "feeds" / "flood_depth_run1.tif").read_bytes()
    assert item.issued_at is not None and item.assess_s and item.assess_s > 0
    assert health.items == {"assessed": 1} and health.last_lag_s is not None


def test_a_growing_file_is_only_read_once_complete(pipeline, sample, incoming) -> None:
    now = datetime.now(UTC)
    growing = incoming / "flood_depth_run1.tif"
    data = (sample.root / "feeds" / "flood_depth_run1.tif").read_bytes()
    growing.write_bytes(data[: len(data) // 2])
    first = poll_feed(pipeline, "river", now=now, force=True)
    assert first is not None and first.item_ids == ()
    growing.write_bytes(data)  # the writer finishes
    past = time.time() - 10
    os.utime(growing, (past, past))
    items = _poll_until_items(pipeline, now + timedelta(seconds=5))
    with session_scope(pipeline.sessions) as session:
        (item,) = [feeds_repo.get_item(session, i) for i in items]
    assert Path(item.archive_path).read_bytes() == data


def test_a_corrupt_file_is_quarantined_with_its_reason_and_the_feed_goes_on(
        pipeline, sample, incoming, settings) -> None:
    now = datetime.now(UTC)
    bad = incoming / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 50)
    past = time.time() - 10
    os.utime(bad, (past, past))
    _drop(sample.root / "feeds" / "flood_depth_run1.tif", incoming)
    items = _poll_until_items(pipeline, now)
    assert len(items) == 2
    outcomes = {o.status: o for o in _assess_all(pipeline, now)}
    assert set(outcomes) == {"quarantined", "assessed"}
    assert "broken.tif" in (outcomes["quarantined"].reason or "")
    (quarantined,) = pipeline.archive.list_quarantined("river")
    assert "broken.tif" in str(quarantined.path)
    result = runner.invoke(app, ["feeds", "status"], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "1 quarantined" in result.output and "1 assessed" in result.output


def test_the_same_file_twice_is_a_repeat_and_an_older_run_after_a_newer_changes_nothing(
        pipeline, sample, incoming) -> None:
    now = datetime.now(UTC)
    feeds = sample.root / "feeds"
    _drop(feeds / "flood_depth_run2.tif", incoming)
    _poll_until_items(pipeline, now)
    (newer,) = _assess_all(pipeline, now)
    assert newer.decision == "alert"
    _drop(feeds / "flood_depth_run2.tif", incoming, "again.tif")  # same bytes, new name
    _drop(feeds / "flood_depth_run1.tif", incoming)  # issued before run 2, arrives after
    later = now + timedelta(minutes=5)
    for i in range(3):
        poll_feed(pipeline, "river", now=later + timedelta(seconds=2 * i), force=True)
    (older,) = _assess_all(pipeline, later)
    assert older.status == "skipped" and "an older run" in (older.reason or "")
    with session_scope(pipeline.sessions) as session:
        (health,) = feeds_repo.feed_health(session, ["river"])
    assert health.items == {"assessed": 1, "skipped": 1}
    assert any("same content as an earlier payload" in note for note in health.notes)


def test_tocsin_run_without_a_feeds_file_says_which_setting_is_missing(tmp_path) -> None:
    result = runner.invoke(app, ["run"], env={"TOCSIN_DATA_DIR": str(tmp_path),
                                              "TOCSIN_FEEDS_CONFIG": ""})
    assert result.exit_code == 2 and "TOCSIN_FEEDS_CONFIG" in result.output


def test_a_feed_whose_folder_disappears_reports_the_error_and_recovers(
        pipeline, sample, incoming, settings) -> None:
    now = datetime.now(UTC)
    shutil.rmtree(incoming)
    outcome = poll_feed(pipeline, "river", now=now, force=True)
    assert outcome is not None and outcome.error
    result = runner.invoke(app, ["feeds", "status"], env=_env(settings))
    assert result.exit_code == 6 and "river" in result.output
    incoming.mkdir()
    _drop(sample.root / "feeds" / "flood_depth_run1.tif", incoming)
    assert _poll_until_items(pipeline, now + timedelta(minutes=2))
    with session_scope(pipeline.sessions) as session:
        (health,) = feeds_repo.feed_health(session, ["river"])
    assert health.consecutive_failures == 0 and health.last_success_at is not None


def test_feeds_poll_runs_the_whole_pipeline_to_a_real_receiver(
        sample, incoming, settings, tmp_path) -> None:
    region = load_region_pack(sample.manifest)
    zones = ",".join(region.zones["zone_id"])
    env = _env(settings)
    with rx.running() as receiver:
        for args in (["agency", "add", "valley", "--name", "Valley"],
                     ["subscribe", "add", "valley-all", "--agency", "valley", "--zones", zones,
                      "--region", str(sample.manifest), "--channel",
                      f"webhook:{receiver.url}"]):
            result = runner.invoke(app, args, env=env)
            assert result.exit_code == 0, result.output
        _drop(sample.root / "feeds" / "flood_depth_run1.tif", incoming)
        outputs = [runner.invoke(app, ["feeds", "poll", "river"], env=env) for _ in range(2)]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    assert "assessed (alert)" in "".join(r.output for r in outputs)
    (body,) = receiver.processed.values()
    assert body["alerts"][0]["msg_type"] == "Alert"


def _env(settings: Settings) -> dict[str, str]:
    return {"TOCSIN_DATA_DIR": str(settings.data_dir),
            "TOCSIN_DATABASE_URL": settings.database_url,
            "TOCSIN_FEEDS_CONFIG": str(settings.feeds_config),
            "TOCSIN_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "TOCSIN_WEBHOOK_SECRET": "pipeline-test",
            "TOCSIN_BROKER_URL": ""}
