"""Dispatch: deliver the outbox, one delivery at a time, so that nothing is lost or sent twice.

Plain functions, run by the Celery tasks (``workers/tasks.py``), by ``tocsin dispatch`` and by
tests alike. The outbox is the source of truth, never the broker:

1. :func:`deliver_one` claims a delivery in the database (a lease), commits, sends it on its
   channel outside any transaction, then records the outcome. A retryable failure puts it
   back to pending with a backoff; a permanent one (or the last attempt) fails it with the
   reason. A worker killed mid-send leaves a lapsed lease behind, and the same delivery, with
   the same idempotency key, is sent again later: receivers deduplicate by that key.
2. :func:`sweep` turns due digests into digest deliveries, creates due escalations, and
   returns everything pending and due (or whose lease lapsed), highest level first, for the
   caller to enqueue or run.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from alerts.cap_parse import parse_cap
from alerts.channels.base import AlertContent, ChannelRegistry, OutgoingMessage
from alerts.delivery_rules import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_BASE_S,
    DEFAULT_RETRY_MAX_S,
    digest_due_at,
    next_escalation,
    quiet_hours_end,
    retry_delay_s,
)
from alerts.errors import DispatchError, PermanentDispatchError, RetryableDispatchError
from alerts.model import MsgType
from store import outbox, repo
from store.db import session_scope
from store.models import AlertRecord, DeliveryRecord, DeliveryStatus

log = logging.getLogger("tocsin.dispatch")

Outcome = Literal["delivered", "retry", "failed", "skipped", "waiting"]
ORDER_WAIT_S = 5.0  # an Update waiting for its Alert on the same channel looks again this soon


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """Tuning of delivery attempts.

    Attributes:
        lease_s: how long a claim holds; longer than the slowest send (channel timeouts).
        max_attempts: attempts before a retryable failure becomes final.
        retry_base_s: first backoff step.
        retry_max_s: longest backoff.
    """

    lease_s: float = 120.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base_s: float = DEFAULT_RETRY_BASE_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S


@dataclass
class DispatchContext:
    """What a dispatcher needs: the store, the channels, the policy, a random source."""

    sessions: sessionmaker[Session]
    registry: ChannelRegistry
    policy: DispatchPolicy = field(default_factory=DispatchPolicy)
    rng: random.Random = field(default_factory=random.Random)
    _contents: dict[tuple[str, str | None], AlertContent] = field(default_factory=dict)

    def alert_content(self, alert: AlertRecord, language: str | None) -> AlertContent:
        """The alert as channels send it, in ``language`` (cached: alerts are immutable)."""
        key = (alert.identifier, language)
        cached = self._contents.get(key)
        if cached is None:
            if len(self._contents) > 512:
                self._contents.clear()
            cached = self._contents[key] = build_alert_content(alert, language)
        return cached


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one call of :func:`deliver_one` did.

    Attributes:
        key: the delivery's idempotency key.
        outcome: delivered, retry (pending again), failed (final), skipped (not due, final
            already, or held by another worker), waiting (behind an earlier message).
        detail: the receipt or the reason.
        retry_in_s: for retry and waiting: seconds until it is due again.
    """

    key: str
    outcome: Outcome
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


def _message(session: Session, ctx: DispatchContext, record: DeliveryRecord) -> OutgoingMessage:
    """The message of a claimed delivery (a digest carries every alert it gathered)."""
    if record.kind == "digest":
        members = [outbox.get_delivery(session, key) for key in record.items]
        identifiers = list(dict.fromkeys(m.alert_identifier for m in members))
    else:
        identifiers = [record.alert_identifier]
    alerts = sorted((repo.get_alert(session, ident) for ident in identifiers),
                    key=lambda a: (a.sent, a.identifier))
    return OutgoingMessage(
        idempotency_key=record.idempotency_key, channel=record.channel,
        agency_id=record.agency_id or "", subscription_id=record.subscription_id,
        language=record.language or "en",
        alerts=tuple(ctx.alert_content(a, record.language) for a in alerts),
        kind=record.kind,  # type: ignore[arg-type]
        attempt=record.attempts,
    )


