"""``tocsin replay`` in this process (``--workers 0``) on the sample region's feed files.

One baseline replay (the shipped rules, the default dispatch) of the three demo feeds
backs most tests: the flood runs 1-3 give Alert, Update, Cancel in the event's timeline,
the noise table is checked by hand, nothing was dispatched. Two crafted rule tables (all
yellow at most; nothing ever reaches yellow) show up in ``replay diff`` as levels changed,
messages lost and gained. Sink and live dispatch go to a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import shapely
import tomli_w
from pyproj import Transformer
from sqlalchemy import select
from tocsin_testing import receiver as rx
from tocsin_testing.replay import (
    ReplayMaterial,
    cap_files,
    make_material,
    replay_args,
    replay_env,
)
from typer.testing import CliRunner

from alerts.model import Agency, ChannelAddress, ChannelKind, Level, Subscription
from feeds.region import load_region_pack
from store import repo
from store.db import make_engine, session_scope, upgrade
from store.models import DeliveryRow
from workers.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> ReplayMaterial:
    return make_material(tmp_path_factory.mktemp("replay"))


def _replay(material: ReplayMaterial, out: Path, *more: str, source: Path | None = None,
            code: int = 0, **env: str) -> Any:
    result = runner.invoke(app, replay_args(source or material.source, out, "--workers", "0",
                                            *more), env=replay_env(material, **env))
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def baseline(material: ReplayMaterial) -> Path:
    out = material.root / "run-v1"
    _replay(material, out)
    return out


def _said(result: Any) -> str:
    """The command's output on one line (rich wraps long messages)."""
    return " ".join(result.output.split())


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _rules(tmp_path: Path, name: str, *, people: list, facility: list, cut_off: str,
           severity: list) -> Path:
    """A rule table derived from the shipped one with every people and facility table set."""
    raw = tomllib.loads((Path(__file__).parents[2] / "alerts" / "rules" /
                         "priority-v1.toml").read_text("utf-8"))
    raw["version"] = name
    raw["people"] = {factor: people for factor in raw["people"]}
    raw["facilities"] = {**{t: facility for t in raw["facilities"] if t != "cut_off"},
                         "cut_off": cut_off}
    raw["severity"]["level"] = severity
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def test_flood_runs_1_to_3_replay_as_alert_update_cancel_in_the_event_timeline(
        baseline: Path) -> None:
    timeline = json.loads((baseline / "outputs" / "timeline.json").read_text("utf-8"))
    flood = next(e for e in timeline if e["kind"] == "flood_depth")
    assert [(m["msg_type"], m["level"]) for m in flood["messages"]] == [
        ("Alert", "orange"), ("Update", "red"), ("Cancel", "green")]
    assert [m["sent"][:16] for m in flood["messages"]] == [
        "2024-05-14T06:00", "2024-05-14T18:00", "2024-05-16T06:00"]  # the runs' own times
    assert [m["feed_id"] for m in flood["messages"]] == ["river-forecast"] * 3
    assert flood["messages"][1]["population"] > flood["messages"][0]["population"] > 0
    quake = next(e for e in timeline if e["kind"] == "shaking_mmi")
    assert [m["msg_type"] for m in quake["messages"]] == ["Alert"]
    rows = _rows(baseline / "outputs" / "timeline.csv")
    assert [r["identifier"] for r in rows] == [m["identifier"] for e in timeline
                                               for m in e["messages"]]
    assert set(cap_files(baseline)) == {f"{r['identifier']}.xml" for r in rows}


def test_the_manifest_records_rules_region_subscriptions_and_dispatch(
        baseline: Path, material: ReplayMaterial) -> None:
    manifest = json.loads((baseline / "run.json").read_text("utf-8"))
    assert manifest["rules"]["version"] == "1"
    assert manifest["rules"]["origin"] == "alerts/rules/priority-v1.toml"
    assert len(manifest["rules"]["sha256"]) == 64
    assert manifest["regions"][0]["path"] == str(material.sample.manifest.resolve())
    assert len(manifest["regions"][0]["sha256"]) == 64
    assert manifest["subscriptions"]["count"] == 3
    assert manifest["dispatch"] == "none"
    assert manifest["source"]["kind"] == "directory"
    assert manifest["feeds"] == ["river-forecast", "rain-ensemble", "shakemap"]
    assert manifest["window"]["from"].startswith("2024-05-01T00:00:00")


