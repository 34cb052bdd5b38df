"""Prometheus metrics of a Tocsin deployment, computed from the store at scrape time.

The workers run as several processes on several machines, so an in-process counter would
see only its own part of the work. The store is the source of truth: every scrape asks it
how many items each feed gave, how many alerts and deliveries there are, and how long
assessments and deliveries took. A scrape is a handful of ``GROUP BY`` queries in one
transaction (one consistent snapshot); histograms are bucketed by the database with
``CASE`` sums, so no row is loaded into Python.

A scrape while the database is unreachable yields ``tocsin_store_up 0`` and nothing else,
never an error page: an alert on ``tocsin_store_up == 0`` then says what is wrong.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import ColumnElement, Select, case, extract, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from store.feed_models import FEED_ITEM_STATUS_VALUES, FeedItemRow, FeedRow
from store.models import (
    DELIVERY_STATUS_VALUES,
    LEVEL_VALUES,
    AlertRow,
    DeliveryRow,
)

log = logging.getLogger("tocsin.metrics")

BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
"""Upper bounds of the duration histograms: from a quick assessment to an hour's delay."""

ISSUED_MSG_TYPES = ("Alert", "Update", "Cancel")
"""The CAP message types Tocsin issues (shown at 0 before the first one)."""

UNKNOWN = "unknown"
"""Label value for a missing level (rows written before deliveries carried one)."""

DEFAULT_PORT = 9108


class StoreCollector:
    """A prometheus_client collector reading the store on every scrape.

    Register it on a fresh :class:`~prometheus_client.CollectorRegistry` (see
    :func:`build_registry`), never on the global default one, so tests and several
    deployments in one process stay apart.

    Args:
        sessions: the store's session factory.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, or only ``tocsin_store_up 0`` if the store fails.

        Yields:
            The metric families of one consistent snapshot of the store.
        """
        try:
            with self._sessions() as session, session.begin():
                families = list(_store_families(session))
        except SQLAlchemyError as exc:
            log.warning("metrics scrape: store unreachable", extra={"error": str(exc)})
            yield _store_up(0)
            return
        yield _store_up(1)
        yield from families


def build_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """A fresh registry holding only a :class:`StoreCollector` on ``sessions``.

    Args:
        sessions: the store's session factory.

    Returns:
        The registry (serve it with prometheus_client's WSGI or ASGI apps too).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(sessions))
    return registry


def serve_metrics(
    sessions: sessionmaker[Session], *, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the store's metrics over HTTP (``/metrics``) from a daemon thread.

    Args:
        sessions: the store's session factory.
        host: address to listen on; the default keeps the metrics on this machine.
        port: TCP port; 0 picks a free one (read it back from ``server.server_port``).

    Returns:
        The server and its thread; stop with ``server.shutdown(); server.server_close()``.
    """
    return start_http_server(port, addr=host, registry=build_registry(sessions))


def _store_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily("tocsin_store_up",
                             "1 if the store answered this scrape, 0 if it could not be read.",
                             value=value)


def _store_families(session: Session) -> Iterator[Metric]:
    """Every family but ``tocsin_store_up``, read in ``session``."""
    dialect = session.get_bind().dialect.name
    yield _feed_items(session)
    yield from _feed_gauges(session)
    yield _alerts(session)
    yield _deliveries(session)
    yield _histogram(
        session, "tocsin_assessment_seconds",
        "Time taken to assess one feed item (overlay, prioritise, match), by feed.",
        ["feed"], select(FeedItemRow.feed_id, FeedItemRow.assess_s.label("d")))
    delivered = _seconds_between(dialect, DeliveryRow.delivered_at, DeliveryRow.created_at)
    yield _histogram(
        session, "tocsin_delivery_latency_seconds",
        "From a delivery planned to it acknowledged by the channel, by channel and level.",
        ["channel", "level"],
        select(DeliveryRow.channel_kind, DeliveryRow.level, delivered.label("d"))
        .where(DeliveryRow.status == "ack"))
    end_to_end = _seconds_between(dialect, DeliveryRow.delivered_at, FeedItemRow.fetched_at)
    # Only alert deliveries: digests and escalations wait on purpose (the subscriber's
    # policy), which would hide the pipeline's own latency.
    yield _histogram(
        session, "tocsin_end_to_end_seconds",
        "From the feed item fetched to its alert acknowledged by a channel, by channel and "
        "level.",
        ["channel", "level"],
        select(DeliveryRow.channel_kind, DeliveryRow.level, end_to_end.label("d"))
        .join(FeedItemRow, FeedItemRow.alert_identifier == DeliveryRow.alert_identifier)
        .where(DeliveryRow.status == "ack", DeliveryRow.kind == "alert"))


def _seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    """SQL for ``later - earlier`` in seconds, on PostgreSQL or SQLite."""
    if dialect == "postgresql":
        return extract("epoch", later - earlier)
    # SQLite holds naive UTC text; julianday() is a double of days, some 50 µs coarse at
    # today's dates: rounding to the millisecond puts a duration of exactly a bucket bound
    # in that bucket, as PostgreSQL's exact microseconds do.
    return func.round((func.julianday(later) - func.julianday(earlier)) * 86400.0, 3)


