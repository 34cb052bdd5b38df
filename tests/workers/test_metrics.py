"""The Prometheus metrics, scraped over HTTP from a store filled by hand.

Every figure below is worked out on paper from the few rows the fixture writes:

- feeds ``flood`` (last success T0, lag 42.5 s, no failures) and ``quake`` (never succeeded,
  3 failures); flood items: two assessed (0.5 s and 7 s), one skipped, one quarantined;
  quake: one fetched.
- alerts: A1 red Alert, A2 red Update, A3 orange Alert.
- deliveries: A1 webhook ack after 0.5 s, A1 email ack after 12 s, A1 sms error, A2
  webhook pending, A3 email held, and an email digest of A3 ack'd 1.25 s after creation.
- A1 came from the flood item fetched 29.5 s before T0: end to end, 30 s by webhook and
  41.5 s by email; the digest is not an alert delivery and counts in no end-to-end figure.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker
from tocsin_testing.records import T0
from typer.testing import CliRunner

from alerts.model import ChannelAddress, ChannelKind, Level, MsgType
from store.db import make_engine, make_session_factory, session_scope
from store.feed_models import FeedItemRow, FeedRow
from store.models import DeliveryRow, DeliveryStatus, PlannedDelivery
from workers.cli import metrics_cmd
from workers.cli.main import app
from workers.metrics import BUCKETS_S, _seconds_between, serve_metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Scrape = Callable[[], Samples]

WEBHOOK = ChannelAddress(ChannelKind.WEBHOOK, "https://agency.example/hook")
EMAIL = ChannelAddress(ChannelKind.EMAIL, "duty@agency.example")
SMS = ChannelAddress(ChannelKind.SMS, "+41790000000")


def _parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def scrape(sessions: sessionmaker[Session]) -> Iterator[Scrape]:
    server, thread = serve_metrics(sessions, host="127.0.0.1", port=0)
    yield lambda: _parse(_get(server.server_port))
    server.shutdown()
    server.server_close()
    thread.join()


def _item(feed: str, n: int, status: str, *, fetched_at: datetime = T0,
          assess_s: float | None = None, alert: str | None = None) -> FeedItemRow:
    return FeedItemRow(feed_id=feed, checksum=f"sha256:{feed}{n}", archive_path=f"{feed}/{n}",
                       source_uri=f"file:///{feed}/{n}", original_name=f"{n}.tif",
                       fetched_at=fetched_at, status=status, assess_s=assess_s,
                       alert_identifier=alert)


def _set(session: Session, key: str, **columns: object) -> None:
    session.execute(update(DeliveryRow).where(DeliveryRow.idempotency_key == key)
                    .values(**columns))


@pytest.fixture
def filled(sessions: sessionmaker[Session], store_alert: Callable[..., list[str]]) -> None:
    """The store described in the module docstring."""
    a1 = store_alert([PlannedDelivery("sub-a", WEBHOOK), PlannedDelivery("sub-b", EMAIL),
                      PlannedDelivery("sub-c", SMS)], event_id="ev-1", sequence=1)
    a2 = store_alert([PlannedDelivery("sub-a", WEBHOOK)], event_id="ev-1", sequence=2,
                     msg_type=MsgType.UPDATE, sent=T0 + timedelta(minutes=5))
    a3 = store_alert([PlannedDelivery("sub-b", EMAIL, status=DeliveryStatus.HELD)],
                     event_id="ev-2", level=Level.ORANGE)
    del a2
    with session_scope(sessions) as session:
        a1_id, a3_id = (session.scalar(select(DeliveryRow.alert_identifier).where(
            DeliveryRow.idempotency_key == keys[0])) for keys in (a1, a3))
        _set(session, a1[0], status="ack", created_at=T0,
             delivered_at=T0 + timedelta(seconds=0.5))
        _set(session, a1[1], status="ack", created_at=T0, delivered_at=T0 + timedelta(seconds=12))
        _set(session, a1[2], status="error", created_at=T0)
        session.add(DeliveryRow(
            idempotency_key="digest-1", alert_identifier=a3_id, subscription_id="sub-b",
            channel_kind="email", address=EMAIL.address, status="ack", attempts=1,
            status_history=[], kind="digest", level="orange",
            created_at=T0 + timedelta(seconds=60),
            delivered_at=T0 + timedelta(seconds=61.25)))
        session.add_all([
            FeedRow(feed_id="flood", config_sha256="0" * 64, state={}, last_success_at=T0,
                    last_lag_s=42.5, consecutive_failures=0),
            FeedRow(feed_id="quake", config_sha256="1" * 64, state={}, consecutive_failures=3,
                    last_error="timed out"),
            _item("flood", 1, "assessed", fetched_at=T0 - timedelta(seconds=29.5),
                  assess_s=0.5, alert=a1_id),
            _item("flood", 2, "assessed", assess_s=7.0),
            _item("flood", 3, "skipped"),
            _item("flood", 4, "quarantined"),
            _item("quake", 1, "fetched"),
        ])


def _buckets(samples: Samples, name: str, **labels: str) -> list[float]:
    return [value(samples, f"{name}_bucket", **labels, le=le)
            for le in [repr(float(b)) for b in BUCKETS_S] + ["+Inf"]]


def _cumulative(*durations_s: float) -> list[float]:
    """Cumulative bucket counts of ``durations_s``, the bounds inclusive."""
    return [sum(1 for d in durations_s if d <= bound) for bound in (*BUCKETS_S, float("inf"))]


def test_an_empty_store_is_up_and_shows_every_alert_pair_at_zero(scrape: Scrape) -> None:
    samples = scrape()
    assert value(samples, "tocsin_store_up") == 1
    alerts = {k: v for k, v in samples.items() if k[0] == "tocsin_alerts_total"}
    assert len(alerts) == 4 * 3 and set(alerts.values()) == {0}
    assert not any(n.startswith(("tocsin_deliveries", "tocsin_feed")) for n in names(samples))


@pytest.mark.usefixtures("filled")
def test_feed_items_are_counted_per_feed_and_status_with_zeros(scrape: Scrape) -> None:
    samples = scrape()
    expected = {("flood", "fetched"): 0, ("flood", "assessing"): 0, ("flood", "assessed"): 2,
                ("flood", "skipped"): 1, ("flood", "quarantined"): 1,
                ("quake", "fetched"): 1, ("quake", "assessing"): 0, ("quake", "assessed"): 0,
                ("quake", "skipped"): 0, ("quake", "quarantined"): 0}
    got = {(dict(labels)["feed"], dict(labels)["status"]): v
           for (name, labels), v in samples.items() if name == "tocsin_feed_items_total"}
    assert got == expected


@pytest.mark.usefixtures("filled")
def test_feed_health_gauges_show_success_time_lag_and_failures(scrape: Scrape) -> None:
    samples = scrape()
    assert value(samples, "tocsin_feed_last_success_timestamp_seconds", feed="flood") == \
        T0.timestamp()
    assert value(samples, "tocsin_feed_lag_seconds", feed="flood") == 42.5
    assert value(samples, "tocsin_feed_consecutive_failures", feed="flood") == 0
    assert value(samples, "tocsin_feed_consecutive_failures", feed="quake") == 3
    # A feed that never succeeded has no success time and no lag, rather than a fake 0.
    assert ("tocsin_feed_last_success_timestamp_seconds",
            frozenset({("feed", "quake")})) not in samples
    assert ("tocsin_feed_lag_seconds", frozenset({("feed", "quake")})) not in samples


@pytest.mark.usefixtures("filled")
def test_alerts_are_counted_by_level_and_msg_type(scrape: Scrape) -> None:
    samples = scrape()
    assert value(samples, "tocsin_alerts_total", level="red", msg_type="Alert") == 1
    assert value(samples, "tocsin_alerts_total", level="red", msg_type="Update") == 1
    assert value(samples, "tocsin_alerts_total", level="orange", msg_type="Alert") == 1
    assert value(samples, "tocsin_alerts_total", level="green", msg_type="Cancel") == 0
    assert sum(v for (n, _), v in samples.items() if n == "tocsin_alerts_total") == 3


@pytest.mark.usefixtures("filled")
def test_deliveries_are_counted_by_channel_status_and_kind(scrape: Scrape) -> None:
    samples = scrape()
    got = {tuple(dict(labels)[k] for k in ("channel", "kind", "status")): v
           for (name, labels), v in samples.items() if name == "tocsin_deliveries_total"}
    nonzero = {k: v for k, v in got.items() if v}
    assert nonzero == {("webhook", "alert", "ack"): 1, ("webhook", "alert", "pending"): 1,
                       ("email", "alert", "ack"): 1, ("email", "alert", "held"): 1,
                       ("email", "digest", "ack"): 1, ("sms", "alert", "error"): 1}
    # Every status is shown for each channel and kind seen, so a first error is a change
    # from 0 and not a new series.
    assert len(got) == 4 * 7
    assert got[("sms", "alert", "superseded")] == 0


@pytest.mark.usefixtures("filled")
def test_assessment_time_is_a_histogram_per_feed(scrape: Scrape) -> None:
    samples = scrape()
    assert _buckets(samples, "tocsin_assessment_seconds", feed="flood") == _cumulative(0.5, 7)
    assert value(samples, "tocsin_assessment_seconds_count", feed="flood") == 2
    assert value(samples, "tocsin_assessment_seconds_sum", feed="flood") == 7.5
    # The quake item was never assessed: no series rather than an empty one.
    assert ("tocsin_assessment_seconds_count", frozenset({("feed", "quake")})) not in samples


@pytest.mark.usefixtures("filled")
def test_delivery_latency_counts_only_acknowledged_deliveries(scrape: Scrape) -> None:
    samples = scrape()
    webhook = {"channel": "webhook", "level": "red"}
    # 0.5 s exactly: the bounds are inclusive, and SQLite's julianday rounding keeps it so.
    assert _buckets(samples, "tocsin_delivery_latency_seconds", **webhook) == _cumulative(0.5)
    assert _buckets(samples, "tocsin_delivery_latency_seconds", **webhook)[:4] == [0, 0, 0, 1]
    assert value(samples, "tocsin_delivery_latency_seconds_sum", **webhook) == 0.5
    email_red = {"channel": "email", "level": "red"}
    assert _buckets(samples, "tocsin_delivery_latency_seconds", **email_red) == _cumulative(12)
    assert value(samples, "tocsin_delivery_latency_seconds_sum", **email_red) == 12
    email_orange = {"channel": "email", "level": "orange"}  # the digest
    assert value(samples, "tocsin_delivery_latency_seconds_count", **email_orange) == 1
    assert value(samples, "tocsin_delivery_latency_seconds_sum", **email_orange) == 1.25
    counts = [v for (n, _), v in samples.items() if n == "tocsin_delivery_latency_seconds_count"]
    assert sum(counts) == 3  # the error, pending and held deliveries are not in it


@pytest.mark.usefixtures("filled")
def test_end_to_end_runs_from_the_feed_fetch_to_the_alert_delivered(scrape: Scrape) -> None:
    samples = scrape()
    webhook = {"channel": "webhook", "level": "red"}
    assert _buckets(samples, "tocsin_end_to_end_seconds", **webhook) == _cumulative(30)
    assert value(samples, "tocsin_end_to_end_seconds_sum", **webhook) == 30
    email = {"channel": "email", "level": "red"}
    assert _buckets(samples, "tocsin_end_to_end_seconds", **email) == _cumulative(41.5)
    assert value(samples, "tocsin_end_to_end_seconds_sum", **email) == 41.5
    counts = [v for (n, _), v in samples.items() if n == "tocsin_end_to_end_seconds_count"]
    assert sum(counts) == 2  # no digest, nothing undelivered, nothing without a feed item


def test_an_unreachable_store_scrapes_as_down_and_nothing_else(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'tocsin.db'}")
    server, thread = serve_metrics(make_session_factory(engine), host="127.0.0.1", port=0)
    try:
        samples = _parse(_get(server.server_port))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        engine.dispose()
    assert samples == {("tocsin_store_up", frozenset()): 0}


def test_a_store_without_the_schema_scrapes_as_down(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    server, thread = serve_metrics(make_session_factory(engine), host="127.0.0.1", port=0)
    try:
        samples = _parse(_get(server.server_port))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        engine.dispose()
    assert samples == {("tocsin_store_up", frozenset()): 0}


def test_durations_on_postgresql_use_extract_epoch() -> None:
    expr = _seconds_between("postgresql", DeliveryRow.delivered_at, DeliveryRow.created_at)
    sql = str(expr.compile(dialect=postgresql.dialect())).upper()
    assert sql == "EXTRACT(EPOCH FROM DELIVERIES.DELIVERED_AT - DELIVERIES.CREATED_AT)"


runner = CliRunner()


def _cli_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    return {"TOCSIN_DATA_DIR": str(tmp_path), "TOCSIN_DATABASE_URL": db_url}


def test_the_metrics_command_serves_until_interrupted_and_exits_0(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scraped: list[str] = []

    def scrape_then_interrupt(server: object, _thread: object) -> None:
        scraped.append(_get(server.server_port))  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(metrics_cmd, "wait_until_interrupted", scrape_then_interrupt)
    result = runner.invoke(app, ["metrics", "--host", "127.0.0.1", "--port", "0"],
                           env=_cli_env(tmp_path, db_url))
    assert result.exit_code == 0, result.output
    assert "Serving metrics on http://127.0.0.1:" in result.output
    assert value(_parse(scraped[0]), "tocsin_store_up") == 1


def test_the_metrics_command_exits_1_when_the_port_is_taken(tmp_path: Path, db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["metrics", "--port", str(port)],
                               env=_cli_env(tmp_path, db_url))
    assert result.exit_code == 1
    assert "cannot listen" in result.output