def test_noise_per_subscription_counts_messages_and_updates_by_hand(baseline: Path) -> None:
    # Valley: every zone, every hazard, yellow+: the flood's Alert, Update and Cancel and the
    # quake's Alert (the rainfall stays below yellow: no message). City: floods and quakes,
    # orange+: the flood Alert was orange, the Update red, the Cancel goes to whoever the
    # last message reached, the quake is red. County: rainfall, floods, quakes, yellow+.
    # So each received 4 messages of which 1 Update; deliveries = messages x channels.
    noise = {r["subscription_id"]: r for r in _rows(baseline / "outputs" / "noise.csv")}
    expected = {"valley-all-hazards": 3, "city-health-floods-quakes": 2, "county-desk": 1}
    assert set(noise) == set(expected)
    for sub_id, channels in expected.items():
        row = noise[sub_id]
        assert (row["messages"], row["alerts"], row["updates"], row["cancels"]) == \
            ("4", "2", "1", "1"), row
        assert row["deliveries"] == str(4 * channels)
        assert float(row["update_share"]) == 0.25
    assert json.loads((baseline / "outputs" / "noise.json").read_text("utf-8"))[0][
        "subscription_id"] == "city-health-floods-quakes"


def test_the_default_dispatch_sends_nothing_and_writes_no_sink(baseline: Path) -> None:
    assert not (baseline / "sink").exists()
    engine = make_engine(f"sqlite:///{baseline / 'store.sqlite'}")
    with session_scope(engine) as session:
        statuses = {row.status for row in session.scalars(select(DeliveryRow))}
        attempts = {row.attempts for row in session.scalars(select(DeliveryRow))}
    engine.dispose()
    assert statuses == {"pending", "held"} or statuses == {"pending"}
    assert attempts == {0}
    summary = json.loads((baseline / "outputs" / "summary.json").read_text("utf-8"))
    assert summary["dispatch"] == "none" and summary["dispatched"] == {}


def test_resuming_a_finished_run_adds_nothing_and_says_resumed(
        baseline: Path, material: ReplayMaterial) -> None:
    before = cap_files(baseline)
    result = _replay(material, baseline)
    assert "resumed" in result.output
    assert cap_files(baseline) == before
    summary = json.loads((baseline / "outputs" / "summary.json").read_text("utf-8"))
    assert summary["resumed"] is True and summary["assessed"] == 0


def test_a_run_folder_of_another_replay_is_refused_with_the_differences(
        baseline: Path, material: ReplayMaterial, tmp_path: Path) -> None:
    calm = _rules(tmp_path, "calm", people=[[1, "yellow"]], facility=[[0.3, "yellow"]],
                  cut_off="yellow", severity=[[0.5, "yellow"]])
    result = _replay(material, baseline, "--rules", str(calm), code=2)
    assert "holds another replay" in _said(result) and "rules" in _said(result)
    result = _replay(material, baseline, "--to", "2024-05-20", code=2)
    assert "window" in _said(result)