def deliver_one(key: str, ctx: DispatchContext, *, now: Callable[[], datetime]) -> DeliveryOutcome:
    """Deliver one outbox row if it is due; record what happened.

    Args:
        key: the delivery's idempotency key.
        ctx: store, channels and policy.
        now: the clock (called at the claim and again after the send).

    Returns:
        The outcome; ``retry_in_s`` says when a retry or a wait is due.
    """
    started = now()
    with session_scope(ctx.sessions) as session:
        record = outbox.get_delivery(session, key)
        if record.status.is_final or record.status is DeliveryStatus.HELD:
            return DeliveryOutcome(key, "skipped", f"already {record.status.value}")
        ahead = outbox.earlier_unfinished(session, record) if record.kind == "alert" else None
        if ahead is not None:
            until = started + timedelta(seconds=ORDER_WAIT_S)
            outbox.defer_delivery(session, key, until=until, at=started,
                                  reason=f"waits for {ahead.alert_identifier} on this channel")
            return DeliveryOutcome(key, "waiting", f"behind {ahead.alert_identifier}",
                                   ORDER_WAIT_S)
        claimed = outbox.claim_delivery(session, key, now=started, lease_s=ctx.policy.lease_s)
        if claimed is None:
            return DeliveryOutcome(key, "skipped", "not due, or another worker holds it")
        try:
            message = _message(session, ctx, claimed)
        except DispatchError as exc:
            message, build_error = None, exc
        else:
            build_error = None
    # The claim is committed: other workers now see it as sending, under lease.
    try:
        if build_error is not None:
            raise build_error
        assert message is not None
        receipt = ctx.registry.get(claimed.channel.kind).send(message)
    except RetryableDispatchError as exc:
        return _retry_or_fail(ctx, claimed, exc, now())
    except PermanentDispatchError as exc:
        return _fail(ctx, claimed, str(exc), now())
    detail = receipt.detail if receipt.remote_id is None else \
        f"{receipt.detail} (id {receipt.remote_id})"
    with session_scope(ctx.sessions) as session:
        try:
            outbox.finish_delivery(session, key, DeliveryStatus.ACK, at=now(), receipt=detail)
        except ValueError:  # a second worker (after a lapsed lease) finished it first
            return DeliveryOutcome(key, "skipped", "finished by another worker")
    log.info("delivered", extra={"delivery": key, "alert": claimed.alert_identifier,
                                 "channel": claimed.channel.kind.value, "detail": detail})
    return DeliveryOutcome(key, "delivered", detail)


def _retry_or_fail(ctx: DispatchContext, record: DeliveryRecord, exc: RetryableDispatchError,
                   at: datetime) -> DeliveryOutcome:
    """Pending again with a backoff, or failed when the attempts are spent."""
    if record.attempts >= ctx.policy.max_attempts:
        return _fail(ctx, record, f"gave up after {record.attempts} attempts: {exc}", at)
    delay = retry_delay_s(record.attempts, rng=ctx.rng, base_s=ctx.policy.retry_base_s,
                          max_s=ctx.policy.retry_max_s,
                          retry_after_s=getattr(exc, "retry_after_s", None))
    with session_scope(ctx.sessions) as session:
        try:
            outbox.finish_delivery(session, record.idempotency_key, DeliveryStatus.PENDING,
                                   at=at, error=f"attempt {record.attempts}: {exc}",
                                   not_before=at + timedelta(seconds=delay))
        except ValueError:
            return DeliveryOutcome(record.idempotency_key, "skipped", "finished elsewhere")
    log.warning("delivery will be retried", extra={"delivery": record.idempotency_key,
                                                   "error": str(exc), "retry_in_s": delay})
    return DeliveryOutcome(record.idempotency_key, "retry", str(exc), delay)


