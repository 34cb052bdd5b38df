"""Agency routes: subscriptions, alerts, deliveries, acknowledgements; each agency its own.

Every query is scoped by the key's agency. A record of another agency is answered 404,
exactly as one that does not exist, so a key cannot even learn which ids others use.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.orm import Session

from alerts.model import Level
from alerts.subscriptions import validate_subscription
from api.convert import check_channels, delivery_out, subscription_of, subscription_out
from api.errors import ApiError, invalid, responses
from api.regions import deployment_region
from api.schemas import (
    AckIn,
    AckOut,
    AlertDetail,
    AlertOut,
    AlertPage,
    DeliveryPage,
    Identifier,
    IsoTime,
    MatchOut,
    SubscriptionCreate,
    SubscriptionIn,
    SubscriptionOut,
)
from api.security import AgencyKey
from geo.types import HazardKind
from store import api_store, mapping, outbox_rules, repo
from store.db import session_scope
from store.models import DeliveryStatus
from workers.cli.dispatch_cmds import redact_address

router = APIRouter(prefix="/v1", tags=["agency"])
_KEYED = (401, 403, 429, 503)
CAP_IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
CapIdentifier = Annotated[str, Path(pattern=CAP_IDENTIFIER)]


def db(request: Request) -> Iterator[Session]:
    """One session (one transaction) per request; committed when the route returns.

    GET and HEAD only read: on SQLite their transactions never wait behind a writer.
    """
    state = request.app.state
    reads = request.method in ("GET", "HEAD")
    with session_scope(state.read_sessions if reads else state.sessions) as session:
        yield session


Db = Annotated[Session, Depends(db)]


def _own_subscription(session: Session, agency_id: str, subscription_id: str):  # noqa: ANN202
    try:
        sub = repo.get_subscription(session, subscription_id)
    except repo.RecordNotFoundError:
        sub = None
    if sub is None or sub.agency_id != agency_id:
        raise ApiError(404, f"no subscription {subscription_id!r}")
    return sub


def _checked(request: Request, session: Session, body: SubscriptionIn, subscription_id: str,
             agency_id: str):  # noqa: ANN202
    settings = request.app.state.settings
    check_channels(body.channels, "channels", _allow(settings), request.app.state.resolve,
                   agency_id=agency_id)
    check_channels(body.escalation, "escalation", _allow(settings), request.app.state.resolve,
                   agency_id=agency_id)
    sub = subscription_of(body, subscription_id, agency_id,
                          max_vertices=settings.api_max_vertices,
                          max_area_km2=settings.api_max_area_km2)
    bounds, zone_ids = deployment_region(request.app)
    if sub.zone_codes and zone_ids is None:
        raise invalid("zone_codes", "this deployment has no region pack with zones "
                                    "(TOCSIN_REGION); give an area instead")
    return validate_subscription(
        sub, region_bounds_lonlat=bounds, zone_ids=zone_ids,
        existing=repo.list_subscriptions(session, agency_id),
        max_area_km2=settings.api_max_area_km2)


def _allow(settings) -> tuple[str, ...]:  # noqa: ANN001
    return tuple(settings.webhook_allow_hosts)


@router.get("/subscriptions", response_model=list[SubscriptionOut],
            responses=responses(*_KEYED))
def list_subscriptions(key: AgencyKey, session: Db) -> list[SubscriptionOut]:
    """The agency's subscriptions, by id."""
    return [subscription_out(s) for s in repo.list_subscriptions(session, key.agency_id)]


@router.post("/subscriptions", status_code=201, response_model=SubscriptionOut,
             responses=responses(*_KEYED, 409, 422))
