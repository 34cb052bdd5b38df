"""``tocsin demo``: the whole mission on the embedded default, with no server.

Builds the sample region once; registers three agencies with different areas, hazards,
levels and channels; starts local receivers (a webhook and SMS-gateway server, a mail
server, the CAP feed files; MQTT where a broker is reachable); starts the live workers and
the beat (``tocsin worker --beat`` on the local broker) watching three feed folders; then
plays a scripted sequence of real-format feed files into them: a flood forecast in three
runs (Alert, Update, Cancel), a rainfall ensemble and an earthquake ShakeMap. It prints per
agency what arrived on which channel and why it was prioritized so, and writes the map and
report of each event.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from alerts.channels.webhook import webhook_secret_for
from feeds.base import file_checksum
from feeds.sample import build_sample_region
from store.db import make_engine, make_session_factory, session_scope, upgrade
from workers.demo_agencies import register_agencies, write_feeds_file
from workers.demo_receivers import HttpReceiver, Mailbox, MqttEar, free_port, port_open
from workers.demo_summary import print_agencies, write_event_reports
from workers.settings import Settings

RAIN_PROBABILITY_THRESHOLD_MM = 50.0
"""The demo's rainfall question: how likely is 50 mm in 24 h (the 'heavy' class)?"""
STEP_TIMEOUT_S = 90.0
DEMO_SECRET = "tocsin-demo-webhook-secret"  # local receivers only; never a deployment's


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One feed file the demo drops into a watched folder."""

    name: str
    feed_id: str
    file: str


SCRIPT = (
    DemoStep("flood forecast, run 1", "river-forecast", "flood_depth_run1.tif"),
    DemoStep("flood forecast, run 2", "river-forecast", "flood_depth_run2.tif"),
    DemoStep("flood forecast, run 3", "river-forecast", "flood_depth_run3.tif"),
    DemoStep("rainfall ensemble", "rain-ensemble", "rain_forecast.nc"),
    DemoStep("earthquake ShakeMap", "shakemap", "shakemap_grid.xml"),
)


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo made: the reports of each event and what each receiver got."""

    reports: tuple[Path, ...]
    webhooks: int
    mails: int
    sms: int
    mqtt: int | None
    cap_feeds: tuple[Path, ...]


def run_demo(out: Path, *, console: Console, rebuild: bool = False) -> DemoResult:
    """Run the live demo under ``out``; its store and files are made afresh each time."""
    region_dir = out / "region"
    _sample_region(region_dir, console, rebuild)
    live = out / "live"
    shutil.rmtree(live, ignore_errors=True)
    live.mkdir(parents=True)
    http = HttpReceiver(lambda agency: webhook_secret_for(DEMO_SECRET.encode(), agency)).start()
    mailbox = Mailbox()
    from aiosmtpd.controller import Controller

    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    mqtt_root = f"tocsin-demo/{os.getpid()}"
    ear = MqttEar("127.0.0.1", 1883, mqtt_root) if port_open("127.0.0.1", 1883) else None
    settings = _settings(live, http, smtp_port, mqtt=ear is not None)
    try:
        write_feeds_file(settings.feeds_config, region_dir / "region.toml", live / "incoming",
                         rain_threshold_mm=RAIN_PROBABILITY_THRESHOLD_MM)
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        with session_scope(sessions) as session:
            register_agencies(session, region_dir / "region.toml", http.base_url,
                              mqtt_root if ear else None)
        console.print(f"Agencies registered; receivers on {http.base_url} (webhooks, SMS "
                      f"gateway), 127.0.0.1:{smtp_port} (mail)"
                      + (", MQTT 127.0.0.1:1883" if ear else " (no MQTT broker here)"))
        _play(settings, sessions, region_dir / "feeds", live, console)
        console.rule("[bold]What each agency received[/bold]")
        print_agencies(console, sessions, http.received, mailbox.received,
                       ear.received if ear else None)
        reports = write_event_reports(sessions, region_dir / "region.toml",
                                      live / "feeds.toml", out / "events", console)
        engine.dispose()
    finally:
        smtp.stop()
        http.stop()
        if ear is not None:
            ear.clear()
    feeds = tuple(sorted((live / "data" / "cap-feed").glob("*.atom")))
    console.rule("[bold]done[/bold]")
    for path in feeds:
        console.print(f"CAP feed: {path}")
    return DemoResult(tuple(reports), sum(r.channel == "webhook" for r in http.received.values()),
                      len(mailbox.received), sum(r.channel == "sms"
                                                 for r in http.received.values()),
                      len(ear.received) if ear else None, feeds)


def _sample_region(region_dir: Path, console: Console, rebuild: bool) -> None:
    """Build the sample region once (deterministic: the same seed gives the same files)."""
    if rebuild or not (region_dir / "region.toml").exists():
        with console.status("Building the sample region and its hazard feeds..."):
            build_sample_region(region_dir)
    console.print(f"Sample region: {region_dir / 'region.toml'}")


def _settings(live: Path, http: HttpReceiver, smtp_port: int, *, mqtt: bool) -> Settings:
    return Settings(
        data_dir=live / "data", database_url=f"sqlite:///{(live / 'tocsin.db').resolve()}",
        broker_url="", feeds_config=live / "feeds.toml", feeds_tick_s=1.0,
        dispatch_sweep_interval_s=2.0, dispatch_retry_base_s=1.0, dispatch_retry_max_s=5.0,
        webhook_secret=DEMO_SECRET, webhook_allow_hosts=("127.0.0.1",),
        sms_gateway_url=f"{http.base_url}/sms", sms_allow_hosts=("127.0.0.1",),
        smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none",
        smtp_from="Tocsin demo <alerts@tocsin-demo.invalid>",
        mqtt_host="127.0.0.1" if mqtt else "", languages=("en", "fr"),
    )


def _env(settings: Settings) -> dict[str, str]:
    """The demo's settings as the worker processes read them (TOCSIN_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    values = settings.model_dump()
    for name, value in values.items():
        if value is None or value == "":
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, tuple):
            value = ",".join(value)
        env[f"TOCSIN_{name.upper()}"] = str(value.value if hasattr(value, "value") else value)
    return env


def _play(settings: Settings, sessions, feeds_dir: Path, live: Path,  # noqa: ANN001
          console: Console) -> None:
    """Start the workers, drop each scripted file, wait until it is assessed and delivered."""
    from workers.demo_summary import describe_step, step_done

    log_path = live / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--beat", "--concurrency", "2",
             "--loglevel", "WARNING"], env=_env(settings), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        console.print("Live workers and beat started (local broker, SQLite): "
                      f"log in {log_path}")
        for step in SCRIPT:
            target = live / "incoming" / step.feed_id / step.file
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(feeds_dir / step.file, partial)
            os.replace(partial, target)  # written atomically, as a producer would
            checksum = file_checksum(target)
            deadline = time.monotonic() + STEP_TIMEOUT_S
            with console.status(f"{step.name}: waiting for the workers..."):
                while not step_done(sessions, step.feed_id, checksum):
                    if worker.poll() is not None or time.monotonic() > deadline:
                        tail = log_path.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"the workers did not finish {step.name} "
                                           f"(log {log_path}):\n{tail}")
                    time.sleep(0.3)
            console.print(describe_step(sessions, step.name, step.feed_id, checksum),
                          highlight=False)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
