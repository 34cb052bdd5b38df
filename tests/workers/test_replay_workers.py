"""``tocsin replay`` on real Celery worker processes (the run's own filesystem broker).

The same replay on one worker and on two gives byte-identical CAP messages, timelines,
noise tables and item records. A replay killed with SIGKILL midway (command and workers
together) continues on the same command, and ends with exactly the messages of a run that
was never interrupted: none lost, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from tocsin_testing.replay import (
    ReplayMaterial,
    cap_files,
    make_material,
    replay_args,
    replay_env,
)
from typer.testing import CliRunner

from store.db import make_engine, session_scope
from store.feed_models import FeedItemRow
from store.models import AlertRow
from workers.cli.main import app

pytestmark = [pytest.mark.slow]
runner = CliRunner()
OUTPUT_FILES = ("timeline.csv", "timeline.json", "noise.csv", "noise.json", "items.csv")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> ReplayMaterial:
    return make_material(tmp_path_factory.mktemp("replay-workers"))


def _replay(material: ReplayMaterial, out: Path, workers: int) -> None:
    result = runner.invoke(app, replay_args(material.source, out, "--workers", str(workers)),
                           env=replay_env(material))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def one_worker(material: ReplayMaterial) -> Path:
    out = material.root / "run-1-worker"
    _replay(material, out, 1)
    return out


def test_one_and_two_workers_give_byte_identical_alerts_and_cap(
        material: ReplayMaterial, one_worker: Path) -> None:
    two = material.root / "run-2-workers"
    _replay(material, two, 2)
    plan = json.loads((two / "plan.json").read_text("utf-8"))
    assert len(plan["partitions"]) == 3  # the flood chain, the rainfall, the quake
    caps = cap_files(one_worker)
    assert len(caps) == 4 and caps == cap_files(two)
    for name in OUTPUT_FILES:
        assert (one_worker / "outputs" / name).read_bytes() == \
            (two / "outputs" / name).read_bytes(), name
    ids = [json.loads((r / "run.json").read_text("utf-8"))["run_id"] for r in (one_worker, two)]
    assert ids[0] != ids[1]  # only the run id differs
    assert len(list((two / "logs").glob("worker-*.log"))) == 2


def _final_items(run_dir: Path) -> int:
    engine = make_engine(f"sqlite:///{run_dir / 'store.sqlite'}")
    try:
        with session_scope(engine) as session:
            return sum(1 for row in session.scalars(select(FeedItemRow))
                       if row.status in ("assessed", "skipped", "quarantined"))
    except Exception:  # noqa: BLE001 - the store is not made yet
        return 0
    finally:
        engine.dispose()


def test_a_replay_killed_midway_resumes_without_duplicating_alerts(
        material: ReplayMaterial, one_worker: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update(replay_env(material))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from workers.cli.main import main; main()",
         *replay_args(material.source, out, "--workers", "1")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while _final_items(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        done_at_kill = _final_items(out)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert 1 <= done_at_kill < 5, "the replay should be killed after its first item"
    time.sleep(0.5)  # the worker dies with its parent (PR_SET_PDEATHSIG)

    result = runner.invoke(app, replay_args(material.source, out, "--workers", "1"),
                           env=replay_env(material))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "outputs" / "summary.json").read_text("utf-8"))
    assert summary["resumed"] is True and summary["items"] == {"assessed": 5}
    assert cap_files(out) == cap_files(one_worker)
    engine = make_engine(f"sqlite:///{out / 'store.sqlite'}")
    with session_scope(engine) as session:
        identifiers = [row.identifier for row in session.scalars(select(AlertRow))]
    engine.dispose()
    assert sorted(identifiers) == sorted(p.removesuffix(".xml") for p in cap_files(one_worker))
    assert (out / "outputs" / "timeline.csv").read_bytes() == \
        (one_worker / "outputs" / "timeline.csv").read_bytes()


def test_a_run_with_a_failed_item_resumes_on_workers_and_completes(
        material: ReplayMaterial, one_worker: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.replay_run

    real = workers.replay_run.run_assess

    def flaky(path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "flood_depth_run2.tif":
            raise RuntimeError("disk hiccup")
        return real(path, *args, **kwargs)

    out = tmp_path / "failed"
    monkeypatch.setattr(workers.replay_run, "run_assess", flaky)
    result = runner.invoke(app, replay_args(material.source, out, "--workers", "0"),
                           env=replay_env(material))
    assert result.exit_code == 1 and "disk hiccup" in " ".join(result.output.split())
    monkeypatch.undo()
    # The old "failed: ..." reason must not read as a failure of the resumed run.
    result = runner.invoke(app, replay_args(material.source, out, "--workers", "1"),
                           env=replay_env(material))
    assert result.exit_code == 0, result.output
    assert "1 item(s) that failed in an earlier run" in " ".join(result.output.split())
    assert cap_files(out) == cap_files(one_worker)
    assert (out / "outputs" / "timeline.csv").read_bytes() == \
        (one_worker / "outputs" / "timeline.csv").read_bytes()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def test_a_worker_that_dies_stops_the_replay_with_a_message_and_it_resumes(
        material: ReplayMaterial, one_worker: Path, tmp_path: Path) -> None:
    # The item a dead worker held stays claimed while the command lives: waiting on it
    # would hang for ever. The command stops instead, and the same command resumes.
    out = tmp_path / "lost-worker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update(replay_env(material))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from workers.cli.main import main; main()",
         *replay_args(material.source, out, "--workers", "2")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while _final_items(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        said, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    text = " ".join(said.decode().split())
    assert proc.returncode == 1, text
    assert "1 of 2 replay worker(s) exited" in text
    time.sleep(0.5)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()
                and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"]
    result = runner.invoke(app, replay_args(material.source, out, "--workers", "1"),
                           env=replay_env(material))
    assert result.exit_code == 0, result.output
    assert cap_files(out) == cap_files(one_worker)