def test_a_rule_change_shows_in_replay_diff_as_levels_changed_lost_and_gained(
        baseline: Path, material: ReplayMaterial, tmp_path: Path) -> None:
    calm = _rules(tmp_path, "calm", people=[[1, "yellow"]], facility=[[0.3, "yellow"]],
                  cut_off="yellow", severity=[[0.5, "yellow"]])
    deaf = _rules(tmp_path, "deaf", people=[[1e12, "yellow"]], facility=[[2.0, "yellow"]],
                  cut_off="green", severity=[[2.0, "yellow"]])
    _replay(material, tmp_path / "calm", "--rules", str(calm))
    _replay(material, tmp_path / "deaf", "--rules", str(deaf))

    def diff(a: str | Path, b: str | Path) -> dict:
        result = runner.invoke(app, ["replay", "diff", str(a), str(b), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    changed = diff(baseline, tmp_path / "calm")
    assert changed["run_a"]["rules_version"] == "1"
    assert changed["run_b"]["rules_version"] == "calm"
    flood = next(e for e in changed["events"] if e["events_a"][0].startswith("flood_depth"))
    assert flood["status"] == "changed"
    assert flood["timeline_a"] == ["Alert orange", "Update red", "Cancel green"]
    first = flood["changes"][0]
    assert (first["change"], first["a"]["level"], first["b"]["level"]) == \
        ("level", "orange", "yellow")
    assert changed["totals"]["level"] >= 2 and changed["totals"]["lost"] == 0
    lost = diff(baseline, tmp_path / "deaf")
    assert lost["totals"]["lost"] == 4 and lost["totals"]["events_lost"] == 2
    gained = diff(tmp_path / "deaf", baseline)
    assert gained["totals"]["gained"] == 4 and gained["totals"]["events_gained"] == 2
    table = runner.invoke(app, ["replay", "diff", str(baseline), str(tmp_path / "calm")])
    assert table.exit_code == 0, table.output
    assert "level changed 3" in table.output and "Alert orange" in table.output


def _local_subscriber(material: ReplayMaterial, url: str, tmp_path: Path) -> str:
    """A live store with one agency whose webhook is the local receiver."""
    pack = load_region_pack(material.sample.manifest)
    to_lonlat = Transformer.from_crs(pack.population.grid.crs, "EPSG:4326", always_xy=True)
    area = shapely.box(*to_lonlat.transform_bounds(*pack.population.grid.bounds))
    live = f"sqlite:///{tmp_path / 'live-local.db'}"
    upgrade(live)
    engine = make_engine(live)
    with session_scope(engine) as session:
        repo.add_agency(session, Agency("local", "Local test agency"))
        repo.add_subscription(session, Subscription(
            "local-hook", "local", areas_wkt=(area.wkt,), min_level=Level.YELLOW,
            hazard_kinds=frozenset({"flood_depth"}),
            channels=(ChannelAddress(ChannelKind.WEBHOOK, url),), languages=("en",)))
    engine.dispose()
    return live


def test_sink_writes_what_would_be_sent_and_only_live_reaches_the_receiver(
        material: ReplayMaterial, tmp_path: Path) -> None:
    with rx.running() as server:
        live = _local_subscriber(material, server.url, tmp_path)
        env = {"TOCSIN_DATABASE_URL": live, "TOCSIN_WEBHOOK_SECRET": "replay-test",
               "TOCSIN_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
               "TOCSIN_CAP_FEED_DIR": str(tmp_path / "live-cap-feed")}
        flood = ("--feeds", "river-forecast")
        _replay(material, tmp_path / "none", *flood, **env)
        _replay(material, tmp_path / "sink", *flood, "--dispatch", "sink", **env)
        assert sum(server.arrivals.values()) == 0
        assert not (tmp_path / "live-cap-feed").exists()
        hooks = sorted((tmp_path / "sink" / "sink" / "webhook").glob("*.json"))
        assert len(hooks) == 3  # Alert, Update, Cancel to the one webhook
        bodies = [json.loads(p.read_text("utf-8")) for p in hooks]
        assert {b["alerts"][0]["msg_type"] for b in bodies} == {"Alert", "Update", "Cancel"}
        assert all(b["address"] == server.url for b in bodies)
        public = list((tmp_path / "sink" / "sink" / "cap_feed").glob("*.json"))
        assert len(public) == 3  # and the public CAP feed
        _replay(material, tmp_path / "live", *flood, "--dispatch", "live", **env)
        assert len(server.processed) == 3
        assert (tmp_path / "live-cap-feed").exists()
    assert cap_files(tmp_path / "none") == cap_files(tmp_path / "sink") == \
        cap_files(tmp_path / "live")


def test_bad_arguments_fail_with_a_message_naming_them(
        material: ReplayMaterial, tmp_path: Path) -> None:
    result = _replay(material, tmp_path / "r", "--from", "yesterday", code=2)
    assert "--from 'yesterday'" in _said(result) and "ISO 8601" in _said(result)
    result = _replay(material, tmp_path / "r", "--feeds", "river-forecast,nope", code=2)
    assert "unknown feed 'nope'" in _said(result)
    result = _replay(material, tmp_path / "r", source=tmp_path / "missing", code=3)
    assert f"--archive {tmp_path / 'missing'}: no such file or folder" in \
        _said(result).replace(f"{tmp_path} /", f"{tmp_path}/")
    result = _replay(material, tmp_path / "r", "--rules", "7", code=2)
    assert "--rules 7" in _said(result) and "shipped: 1" in _said(result)
    result = _replay(material, tmp_path / "r", "--dispatch", "email", code=2)
    assert "--dispatch 'email'" in _said(result)
    result = runner.invoke(app, ["replay", "--archive", str(material.source)])
    assert result.exit_code == 2 and "--from, --to, --out" in _said(result)


def test_an_out_that_is_a_file_or_a_folder_of_other_things_is_refused(
        material: ReplayMaterial, tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n", encoding="utf-8")
    result = _replay(material, a_file, code=2)
    assert f"--out {a_file}: a file, not a run folder" in _said(result).replace(
        f"{tmp_path} /", f"{tmp_path}/")
    result = _replay(material, tmp_path, code=2)  # holds notes.txt, no run.json
    assert "holds no replay" in _said(result) and "notes.txt" in _said(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_corrupt_file_in_a_folder_source_is_quarantined_not_skipped(
        material: ReplayMaterial, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "shakemap").mkdir(parents=True)
    (source / "shakemap" / "broken.xml").write_text("<not a shakemap", encoding="utf-8")
    out = tmp_path / "run"
    _replay(material, out, "--feeds", "shakemap", source=source)
    rows = _rows(out / "outputs" / "items.csv")
    assert [(r["name"], r["status"]) for r in rows] == [("broken.xml", "quarantined")]
    assert rows[0]["reason"].startswith("cannot read broken.xml")
    assert list((out / "archive" / "quarantine").rglob("*.reason.json"))


def test_ctrl_c_says_how_to_resume_and_exits_130(
        material: ReplayMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.replay

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(workers.replay, "run_replay", interrupted)
    result = _replay(material, tmp_path / "r", code=130)
    assert "interrupted" in _said(result) and "same command again" in _said(result)


def test_replay_diff_refuses_a_run_without_a_store_and_creates_nothing(
        baseline: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "run.json").write_bytes((baseline / "run.json").read_bytes())
    result = runner.invoke(app, ["replay", "diff", str(baseline), str(bare)])
    assert result.exit_code == 2 and "has no store yet" in _said(result)
    assert sorted(p.name for p in bare.iterdir()) == ["run.json"]


def test_replay_diff_notes_an_unfinished_run_and_items_only_one_run_holds(
        baseline: Path, tmp_path: Path) -> None:
    import shutil

    from store.feed_models import FeedItemRow

    partial = tmp_path / "partial"
    shutil.copytree(baseline, partial)
    engine = make_engine(f"sqlite:///{partial / 'store.sqlite'}")
    with session_scope(engine) as session:
        row = session.scalars(select(FeedItemRow).order_by(FeedItemRow.id.desc())).first()
        row.status = "fetched"
    engine.dispose()
    result = runner.invoke(app, ["replay", "diff", str(baseline), str(partial)])
    assert result.exit_code == 0, result.output
    assert "is not finished: 1 item(s)" in _said(result)
    assert "one run only (not compared): A 1, B 0" in _said(result)