def create_subscription(body: SubscriptionCreate, request: Request, response: Response,
                        key: AgencyKey, session: Db) -> SubscriptionOut:
    """Subscribe the agency to alerts for an area; a refused request changes nothing."""
    assert key.agency_id is not None
    sub = _checked(request, session, body, body.subscription_id, key.agency_id)
    repo.add_subscription(session, sub)
    response.headers["Location"] = f"/v1/subscriptions/{sub.subscription_id}"
    return subscription_out(sub)


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut,
            responses=responses(*_KEYED, 404, 422))
def get_subscription(subscription_id: Identifier, key: AgencyKey, session: Db
                     ) -> SubscriptionOut:
    """One of the agency's subscriptions."""
    assert key.agency_id is not None
    return subscription_out(_own_subscription(session, key.agency_id, subscription_id))


@router.put("/subscriptions/{subscription_id}", response_model=SubscriptionOut,
            responses=responses(*_KEYED, 404, 409, 422))
def replace_subscription(subscription_id: Identifier, body: SubscriptionIn, request: Request,
                         key: AgencyKey, session: Db) -> SubscriptionOut:
    """Replace a subscription's settings; deliveries already planned are unchanged."""
    assert key.agency_id is not None
    _own_subscription(session, key.agency_id, subscription_id)
    sub = _checked(request, session, body, subscription_id, key.agency_id)
    try:
        api_store.update_subscription(session, sub)
    except ValueError as exc:
        raise ApiError(409, str(exc)) from None
    return subscription_out(sub)


@router.delete("/subscriptions/{subscription_id}", status_code=204,
               responses=responses(*_KEYED, 404, 422))
def delete_subscription(subscription_id: Identifier, request: Request, key: AgencyKey,
                        session: Db) -> Response:
    """Remove a subscription; its deliveries not yet sent are failed ("subscription removed")."""
    assert key.agency_id is not None
    _own_subscription(session, key.agency_id, subscription_id)
    repo.remove_subscription(session, subscription_id, at=request.app.state.clock())
    return Response(status_code=204)


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if (len(values) != 4 or not all(-180 <= values[i] <= 180 for i in (0, 2))
            or not all(-90 <= values[i] <= 90 for i in (1, 3))
            or values[0] > values[2] or values[1] > values[3]):
        raise invalid("bbox", f"expected min_lon,min_lat,max_lon,max_lat in WGS 84 with "
                              f"min <= max, got {text!r}")
    return values[0], values[1], values[2], values[3]


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.utcoffset() is None:
        raise invalid(name, f"give a time zone (e.g. 2026-12-01T10:00:00Z), got "
                            f"{value.isoformat()}")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise invalid(name, f"{value.isoformat()} is out of range in UTC") from None
    return value


def alert_out(summary: api_store.AlertSummary) -> AlertOut:
    """The listing view of an alert."""
    return AlertOut(
        identifier=summary.identifier, event_id=summary.event_id,
        hazard_kind=summary.hazard_kind, level=Level(summary.level),
        msg_type=summary.msg_type,  # type: ignore[arg-type]
        sent=summary.sent, expires=summary.expires,
        bbox=list(summary.bbox) if summary.bbox else None,
        cap_url=f"/v1/alerts/{summary.identifier}/cap")


