"""Dispatch: deliver the outbox in batches, so that nothing is lost, reordered or sent twice.

Plain functions, run by the Celery tasks (``workers/tasks.py``), by ``tocsin dispatch`` and by
tests alike. The outbox is the source of truth, never the broker:

1. :func:`deliver_batch` checks each delivery's place in its event (an Update never
   overtakes the message before it on a channel; one that is only waiting for quiet hours or
   a digest is replaced instead), claims the due ones in one statement (a lease), commits,
   sends them concurrently outside any transaction, then records every outcome in one
   transaction, each only if its claim is still current. A retryable failure puts a row back
   to pending with a backoff; a permanent one (or the last attempt) fails it with the reason.
   A worker killed mid-send leaves a lapsed lease behind, and the same delivery, with the
   same idempotency key, is sent again later: receivers deduplicate by that key.
2. :func:`sweep` (``workers/sweep.py``) turns due digests into digest deliveries, creates due
   escalations, and lists everything pending and due, highest level first.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from alerts.cap_parse import parse_cap
from alerts.channels.base import AlertContent, ChannelRegistry, OutgoingMessage, Receipt
from alerts.delivery_rules import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_BASE_S,
    DEFAULT_RETRY_MAX_S,
    retry_delay_s,
)
from alerts.errors import DispatchError, PermanentDispatchError, RetryableDispatchError
from alerts.model import MsgType
from store import outbox, outbox_rules, repo
from store.db import session_scope
from store.models import AlertRecord, DeliveryRecord, DeliveryStatus

log = logging.getLogger("tocsin.dispatch")

OutcomeName = Literal["delivered", "retry", "failed", "skipped", "waiting", "superseded"]
ORDER_WAIT_S = 2.0  # an Update behind a message still being sent looks again this soon


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """Tuning of delivery attempts.

    Attributes:
        lease_s: how long a claim holds; longer than the slowest send (channel timeouts).
        max_attempts: attempts before a retryable failure becomes final.
        retry_base_s: first backoff step.
        retry_max_s: longest backoff.
        send_concurrency: deliveries of one batch sent at the same time (threads).
        batch_size: most deliveries claimed together.
    """

    lease_s: float = 120.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    send_concurrency: int = 16
    batch_size: int = 50


@dataclass
class DispatchContext:
    """What a dispatcher needs: the store, the channels, the policy, a random source."""

    sessions: sessionmaker[Session]
    registry: ChannelRegistry
    policy: DispatchPolicy = field(default_factory=DispatchPolicy)
    rng: random.Random = field(default_factory=random.Random)
    _alerts: dict[str, AlertRecord] = field(default_factory=dict)
    _contents: dict[tuple[str, str | None], AlertContent] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = None

    def alert(self, session: Session, identifier: str) -> AlertRecord:
        """The stored alert (cached: stored alerts are immutable, so it is read once)."""
        cached = self._alerts.get(identifier)
        if cached is None:
            if len(self._alerts) > 512:
                self._alerts.clear()
            cached = self._alerts[identifier] = repo.get_alert(session, identifier)
        return cached

    def alert_content(self, alert: AlertRecord, language: str | None) -> AlertContent:
        """The alert as channels send it, in ``language`` (cached)."""
        key = (alert.identifier, language)
        cached = self._contents.get(key)
        if cached is None:
            if len(self._contents) > 512:
                self._contents.clear()
            cached = self._contents[key] = build_alert_content(alert, language)
        return cached

    def pool(self) -> ThreadPoolExecutor:
        """The threads that send one batch concurrently (made on first use)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.policy.send_concurrency,
                                            thread_name_prefix="tocsin-send")
        return self._pool

    def close(self) -> None:
        """Stop the sending threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What dispatch did with one delivery.

    Attributes:
        key: the delivery's idempotency key.
        outcome: delivered; retry (pending again); failed (final); skipped (not due, final
            already, or held by another worker); waiting (behind an earlier message still
            being sent); superseded (a later message of its event replaced it).
        detail: the receipt or the reason.
        retry_in_s: for retry and waiting: seconds until it is due again.
    """

    key: str
    outcome: OutcomeName
    detail: str
    retry_in_s: float | None = None


