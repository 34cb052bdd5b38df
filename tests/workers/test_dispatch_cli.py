"""The dispatch commands and the Celery wiring: outbox listing, re-drive, ack, secrets, tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest
from tocsin_testing import receiver as rx
from typer.testing import CliRunner

from alerts.channels.webhook import webhook_secret_for
from alerts.model import Agency, ChannelAddress, ChannelKind, Level
from store import repo
from store.db import session_scope
from store.models import DeliveryStatus, PlannedDelivery
from workers.celery_app import make_celery
from workers.cli.main import app
from workers.dispatch import DeliveryOutcome
from workers.names import QueueNames, TaskNames, message_priority, queue_for
from workers.settings import Settings
from workers.sweep import SweepReport

runner = CliRunner()
NOW = datetime.now(UTC)  # the commands read the real clock: alerts must not have expired






@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str, sessions) -> Path:
    monkeypatch.setenv("TOCSIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOCSIN_DATABASE_URL", db_url)
    monkeypatch.setenv("TOCSIN_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("TOCSIN_WEBHOOK_SECRET", "cli-test-secret")
    with session_scope(sessions) as session:
        repo.add_agency(session, Agency("ag-1", "Valley"))
    return tmp_path


def _run(args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return result.output


def _hook(url: str) -> PlannedDelivery:
    return PlannedDelivery("sub-1", ChannelAddress(ChannelKind.WEBHOOK, url), agency_id="ag-1",
                           language="en")


def test_dispatch_delivers_and_the_outbox_listing_shows_the_receipt(env, store_alert) -> None:
    with rx.running() as receiver:
        (key,) = store_alert([_hook(receiver.url)], sent=NOW)
        assert "1 delivered" in _run(["dispatch"])
    assert list(receiver.processed) == [key]
    listing = _run(["deliveries", "list"])
    assert key[:12] in listing and "ack" in listing and "200" in listing
    assert "1 ack" in listing


def test_a_permanent_failure_exits_5_is_listed_with_its_reason_and_can_be_redriven(
        env, store_alert, sessions) -> None:
    with rx.running() as receiver:
        receiver.script = [410]
        (key,) = store_alert([_hook(receiver.url)], sent=NOW)
        out = _run(["dispatch"], code=5)
        assert "failed" in out and "410" in out
        errors = _run(["deliveries", "list", "--status", "error"])
        assert key[:12] in errors and "410" in errors
        assert "1 deliveries back" in _run(["deliveries", "retry", key[:12]])
        _run(["dispatch"])
    with session_scope(sessions) as session:
        assert repo.list_deliveries(session)[0].status is DeliveryStatus.ACK


def test_retry_refuses_a_key_that_matches_no_failed_delivery(env, store_alert) -> None:
    store_alert([_hook("https://203.0.113.9/h")], sent=NOW)
    assert "matches 0 failed deliveries" in _run(["deliveries", "retry", "nope"], code=2)
    assert "give delivery keys" in _run(["deliveries", "retry"], code=2)
    assert "--status" in _run(["deliveries", "list", "--status", "lost"], code=2)


def test_an_alert_is_acknowledged_once_and_an_unknown_one_is_refused(env, store_alert) -> None:
    store_alert([_hook("https://203.0.113.9/h")], sent=NOW)
    assert "acknowledged by ag-1" in _run(["alerts", "ack", "tocsin-ev-1-001", "--agency",
                                           "ag-1"])
    assert "already acknowledged" in _run(["alerts", "ack", "tocsin-ev-1-001", "--agency",
                                           "ag-1"])
    assert "no alert" in _run(["alerts", "ack", "tocsin-nope", "--agency", "ag-1"], code=1)
    assert "no agency" in _run(["alerts", "ack", "tocsin-ev-1-001", "--agency", "x"], code=1)


def test_an_agency_sees_its_own_webhook_secret(env) -> None:
    out = _run(["agency", "secret", "ag-1"]).strip()
    assert out == webhook_secret_for(b"cli-test-secret", "ag-1")
    assert out != webhook_secret_for(b"cli-test-secret", "ag-2")


def test_without_a_configured_secret_one_is_generated_once_and_kept(env, monkeypatch) -> None:
    monkeypatch.setenv("TOCSIN_WEBHOOK_SECRET", "")
    first = _run(["agency", "secret", "ag-1"])
    assert first == _run(["agency", "secret", "ag-1"])
    secret_file = env / "data" / "webhook-secret"
    assert secret_file.stat().st_mode & 0o077 == 0


def test_levels_have_their_own_queues_and_higher_levels_a_higher_priority() -> None:
    assert queue_for(Level.RED) == QueueNames.DISPATCH_RED
    assert queue_for(Level.ORANGE) == QueueNames.DISPATCH_ORANGE
    assert queue_for(Level.YELLOW) == queue_for(None) == QueueNames.DISPATCH_ROUTINE
    redis = [message_priority(lv, broker_url="redis://x") for lv in Level]
    amqp = [message_priority(lv, broker_url="amqp://x") for lv in Level]
    assert redis == sorted(redis, reverse=True)  # Redis: 0 is the highest priority
    assert amqp == sorted(amqp)  # AMQP: 9 is the highest


def test_the_celery_app_is_built_from_settings_with_every_queue_and_late_acks(
        tmp_path: Path) -> None:
    celery = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3"))
    assert {q.name for q in celery.conf.task_queues} == set(QueueNames.ALL)
    assert celery.conf.task_acks_late and celery.conf.task_reject_on_worker_lost
    assert celery.conf.worker_prefetch_multiplier == 1
    assert {TaskNames.DELIVER, TaskNames.SWEEP} <= set(celery.tasks)
    assert celery.conf.beat_schedule["sweep-outbox"]["task"] == TaskNames.SWEEP
    embedded = make_celery(Settings(data_dir=tmp_path))
    assert embedded.conf.broker_url == "filesystem://"
    assert (tmp_path / "broker" / "queue").is_dir()


def test_the_deliver_task_hands_retries_back_on_their_level_queue_with_the_backoff(
        tmp_path: Path) -> None:
    celery = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3"))
    task = celery.tasks[TaskNames.DELIVER]
    outcomes = [DeliveryOutcome("k1", "retry", "HTTP 503", retry_in_s=4.0),
                DeliveryOutcome("k2", "delivered", "HTTP 200"),
                DeliveryOutcome("k3", "waiting", "behind k0", retry_in_s=2.0)]
    with mock.patch("workers.tasks.deliver_batch", return_value=outcomes), \
            mock.patch("workers.tasks.build_context"), \
            mock.patch("workers.tasks.session_scope"), \
            mock.patch("workers.tasks.outbox.mark_enqueued") as marked, \
            mock.patch.object(celery, "send_task") as send:
        counts = task(keys=["k1", "k2", "k3"], level="red")
    assert counts == {"retry": 1, "delivered": 1, "waiting": 1}
    sent = {tuple(c.kwargs["kwargs"]["keys"]): c.kwargs for c in send.call_args_list}
    assert sent[("k1",)]["countdown"] == 4.0 and sent[("k3",)]["countdown"] == 2.0
    assert {c["queue"] for c in sent.values()} == {QueueNames.DISPATCH_RED}
    assert marked.call_count == 2  # the sweep will not hand them over a second time


def test_the_sweep_task_enqueues_every_due_delivery_on_its_level_queue(
        tmp_path: Path, store_alert, sessions) -> None:
    keys = store_alert([_hook("https://203.0.113.9/h")], level=Level.ORANGE, sent=NOW)
    with session_scope(sessions) as session:
        due = tuple(repo.list_deliveries(session))
    celery = make_celery(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3"))
    context = mock.MagicMock()
    context.policy.lease_s, context.policy.batch_size = 30.0, 50
    with mock.patch("workers.tasks.sweep", return_value=SweepReport(due, 0, 0)), \
            mock.patch("workers.tasks.build_context", return_value=context), \
            mock.patch.object(celery, "send_task") as send:
        assert celery.tasks[TaskNames.SWEEP]() == 1
    (call,) = send.call_args_list
    assert call.args[0] == TaskNames.DELIVER and call.kwargs["kwargs"]["keys"] == keys
    assert call.kwargs["queue"] == QueueNames.DISPATCH_ORANGE