def _fail(ctx: DispatchContext, record: DeliveryRecord, reason: str,
          at: datetime) -> DeliveryOutcome:
    """Failed for good, with the reason (and the members of a failed digest with it)."""
    with session_scope(ctx.sessions) as session:
        try:
            failed = outbox.finish_delivery(session, record.idempotency_key,
                                            DeliveryStatus.ERROR, at=at, error=reason)
        except ValueError:
            return DeliveryOutcome(record.idempotency_key, "skipped", "finished elsewhere")
        if failed.kind == "digest":
            outbox.settle_digest_members(session, failed, at=at)
    log.error("delivery failed", extra={"delivery": record.idempotency_key, "error": reason})
    return DeliveryOutcome(record.idempotency_key, "failed", reason)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep found and made."""

    due: tuple[DeliveryRecord, ...]
    digests: int
    escalations: int


def sweep(ctx: DispatchContext, *, now: datetime, limit: int = 1000) -> SweepReport:
    """Make due digests and escalations, and list every delivery due now (top level first).

    Args:
        ctx: store and policy.
        now: the current time.
        limit: most deliveries returned at once.
    """
    digests = _make_digests(ctx, now)
    escalations = _make_escalations(ctx, now)
    with session_scope(ctx.sessions) as session:
        due = outbox.due_deliveries(session, now=now, limit=limit)
    return SweepReport(tuple(due), digests, escalations)


def _make_digests(ctx: DispatchContext, now: datetime) -> int:
    made = 0
    with session_scope(ctx.sessions) as session:
        for group in outbox.held_groups(session):
            try:
                sub = repo.get_subscription(session, group.subscription_id)
            except repo.RecordNotFoundError:
                sub = None
            interval = sub.digest.interval_min if sub and sub.digest else 60
            if digest_due_at(group.oldest, interval) > now:
                continue
            level = max((outbox.get_delivery(session, k).level for k in group.keys),
                        key=lambda lv: lv.rank if lv else -1)
            quiet = sub.quiet_hours if sub else None
            hold = quiet_hours_end(quiet, level, now) if quiet and level else None
            outbox.create_digest(session, group, at=now, not_before=hold)
            made += 1
    return made


def _make_escalations(ctx: DispatchContext, now: datetime) -> int:
    made = 0
    with session_scope(ctx.sessions) as session:
        for ident, sub_id, event_id in outbox.escalation_candidates(session, now=now):
            try:
                sub = repo.get_subscription(session, sub_id)
            except repo.RecordNotFoundError:
                continue  # removed since: nobody left to escalate to
            if not sub.escalation:
                continue
            alert = repo.get_alert(session, ident)
            step_channel = next_escalation(
                sub, level=alert.level, msg_type=alert.msg_type, sent=alert.sent,
                steps_done=outbox.escalation_steps_done(session, ident, sub_id),
                acknowledged=outbox.event_acknowledged(session, event_id, sub.agency_id),
                now=now)
            if step_channel is None or alert.msg_type is MsgType.CANCEL:
                continue
            step, channel = step_channel
            if outbox.add_escalation(session, alert_identifier=ident, subscription_id=sub_id,
                                     agency_id=sub.agency_id, language=sub.languages[0],
                                     level=alert.level, step=step, channel=channel, at=now):
                made += 1
    return made


def drain(
    ctx: DispatchContext,
    *,
    now: Callable[[], datetime],
    until_idle: bool = True,
    on_outcome: Callable[[DeliveryOutcome], None] | None = None,
    max_rounds: int = 1000,
) -> list[DeliveryOutcome]:
    """Deliver everything due now in this process, without a broker (CLI, demo, tests).

    Sweeps, delivers what is due in priority order, and repeats while something was
    delivered or is due (``until_idle``); deliveries waiting for a later time stay pending.
    """
    outcomes: list[DeliveryOutcome] = []
    for _ in range(max_rounds):
        report = sweep(ctx, now=now())
        if not report.due:
            break
        round_outcomes = [deliver_one(d.idempotency_key, ctx, now=now) for d in report.due]
        for outcome in round_outcomes:
            if on_outcome is not None:
                on_outcome(outcome)
        outcomes += round_outcomes
        progressed = any(o.outcome in ("delivered", "failed") for o in round_outcomes)
        if not until_idle or not progressed:
            break
    return outcomes


def keys_of(records: Iterable[DeliveryRecord]) -> list[str]:
    """The idempotency keys of ``records``, in order."""
    return [r.idempotency_key for r in records]
