"""Structured logs: one JSON object per line, with the ids the code passes in ``extra=``.

The dispatch code logs ``log.info("delivered", extra={"delivery": key, "alert": identifier,
"channel": kind})``; :class:`JsonLineFormatter` writes every such field next to the time
(ISO-8601 UTC), level, logger and message, so a log search for an alert or event id finds
every line about it across workers. :func:`configure_logging` installs the handler on the
root logger (once: calling it again replaces it), and :func:`install_celery_logging` makes
every Celery worker and beat process use it instead of Celery's own handlers.
"""

from __future__ import annotations

import json as jsonlib
import logging
from datetime import UTC, datetime
from typing import IO, Any

HANDLER_NAME = "tocsin"
"""Name of the root handler :func:`configure_logging` installs (and replaces)."""

_CELERY_RECEIVER_UID = "tocsin.logs.setup_logging"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields the caller passed with ``extra=``, in the order given.

    Args:
        record: the log record.

    Returns:
        Field name to value.
    """
    return {key: value for key, value in record.__dict__.items()
            if key not in _RECORD_ATTRIBUTES}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extras, the exception.

    The four fixed keys win over an ``extra=`` field of the same name, so every line can be
    parsed the same way. Values JSON cannot hold are written as their ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside)."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            # The text is cached on the record, as logging.Formatter does.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger, message, then the extras as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The standard line with the ``extra=`` fields appended."""
        text = super().formatMessage(record)
        fields = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        return f"{text} [{fields}]" if fields else text


def configure_logging(level: str = "INFO", *, json: bool = True,
                      stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream``, as JSON lines or text.

    Idempotent: the handler it installed before is replaced, never added to, so calling it
    in every process (and again in Celery's pool children) writes each record once.

    Args:
        level: lowest level logged (``DEBUG``, ``INFO``, ``WARNING``...).
        json: JSON lines (for log collectors); False: a plain line for people.
        stream: where to write; default standard error.

    Returns:
        The handler installed on the root logger.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream)
    handler.name = HANDLER_NAME
    handler.setFormatter(JsonLineFormatter() if json else TextFormatter())
    root.addHandler(handler)
    return handler


def install_celery_logging(app: Any, level: str = "INFO", json: bool = True) -> None:
    """Make Celery processes log through :func:`configure_logging`, not their own handlers.

    Celery configures logging itself unless a receiver is connected to its
    ``setup_logging`` signal; it sends that signal in the worker, in each prefork pool
    child and in beat, so the receiver runs in every process. Calling this again replaces
    the receiver (the latest level and format win).

    Args:
        app: the Celery application (its root-logger hijacking is switched off too).
        level: lowest level logged.
        json: JSON lines; False: plain text.
    """
    from celery.signals import setup_logging

    def _setup(**_kwargs: Any) -> None:
        configure_logging(level, json=json)

    app.conf.worker_hijack_root_logger = False
    setup_logging.disconnect(dispatch_uid=_CELERY_RECEIVER_UID)
    # weak=False: the receiver is a closure nobody else holds; a weak reference would let
    # it be collected and Celery would fall back to its own handlers.
    setup_logging.connect(_setup, weak=False, dispatch_uid=_CELERY_RECEIVER_UID)
