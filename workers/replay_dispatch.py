"""What a replay does with the deliveries it planned: nothing, files, or the real channels.

- ``none`` (the default): the outbox rows stay in the run store as the record of what
  would have been sent to whom on which channel; nothing is rendered or sent, and no
  channel adapter is even built.
- ``sink``: the outbox is drained (on the replay's own clock, see :func:`drain_as_of`)
  through sink channels, one per channel kind, that write
  each message (as the channel would have carried it: text in the subscriber's language,
  the CAP bytes, digests and escalations included) to ``RUN/sink/<channel>/<key>.json``.
  Nothing leaves the machine.
- ``live``: the outbox is drained through the deployment's real channel registry
  (``TOCSIN_*`` channel settings). Only when asked for by name.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from alerts.channels.base import ChannelRegistry, OutgoingMessage, Receipt, alert_json
from alerts.delivery_rules import digest_due_at
from alerts.model import ChannelKind
from store import outbox, outbox_rules, replay_repo, repo
from store.db import session_scope
from store.models import DeliveryStatus
from workers.dispatch import DispatchContext
from workers.replay_manifest import write_atomic
from workers.settings import Settings
from workers.sweep import DIGEST_INTERVAL_REMOVED_MIN

SINK_DIR = "sink"
RECHECK_S = 1.0


class SinkChannel:
    """A channel that writes each message to a file instead of sending it."""

    def __init__(self, kind: ChannelKind, folder: Path) -> None:
        self.kind = kind
        self.folder = folder

    def send(self, message: OutgoingMessage) -> Receipt:
        """Write the message, as JSON, to ``<folder>/<idempotency key>.json``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{message.idempotency_key}.json"
        body = {
            "idempotency_key": message.idempotency_key, "kind": message.kind,
            "channel": message.channel.kind.value, "address": message.channel.address,
            "agency_id": message.agency_id, "subscription_id": message.subscription_id,
            "language": message.language,
            "alerts": [{**alert_json(a), "sms": a.text.sms, "full": a.text.full}
                       for a in message.alerts],
        }
        write_atomic(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
        return Receipt(self.kind, message.channel.address, f"written to {path}")


def sink_registry(run_dir: Path) -> ChannelRegistry:
    """Sink channels for every channel kind, writing under ``RUN/sink/``."""
    registry = ChannelRegistry()
    for kind in ChannelKind:
        registry = registry.register(SinkChannel(kind, run_dir / SINK_DIR / kind.value))
    return registry


def dispatch_run(mode: str, run_dir: Path, sessions: sessionmaker[Session],
                 live_settings: Settings | None = None) -> Counter[str]:
    """Drain the run's outbox as ``mode`` says; delivery outcomes by name.

    Raises:
        ValueError: ``live`` without settings, or a malformed channel setting.
    """
    if mode == "none":
        return Counter()
    if mode == "sink":
        registry = sink_registry(run_dir)
        ctx = DispatchContext(sessions=sessions, registry=registry)
    elif mode == "live":
        from workers.channel_setup import build_registry, dispatch_policy

        if live_settings is None:
            raise ValueError("live dispatch needs the deployment's settings")
        ctx = DispatchContext(sessions=sessions, registry=build_registry(live_settings),
                              policy=dispatch_policy(live_settings))
    else:
        raise ValueError(f"unknown dispatch mode {mode!r}")
    with session_scope(sessions) as session:
        replay_repo.hold_until_created(session)
    try:
        return drain_as_of(ctx)
    finally:
        ctx.close()


def drain_as_of(ctx: DispatchContext, *, max_steps: int = 100_000) -> Counter[str]:
    """Drain the outbox on a clock that steps through the replay's own times.

    The live workers deliver an alert moments after it is issued; replayed alerts are
    years old, so a wall clock would find every one expired. The clock jumps instead to
    the next time something comes due (an alert's ``sent``, the end of quiet hours, a
    retry, a digest), as the live sweep would have met it, and stops when nothing is left.
    """
    from workers.sweep import drain

    outcomes: Counter[str] = Counter()
    at: datetime | None = None
    for _ in range(max_steps):
        with session_scope(ctx.sessions) as session:
            at = _next_due(session, after=at)
        if at is None:
            break
        for outcome in drain(ctx, now=_clock(at), max_wait_s=0.0):
            outcomes[outcome.outcome] += 1
    return outcomes


def _clock(at: datetime) -> Callable[[], datetime]:
    """A clock stopped at ``at``."""
    return lambda: at


def _next_due(session: Session, *, after: datetime | None) -> datetime | None:
    """The earliest time after ``after`` at which a pending or held delivery comes due."""
    pending = outbox.list_outbox(session, statuses=[DeliveryStatus.PENDING], limit=1_000_000)
    times = [max(d.created_at or d.history[0][1], d.not_before or d.history[0][1])
             for d in pending]
    for group in outbox_rules.held_groups(session):
        try:
            sub = repo.get_subscription(session, group.subscription_id)
            interval = sub.digest.interval_min if sub.digest else DIGEST_INTERVAL_REMOVED_MIN
        except repo.RecordNotFoundError:
            interval = DIGEST_INTERVAL_REMOVED_MIN
        times.append(digest_due_at(group.oldest, interval))
    if not times:
        return None
    soonest = min(times)
    if after is not None and soonest <= after:
        # Due already and still there (waiting behind another message): a moment later.
        soonest = after + timedelta(seconds=RECHECK_S)
    return soonest