def build_alert_content(alert: AlertRecord, language: str | None) -> AlertContent:
    """An :class:`AlertContent` from the stored alert: its CAP bytes and stored texts.

    Raises:
        PermanentDispatchError: the alert has no stored text (it cannot be worded without
            changing what was decided).
    """
    if not alert.texts:
        raise PermanentDispatchError(f"alert {alert.identifier} has no stored text to send")
    wanted = (language or "").lower()
    text = next((t for t in alert.texts if t.requested_language.lower() == wanted), None)
    text = text or next((t for t in alert.texts if t.language == wanted.split("-")[0]),
                        alert.texts[0])
    event = parse_cap(alert.cap_bytes)
    info = next(iter(event.infos), None)
    kind = dict(info.event_codes).get("tocsin:hazard", "") if info else ""
    areas = info.areas if info else ()
    map_png = next((r.content for r in (info.resources if info else ())
                    if r.mime_type == "image/png" and r.content), None)
    return AlertContent(
        identifier=alert.identifier, event_id=alert.event_id, sender=alert.sender,
        msg_type=alert.msg_type, level=alert.level, hazard_kind=kind,
        area_description=areas[0].description if areas else "", sent=alert.sent,
        expires=alert.expires, cap_xml=alert.cap_bytes, text=text, map_png=map_png,
        references=tuple(r.identifier for r in event.references),
    )


def _place_in_event(session: Session, record: DeliveryRecord, now: datetime) -> str | None:
    """Why ``record`` must wait behind an earlier message of its event, or None.

    Earlier messages on the same channel that are only waiting (for quiet hours or a digest)
    are replaced by this one, the latest word on the event, instead of holding it back.
    """
    wait = None
    for earlier in outbox.earlier_unfinished(session, record):
        blocker = earlier
        if earlier.status is DeliveryStatus.DIGESTED and earlier.digest_key:
            blocker = outbox.get_delivery(session, earlier.digest_key)
            if blocker.status.is_final:
                continue
        in_flight = blocker.status is DeliveryStatus.SENDING or (
            blocker.status is DeliveryStatus.PENDING
            and (blocker.not_before is None or blocker.not_before <= now))
        if in_flight:
            wait = wait or f"waits for {earlier.alert_identifier} on this channel"
        else:
            outbox.mark_superseded(session, earlier.idempotency_key,
                                   by=record.alert_identifier, at=now)
    return wait


@dataclass
class _Prepared:
    claim: outbox.Claim
    message: OutgoingMessage | None = None
    final: outbox.Outcome | None = None