def _feed_items(session: Session) -> CounterMetricFamily:
    """Items each feed gave, by what became of them (every status shown, 0 when none)."""
    family = CounterMetricFamily(
        "tocsin_feed_items",
        "Feed items ingested, by feed and by what became of them (an item moves from "
        "fetched/assessing to assessed, skipped or quarantined).",
        labels=["feed", "status"])
    counts = {(feed, status): n for feed, status, n in session.execute(
        select(FeedItemRow.feed_id, FeedItemRow.status, func.count())
        .group_by(FeedItemRow.feed_id, FeedItemRow.status))}
    feeds = set(session.scalars(select(FeedRow.feed_id))) | {feed for feed, _ in counts}
    for feed in sorted(feeds):
        for status in _with_extra(FEED_ITEM_STATUS_VALUES, (s for f, s in counts if f == feed)):
            family.add_metric([feed, status], counts.get((feed, status), 0))
    return family


def _feed_gauges(session: Session) -> Iterator[GaugeMetricFamily]:
    """Health of each configured feed: last success, lag and failures in a row."""
    success = GaugeMetricFamily(
        "tocsin_feed_last_success_timestamp_seconds",
        "Unix time of the feed's last successful poll (absent before the first).",
        labels=["feed"])
    lag = GaugeMetricFamily(
        "tocsin_feed_lag_seconds",
        "Delay between the issue time of the feed's latest item and its fetch.",
        labels=["feed"])
    failures = GaugeMetricFamily(
        "tocsin_feed_consecutive_failures",
        "Polls of the feed that failed since its last success.", labels=["feed"])
    for row in session.scalars(select(FeedRow).order_by(FeedRow.feed_id)):
        if row.last_success_at is not None:
            success.add_metric([row.feed_id], row.last_success_at.timestamp())
        if row.last_lag_s is not None:
            lag.add_metric([row.feed_id], row.last_lag_s)
        failures.add_metric([row.feed_id], row.consecutive_failures or 0)
    yield from (success, lag, failures)


def _alerts(session: Session) -> CounterMetricFamily:
    """CAP messages issued, by level and message type (0 for the pairs never issued)."""
    family = CounterMetricFamily("tocsin_alerts", "CAP messages issued, by level and msgType.",
                                 labels=["level", "msg_type"])
    counts = {(level, msg_type): n for level, msg_type, n in session.execute(
        select(AlertRow.level, AlertRow.msg_type, func.count())
        .group_by(AlertRow.level, AlertRow.msg_type))}
    levels = _with_extra(LEVEL_VALUES, (level for level, _ in counts))
    msg_types = _with_extra(ISSUED_MSG_TYPES, (msg_type for _, msg_type in counts))
    for level in levels:
        for msg_type in msg_types:
            family.add_metric([level, msg_type], counts.get((level, msg_type), 0))
    return family


def _deliveries(session: Session) -> CounterMetricFamily:
    """Outbox rows by channel, status and kind: each status shown for each pair seen."""
    family = CounterMetricFamily(
        "tocsin_deliveries",
        "Deliveries in the outbox, by channel, current status and kind (alert, digest, "
        "escalation). A delivery moves between statuses; their sum only grows.",
        labels=["channel", "status", "kind"])
    counts = {(channel, status, kind): n for channel, status, kind, n in session.execute(
        select(DeliveryRow.channel_kind, DeliveryRow.status, DeliveryRow.kind, func.count())
        .group_by(DeliveryRow.channel_kind, DeliveryRow.status, DeliveryRow.kind))}
    for channel, kind in sorted({(c, k) for c, _, k in counts}):
        seen = (s for c, s, k in counts if (c, k) == (channel, kind))
        for status in _with_extra(DELIVERY_STATUS_VALUES, seen):
            family.add_metric([channel, status, kind], counts.get((channel, status, kind), 0))
    return family


def _histogram(session: Session, name: str, documentation: str, labels: list[str],
               durations: Select[*tuple[Any, ...]]) -> HistogramMetricFamily:
    """A histogram of the ``d`` column of ``durations`` grouped by its other columns.

    The database does the bucketing: one row per label set with the count at or under
    each bound (cumulative already, as Prometheus wants), the count and the sum.
    """
    sub = durations.subquery()
    keys = [column for column in sub.c if column.name != "d"]
    bucket_counts = [func.sum(case((sub.c.d <= bound, 1), else_=0)) for bound in BUCKETS_S]
    stmt = (select(*keys, func.count(), func.sum(sub.c.d), *bucket_counts)
            .where(sub.c.d.is_not(None)).group_by(*keys).order_by(*keys))
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for row in session.execute(stmt):
        values = [UNKNOWN if value is None else str(value) for value in row[:len(keys)]]
        total, seconds, *cumulative = row[len(keys):]
        buckets = [(_bound_text(bound), int(n)) for bound, n in zip(BUCKETS_S, cumulative,
                                                                   strict=True)]
        family.add_metric(values, [*buckets, ("+Inf", int(total))], float(seconds))
    return family


def _bound_text(bound: float) -> str:
    """The ``le`` label of a bucket bound, as Prometheus clients write it (``1.0``)."""
    return repr(float(bound))


def _with_extra(known: Sequence[str], seen: Iterable[str]) -> list[str]:
    """The known values in their order, then any other value seen (sorted)."""
    return [*known, *sorted(set(seen) - set(known))]