@router.get("/alerts", response_model=AlertPage, responses=responses(*_KEYED, 400, 422))
def list_alerts(
    request: Request, key: AgencyKey, session: Db,
    since: Annotated[IsoTime | None, Query(description="Sent at or after (ISO 8601).")] = None,
    until: Annotated[IsoTime | None, Query(description="Sent before (ISO 8601).")] = None,
    bbox: Annotated[str | None, Query(max_length=200,
                                      description="min_lon,min_lat,max_lon,max_lat")] = None,
    hazard: Annotated[list[HazardKind] | None, Query(max_length=20)] = None,
    level: Annotated[list[Level] | None, Query(max_length=4)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> AlertPage:
    """The alerts that matched the agency's subscriptions, newest first, one page at a time."""
    wanted = api_store.AlertFilter(
        since=_aware(since, "since"), until=_aware(until, "until"), bbox=_bbox(bbox),
        hazard_kinds=tuple(h.value for h in hazard or ()),
        levels=tuple(v.value for v in level or ()))
    limit = min(limit, request.app.state.settings.api_page_max)
    page, after = api_store.list_alerts(session, wanted, agency_id=key.agency_id,
                                        cursor=cursor, limit=limit)
    return AlertPage(items=[alert_out(s) for s in page], next=after)


def _visible(session: Session, agency_id: str, identifier: str) -> api_store.AlertSummary:
    summary = api_store.alert_summary(session, identifier)
    if summary is None or not api_store.agency_sees_alert(session, agency_id, identifier):
        raise ApiError(404, f"no alert {identifier!r} for this agency")
    return summary


@router.get("/alerts/{identifier}", response_model=AlertDetail,
            responses=responses(*_KEYED, 404, 422))
def get_alert(identifier: CapIdentifier, key: AgencyKey, session: Db) -> AlertDetail:
    """One alert: its priority and why, and the figures inside each of the agency's areas."""
    assert key.agency_id is not None
    summary = _visible(session, key.agency_id, identifier)
    record = repo.get_alert(session, identifier)
    matches = repo.list_matches(session, alert_identifier=identifier, agency_id=key.agency_id)
    return AlertDetail(
        **alert_out(summary).model_dump(),
        priority=mapping.alert_to_columns(record)["priority"],
        matches=[MatchOut(subscription_id=m.subscription_id, level=m.level,
                          max_class=m.max_class, population=m.exposure.population,
                          exposure=mapping.exposure_to_json(m.exposure)) for m in matches],
        acknowledged=outbox_rules.event_acknowledged(session, record.event_id, key.agency_id))


@router.get("/alerts/{identifier}/cap", responses={
    200: {"content": {"application/cap+xml": {"schema": {"type": "string"}}},
          "description": "The CAP 1.2 message exactly as stored and sent."},
    **responses(*_KEYED, 404, 422)})
def get_alert_cap(identifier: CapIdentifier, key: AgencyKey, session: Db) -> Response:
    """The alert's CAP 1.2 XML, byte for byte as stored and sent."""
    assert key.agency_id is not None
    _visible(session, key.agency_id, identifier)
    return Response(repo.get_alert(session, identifier).cap_bytes,
                    media_type="application/cap+xml")


@router.post("/alerts/{identifier}/ack", response_model=AckOut,
             responses=responses(*_KEYED, 404, 422))
def acknowledge_alert(identifier: CapIdentifier, request: Request, key: AgencyKey,
                      session: Db, body: AckIn | None = None) -> AckOut:
    """Acknowledge an alert for the agency: its event stops escalating to the agency."""
    assert key.agency_id is not None
    _visible(session, key.agency_id, identifier)
    by = (body or AckIn()).by
    new = outbox_rules.acknowledge(session, identifier, key.agency_id,
                                   at=request.app.state.clock(), by=f"{by} (key {key.key_id})")
    return AckOut(identifier=identifier, agency_id=key.agency_id, new=new)


@router.get("/deliveries", response_model=DeliveryPage, responses=responses(*_KEYED, 400, 422))
def list_deliveries(
    request: Request, key: AgencyKey, session: Db,
    alert: Annotated[str | None, Query(pattern=CAP_IDENTIFIER)] = None,
    status: Annotated[list[DeliveryStatus] | None, Query(max_length=10)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> DeliveryPage:
    """The agency's deliveries and their status, newest first."""
    assert key.agency_id is not None
    limit = min(limit, request.app.state.settings.api_page_max)
    records, after = api_store.list_agency_deliveries(
        session, key.agency_id, alert_identifier=alert, statuses=tuple(status or ()),
        cursor=cursor, limit=limit)
    return DeliveryPage(items=[delivery_out(r, redact=redact_address) for r in records],
                        next=after)