def deliver_batch(
    keys: Sequence[str], ctx: DispatchContext, *, now: Callable[[], datetime]
) -> list[DeliveryOutcome]:
    """Deliver the due deliveries among ``keys``; record what happened to each.

    Args:
        keys: idempotency keys (any mix of channels and levels).
        ctx: store, channels and policy.
        now: the clock (read at the claim, and after each send).

    Returns:
        One outcome per key; ``retry_in_s`` says when a retry or a wait is due.
    """
    started = now()
    results: dict[str, DeliveryOutcome] = {}
    with session_scope(ctx.sessions) as session:
        records = outbox.get_deliveries(session, keys)
        claimable = []
        for key in keys:
            record = records.get(key)
            if record is None:
                results[key] = DeliveryOutcome(key, "skipped", "no such delivery")
            elif record.status.is_final or record.status is DeliveryStatus.HELD:
                results[key] = DeliveryOutcome(key, "skipped", f"already {record.status.value}")
            elif record.kind == "alert" and _follows(session, ctx, record) and \
                    (why := _place_in_event(session, record, started)):
                until = started + timedelta(seconds=ORDER_WAIT_S)
                outbox.defer_delivery(session, key, until=until, reason=why)
                results[key] = DeliveryOutcome(key, "waiting", why, ORDER_WAIT_S)
            else:
                claimable.append(key)
        claims = outbox.claim_batch(session, claimable, now=started, lease_s=ctx.policy.lease_s,
                                    previous={k: records[k].status for k in claimable})
        prepared = [_prepare(session, ctx, claim, started) for claim in claims]
    # The claims are committed: other workers see these rows as sending, under lease.
    to_send = [p for p in prepared if p.final is None]
    sent = list(ctx.pool().map(lambda p: _send(ctx, p, now), to_send)) if len(to_send) > 1 \
        else [_send(ctx, p, now) for p in to_send]
    finals = [p.final for p in prepared if p.final is not None] + sent
    with session_scope(ctx.sessions) as session:
        stale = set(outbox.finish_batch(session, finals))
        for outcome in finals:
            if outcome.claim.record.kind == "digest" and outcome.status is DeliveryStatus.ERROR \
                    and outcome.claim.record.idempotency_key not in stale:
                failed = outbox.get_delivery(session, outcome.claim.record.idempotency_key)
                outbox_rules.settle_digest_members(session, failed, at=outcome.at)
    for outcome in finals:
        results[outcome.claim.record.idempotency_key] = _report(outcome, stale, started)
    for key in claimable:
        results.setdefault(key, DeliveryOutcome(key, "skipped",
                                                "not due, or another worker holds it"))
    return [results[key] for key in keys]


def _follows(session: Session, ctx: DispatchContext, record: DeliveryRecord) -> bool:
    """Whether the delivery carries an Update or Cancel (which have earlier messages)."""
    return ctx.alert(session, record.alert_identifier).msg_type is not MsgType.ALERT


def _prepare(session: Session, ctx: DispatchContext, claim: outbox.Claim,
             at: datetime) -> _Prepared:
    """The message of a claimed delivery, or its final outcome when it must not be sent."""
    record = claim.record
    if record.attempts > ctx.policy.max_attempts:
        return _Prepared(claim, final=outbox.Outcome(
            claim, DeliveryStatus.ERROR, at, error=f"gave up after {record.attempts - 1} "
            "attempts (the worker of the last one stopped before it finished)"))
    try:
        message = _message(session, ctx, record, at)
    except DispatchError as exc:
        return _Prepared(claim, final=outbox.Outcome(claim, DeliveryStatus.ERROR, at,
                                                     error=str(exc)))
    if message is None:
        return _Prepared(claim, final=outbox.Outcome(
            claim, DeliveryStatus.SUPERSEDED, at, error="every alert it carried was replaced"))
    return _Prepared(claim, message)


def _message(session: Session, ctx: DispatchContext, record: DeliveryRecord,
             at: datetime) -> OutgoingMessage | None:
    """The message of a claimed delivery (a digest carries the alerts it still holds).

    Raises:
        PermanentDispatchError: every alert it would carry expired before it could be sent
            (a Cancel still goes: it closes what was sent).
    """
    if record.kind == "digest":
        members = outbox.get_deliveries(session, list(record.items)).values()
        identifiers = list(dict.fromkeys(m.alert_identifier for m in members
                                         if m.status is DeliveryStatus.DIGESTED))
        if not identifiers:
            return None
    else:
        identifiers = [record.alert_identifier]
    alerts = sorted((ctx.alert(session, ident) for ident in identifiers),
                    key=lambda a: (a.sent, a.identifier))
    live = [a for a in alerts if a.expires > at or a.msg_type is MsgType.CANCEL]
    if not live:
        raise PermanentDispatchError(f"expired at {alerts[-1].expires.isoformat()} before it "
                                     "could be delivered: not sent")
    return OutgoingMessage(
        idempotency_key=record.idempotency_key, channel=record.channel,
        agency_id=record.agency_id or "", subscription_id=record.subscription_id,
        language=record.language or "en",
        alerts=tuple(ctx.alert_content(a, record.language) for a in live),
        kind=record.kind,  # type: ignore[arg-type]
        attempt=record.attempts,
    )


