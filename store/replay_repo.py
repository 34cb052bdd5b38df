"""Store functions of a replay, on the existing tables of its own run store.

A replay keeps its per-item progress in ``feed_items`` (one row per item, as the live
pipeline does), its alerts and outbox in ``alerts`` and ``deliveries``, and a snapshot of
the live subscriptions in ``agencies`` and ``subscriptions``. Like :mod:`store.repo`,
every function takes an open session and never commits.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, inspect, or_, select, update
from sqlalchemy.orm import Session

from store import repo
from store.feed_models import FeedItemRow
from store.models import AgencyRow, AlertRow, DeliveryRow, SubscriptionRow

PUBLIC_SUBSCRIPTION = "public"
"""The subscription id of the public CAP feed's deliveries (not a subscriber)."""


def reset_interrupted(session: Session) -> int:
    """Put items left ``assessing`` by a killed replay back to ``fetched``; how many."""
    result = session.execute(update(FeedItemRow).where(FeedItemRow.status == "assessing")
                             .values(status="fetched")
                             .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def retry_failed(session: Session) -> int:
    """Clear the reason of items an earlier run put back after a failure; how many.

    Their ``failed: ...`` reason marks a failure of the run that recorded it: a new run
    assesses them again, and must not read that old reason as a failure of its own.
    """
    result = session.execute(update(FeedItemRow)
                             .where(FeedItemRow.status == "fetched",
                                    FeedItemRow.reason.like("failed: %"))
                             .values(reason=None)
                             .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_item(session: Session, item_id: int, *, reason: str) -> None:
    """Put one item back to ``fetched`` with ``reason`` (an unexpected failure)."""
    session.execute(update(FeedItemRow).where(FeedItemRow.id == item_id)
                    .values(status="fetched", reason=reason)
                    .execution_options(synchronize_session=False))


def finish_items(session: Session, outcomes: dict[int, tuple[str, str]]) -> None:
    """Mark items not assessed (outside the window, repeats, unreadable) with their reason."""
    for item_id, (status, reason) in outcomes.items():
        session.execute(update(FeedItemRow).where(FeedItemRow.id == item_id,
                                                  FeedItemRow.status != status)
                        .values(status=status, reason=reason)
                        .execution_options(synchronize_session=False))


def hold_until_created(session: Session) -> int:
    """Make each pending delivery due no earlier than its alert was issued; how many.

    A replay drains its outbox on its own clock (``workers.replay_dispatch``): a delivery
    of a message issued later in the replay must not be due at an earlier step.
    """
    result = session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.status == "pending", DeliveryRow.created_at.is_not(None),
               or_(DeliveryRow.not_before.is_(None),
                   DeliveryRow.not_before < DeliveryRow.created_at))
        .values(not_before=DeliveryRow.created_at)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def status_counts(session: Session, item_ids: Sequence[int] | None = None) -> Counter[str]:
    """Items by status (of these items)."""
    stmt = select(FeedItemRow.status, func.count()).group_by(FeedItemRow.status)
    if item_ids is not None:
        stmt = stmt.where(FeedItemRow.id.in_(list(item_ids)))
    return Counter({str(k): int(v) for k, v in session.execute(stmt).all()})


def failed_items(session: Session) -> list[tuple[int, str]]:
    """Items put back after an unexpected failure: ``(id, reason)``."""
    stmt = (select(FeedItemRow.id, FeedItemRow.reason)
            .where(FeedItemRow.status == "fetched", FeedItemRow.reason.like("failed: %"))
            .order_by(FeedItemRow.id))
    return [(int(i), str(r)) for i, r in session.execute(stmt).all()]


def item_statuses(session: Session) -> dict[int, str]:
    """Every item's status, by id."""
    return {int(i): str(s) for i, s in session.execute(
        select(FeedItemRow.id, FeedItemRow.status)).all()}


def has_tables(session: Session) -> bool:
    """Whether a store (the live one a snapshot is read from) has the subscription tables."""
    names = set(inspect(session.connection()).get_table_names())
    return {"agencies", "subscriptions"} <= names


def has_subscriptions(session: Session) -> bool:
    """Whether the store holds any agency (a run's snapshot was taken)."""
    return session.scalar(select(AgencyRow.agency_id).limit(1)) is not None


def subscription_count(session: Session) -> int:
    """Subscriptions in the store."""
    return int(session.scalar(select(func.count()).select_from(SubscriptionRow)) or 0)


def copy_subscriptions(source: Session, target: Session) -> int:
    """Copy every agency and subscription of ``source`` into ``target``; how many subs."""
    for agency in repo.list_agencies(source):
        repo.add_agency(target, agency)
    subs = repo.list_subscriptions(source)
    for sub in subs:
        repo.add_subscription(target, sub)
    return len(subs)


def subscriptions_sha256(session: Session) -> str:
    """A checksum of the agencies and subscriptions (by id and stored content checksum)."""
    digest = hashlib.sha256()
    for agency_id, name, contact in session.execute(
            select(AgencyRow.agency_id, AgencyRow.name, AgencyRow.contact)
            .order_by(AgencyRow.agency_id)).all():
        digest.update(f"agency|{agency_id}|{name}|{contact or ''}\n".encode())
    for sub_id, content in session.execute(
            select(SubscriptionRow.subscription_id, SubscriptionRow.content_sha256)
            .order_by(SubscriptionRow.subscription_id)).all():
        digest.update(f"subscription|{sub_id}|{content}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SubscriberNoise:
    """What one subscription received in a replay: messages by type, and channel deliveries.

    ``update_share`` (updates / messages) is the noise: how much of what arrived was a
    revision of something already said.
    """

    subscription_id: str
    agency_id: str
    messages: int
    alerts: int
    updates: int
    cancels: int
    deliveries: int

    @property
    def update_share(self) -> float:
        """Updates among the messages received (0 when none arrived)."""
        return self.updates / self.messages if self.messages else 0.0


def subscriber_noise(session: Session) -> list[SubscriberNoise]:
    """Per subscription (every one of the snapshot, and any delivered to): what it received."""
    rows = session.execute(
        select(DeliveryRow.subscription_id, DeliveryRow.agency_id, DeliveryRow.alert_identifier,
               AlertRow.msg_type)
        .join(AlertRow, AlertRow.identifier == DeliveryRow.alert_identifier)
        .where(DeliveryRow.subscription_id != PUBLIC_SUBSCRIPTION,
               DeliveryRow.kind == "alert")).all()
    agencies = dict(session.execute(select(SubscriptionRow.subscription_id,
                                           SubscriptionRow.agency_id)).all())
    messages: dict[str, dict[str, str]] = {sid: {} for sid in agencies}
    deliveries: Counter[str] = Counter()
    for sub_id, agency_id, identifier, msg_type in rows:
        messages.setdefault(sub_id, {})[identifier] = str(msg_type)
        agencies.setdefault(sub_id, agency_id or "")
        deliveries[sub_id] += 1
    out = []
    for sub_id in sorted(messages):
        types = Counter(messages[sub_id].values())
        out.append(SubscriberNoise(sub_id, str(agencies.get(sub_id) or ""),
                                   len(messages[sub_id]), types["Alert"], types["Update"],
                                   types["Cancel"], deliveries[sub_id]))
    return out
