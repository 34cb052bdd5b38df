"""Structured logs: JSON lines with the ids passed in ``extra=``, and Celery using them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest
from celery import Celery
from celery.app.log import Logging
from celery.signals import setup_logging

from workers.logs import HANDLER_NAME, configure_logging, install_celery_logging


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.name == HANDLER_NAME]


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in _ours():
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    setup_logging.disconnect(dispatch_uid="tocsin.logs.setup_logging")


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_time_level_logger_message_and_extras() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("tocsin.dispatch").warning(
        "delivery will be retried %s", "soon",
        extra={"delivery": "k1", "alert": "tocsin-ev-1-001", "channel": "webhook",
               "error": "HTTP 503", "event": "ev-1"})
    [line] = _lines(stream)
    assert line == {"time": line["time"], "level": "WARNING", "logger": "tocsin.dispatch",
                    "message": "delivery will be retried soon", "delivery": "k1",
                    "alert": "tocsin-ev-1-001", "channel": "webhook", "error": "HTTP 503",
                    "event": "ev-1"}
    when = datetime.fromisoformat(str(line["time"]))
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0


def test_an_exception_is_written_with_its_traceback_in_the_same_line() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        raise ValueError("bad gateway answer")
    except ValueError:
        logging.getLogger("tocsin.sweep").exception("digest not made",
                                                    extra={"subscription": "sub-a"})
    assert len(stream.getvalue().splitlines()) == 1
    [line] = _lines(stream)
    assert line["level"] == "ERROR" and line["subscription"] == "sub-a"
    assert "Traceback" in str(line["exception"])
    assert "ValueError: bad gateway answer" in str(line["exception"])


def test_values_json_cannot_hold_are_written_as_text() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    logging.getLogger("tocsin").info("polled", extra={"at": datetime(2026, 5, 12, 6, 0)})
    assert _lines(stream)[0]["at"] == "2026-05-12 06:00:00"


def test_records_below_the_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", stream=stream)
    logging.getLogger("tocsin").info("quiet")
    logging.getLogger("tocsin").error("loud")
    assert [line["message"] for line in _lines(stream)] == ["loud"]


def test_configuring_twice_keeps_one_handler_and_writes_each_record_once() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    logging.getLogger("tocsin").info("once")
    assert len(_ours()) == 1
    assert first.getvalue() == ""
    assert [line["message"] for line in _lines(second)] == ["once"]


def test_the_text_format_is_one_readable_line_with_the_extras() -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=False, stream=stream)
    logging.getLogger("tocsin.dispatch").info("delivered",
                                              extra={"delivery": "k1", "alert": "a1"})
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert "INFO" in text and "tocsin.dispatch: delivered [delivery=k1 alert=a1]" in text


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging("LOUD")


def test_celery_uses_our_handler_instead_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery's setup marks logging done process-wide and writes three environment
    # variables: keep both from leaking into other tests.
    monkeypatch.setattr(Logging, "_setup", False)
    for name in ("_MP_FORK_LOGLEVEL_", "_MP_FORK_LOGFILE_", "_MP_FORK_LOGFORMAT_"):
        monkeypatch.setenv(name, "")
    app = Celery("tocsin-test", set_as_current=False)
    install_celery_logging(app, "WARNING", json=True)
    install_celery_logging(app, "INFO", json=True)  # again: replaces, not adds
    before = set(logging.getLogger().handlers)
    app.log.setup_logging_subsystem(loglevel="DEBUG")
    added = set(logging.getLogger().handlers) - before
    assert [h.name for h in added] == [HANDLER_NAME]
    assert logging.getLogger().level == logging.INFO
    assert app.conf.worker_hijack_root_logger is False
    ours = [key for key, _ in setup_logging.receivers if key[0] == "tocsin.logs.setup_logging"]
    assert len(ours) == 1