def _send(ctx: DispatchContext, prepared: _Prepared,
          now: Callable[[], datetime]) -> outbox.Outcome:
    """Send one message on its channel; the outcome to record."""
    claim, message = prepared.claim, prepared.message
    assert message is not None
    record = claim.record
    try:
        receipt: Receipt = ctx.registry.get(record.channel.kind).send(message)
    except PermanentDispatchError as exc:
        return outbox.Outcome(claim, DeliveryStatus.ERROR, now(), error=str(exc))
    except RetryableDispatchError as exc:
        return _retry_or_fail(ctx, claim, str(exc), getattr(exc, "retry_after_s", None), now())
    except Exception as exc:  # noqa: BLE001 - an adapter bug must not strand the delivery
        log.exception("unexpected error from the %s channel", record.channel.kind.value,
                      extra={"delivery": record.idempotency_key})
        return _retry_or_fail(ctx, claim, f"unexpected {type(exc).__name__}: {exc}", None, now())
    detail = receipt.detail if receipt.remote_id is None else \
        f"{receipt.detail} (id {receipt.remote_id})"
    return outbox.Outcome(claim, DeliveryStatus.ACK, now(), receipt=detail)


def _retry_or_fail(ctx: DispatchContext, claim: outbox.Claim, reason: str,
                   retry_after_s: float | None, at: datetime) -> outbox.Outcome:
    """Pending again with a backoff, or failed when the attempts are spent."""
    attempts = claim.record.attempts
    if attempts >= ctx.policy.max_attempts:
        return outbox.Outcome(claim, DeliveryStatus.ERROR, at,
                              error=f"gave up after {attempts} attempts: {reason}")
    delay = retry_delay_s(attempts, rng=ctx.rng, base_s=ctx.policy.retry_base_s,
                          max_s=ctx.policy.retry_max_s, retry_after_s=retry_after_s)
    return outbox.Outcome(claim, DeliveryStatus.PENDING, at, error=f"attempt {attempts}: {reason}",
                          not_before=at + timedelta(seconds=delay))


def _report(outcome: outbox.Outcome, stale: set[str], started: datetime) -> DeliveryOutcome:
    """What one recorded outcome means for the caller (and the log)."""
    record = outcome.claim.record
    key = record.idempotency_key
    if key in stale:
        return DeliveryOutcome(key, "skipped", "finished by another worker (lease lapsed)")
    extra = {"delivery": key, "alert": record.alert_identifier,
             "channel": record.channel.kind.value}
    if outcome.status is DeliveryStatus.ACK:
        log.info("delivered", extra={**extra, "detail": outcome.receipt})
        return DeliveryOutcome(key, "delivered", outcome.receipt or "")
    if outcome.status is DeliveryStatus.PENDING:
        assert outcome.not_before is not None
        delay = max(0.0, (outcome.not_before - started).total_seconds())
        log.warning("delivery will be retried", extra={**extra, "error": outcome.error})
        return DeliveryOutcome(key, "retry", outcome.error or "", delay)
    if outcome.status is DeliveryStatus.SUPERSEDED:
        return DeliveryOutcome(key, "superseded", outcome.error or "")
    log.error("delivery failed", extra={**extra, "error": outcome.error})
    return DeliveryOutcome(key, "failed", outcome.error or "")


def deliver_one(key: str, ctx: DispatchContext, *, now: Callable[[], datetime]) -> DeliveryOutcome:
    """Deliver one outbox row if it is due (a batch of one)."""
    return deliver_batch([key], ctx, now=now)[0]
