"""``tocsin agency``, ``subscribe``, ``alerts`` and ``assess``: the alerting commands.

They use the store named by ``TOCSIN_DATABASE_URL`` (default: SQLite under
``TOCSIN_DATA_DIR``), migrating it to the current schema first.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from alerts.errors import AlertError
from alerts.model import (
    Agency,
    ChannelAddress,
    ChannelKind,
    DigestPolicy,
    Level,
    QuietHours,
    Subscription,
)
from alerts.subscriptions import parse_geojson_areas, validate_subscription
from feeds.errors import FeedError
from store import repo
from store.db import make_engine, make_session_factory, session_scope, upgrade
from workers.settings import Settings

console = Console()
err_console = Console(stderr=True)

agency_app = typer.Typer(help="Register the agencies that receive alerts.", no_args_is_help=True)
subscribe_app = typer.Typer(help="What each agency wants to hear about, where and how.",
                            no_args_is_help=True)
alerts_app = typer.Typer(help="The alerts issued and stored.", no_args_is_help=True)


def load_settings() -> Settings:
    """Settings from the environment; a bad value exits 2 naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"TOCSIN_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise _fail(f"bad setting: {problems}") from exc


def open_store(settings: Settings | None = None) -> sessionmaker[Session]:
    """The store's session factory, its schema migrated to the current version."""
    settings = settings or load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    return make_session_factory(engine)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code)


def migrate() -> None:
    """Bring the store's schema to the current version (safe to run again; workers need it)."""
    from store.db import current_revision

    settings = load_settings()
    sessions = open_store(settings)
    engine = sessions.kw["bind"]
    console.print(f"store at revision {current_revision(engine)}")


@agency_app.command("add")
def agency_add(
    agency_id: Annotated[str, typer.Argument(help="Short id, e.g. 'valley-civil-protection'.")],
    name: Annotated[str, typer.Option(help="The agency's name.")],
    contact: Annotated[str | None, typer.Option(help="Duty contact (phone or e-mail).")] = None,
) -> None:
    """Register an agency."""
    if not agency_id.strip() or any(c in agency_id for c in " ,<&"):
        raise _fail(f"agency id must be non-empty, without spaces, commas, '<' or '&'; "
                    f"got {agency_id!r}")
    try:
        with session_scope(open_store()) as session:
            repo.add_agency(session, Agency(agency_id, name, contact))
    except (repo.StoreError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"agency {agency_id} added")


@agency_app.command("list")
def agency_list() -> None:
    """List the agencies."""
    with session_scope(open_store()) as session:
        agencies = repo.list_agencies(session)
    table = Table("Id", "Name", "Contact")
    for agency in agencies:
        table.add_row(agency.agency_id, agency.name, agency.contact or "")
    console.print(table)


def _channels(values: list[str]) -> tuple[ChannelAddress, ...]:
    out = []
    for value in values:
        kind, sep, address = value.partition(":")
        if not sep or kind not in {k.value for k in ChannelKind}:
            raise typer.BadParameter(
                f"--channel takes KIND:ADDRESS with KIND one of "
                f"{', '.join(k.value for k in ChannelKind)}; got {value!r}")
        out.append(ChannelAddress(ChannelKind(kind), address))
    return tuple(out)


def _region_context(region: Path | None) -> tuple[tuple[float, float, float, float] | None,
                                                   set[str] | None]:
    if region is None:
        return None, None
    from feeds.region import subscription_context

    return subscription_context(region)


@subscribe_app.command("add")
def subscribe_add(
    subscription_id: Annotated[str, typer.Argument(help="Id of the new subscription.")],
    agency: Annotated[str, typer.Option(help="The subscribing agency's id.")],
    channel: Annotated[list[str], typer.Option(
        help="KIND:ADDRESS, repeatable: webhook:https://..., email:duty@..., sms:+41..., "
             "mqtt:topic/prefix, cap_feed:name.")],
    area: Annotated[Path | None, typer.Option(help="GeoJSON file of the area (lon, lat).")] = None,
    zones: Annotated[str | None, typer.Option(help="Zone codes of the region pack, "
                                                   "comma separated.")] = None,
    region: Annotated[Path | None, typer.Option(
        help="Region pack manifest, to check zone codes and that the area overlaps it.")] = None,
    hazard: Annotated[list[str] | None, typer.Option(
        help="Hazard kinds wanted (repeatable); none means every kind.")] = None,
    min_level: Annotated[Level, typer.Option(help="Lowest level delivered.")] = Level.YELLOW,
    language: Annotated[list[str] | None, typer.Option(
        help="Languages, first preferred (repeatable).")] = None,
    quiet_hours: Annotated[str | None, typer.Option(
        help="HH:MM-HH:MM@Area/City: hold all but red alerts then.")] = None,
    digest_up_to: Annotated[Level | None, typer.Option(
        help="Gather alerts at this level or below into a digest.")] = None,
    digest_every: Annotated[int, typer.Option(
        help="Minutes between digests (with --digest-up-to).")] = 360,
    escalate_to: Annotated[list[str] | None, typer.Option(
        help="KIND:ADDRESS, repeatable: channels tried in turn while nobody acknowledges a "
             "red alert (`tocsin alerts ack`).")] = None,
    escalate_after: Annotated[float, typer.Option(
        help="Minutes without acknowledgement before each escalation step.")] = 30.0,
) -> None:
    """Subscribe an agency to alerts for its area. Refused requests change nothing."""
    try:
        areas = parse_geojson_areas(json.loads(area.read_text(encoding="utf-8"))) if area else ()
    except (OSError, ValueError, AlertError) as exc:
        raise _fail(f"--area {area}: {exc}") from exc
    quiet = None
    if quiet_hours:
        span, _, tz = quiet_hours.partition("@")
        start, _, end = span.partition("-")
        quiet = QuietHours(start, end, tz or "UTC")
    sub = Subscription(
        subscription_id=subscription_id, agency_id=agency, areas_wkt=areas,
        zone_codes=tuple(z.strip() for z in zones.split(",") if z.strip()) if zones else (),
        hazard_kinds=frozenset(hazard or ()), min_level=min_level,
        channels=_channels(channel), languages=tuple(language or ("en",)),
        quiet_hours=quiet,
        digest=DigestPolicy(up_to_level=digest_up_to, interval_min=digest_every)
        if digest_up_to else None,
        escalation=_channels(escalate_to or []), escalate_after_min=escalate_after,
    )
    if sub.zone_codes and region is None:
        raise _fail("--zones needs --region PACK, so that the zone codes can be checked")
    try:
        bounds, zone_ids = _region_context(region)
        with session_scope(open_store()) as session:
            validate_subscription(sub, region_bounds_lonlat=bounds, zone_ids=zone_ids,
                                  existing=repo.list_subscriptions(session))
            repo.add_subscription(session, sub)
    except (AlertError, FeedError, repo.StoreError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"subscription {subscription_id} added for agency {agency}")


@subscribe_app.command("list")
def subscribe_list(agency: Annotated[str | None, typer.Option(help="Only this agency.")] = None,
                   ) -> None:
    """List subscriptions."""
    with session_scope(open_store()) as session:
        subs = repo.list_subscriptions(session, agency)
    table = Table("Id", "Agency", "Area", "Kinds", "Min level", "Channels")
    for s in subs:
        where = f"{len(s.areas_wkt)} polygon(s)" if s.areas_wkt else ""
        where += (" + " if where and s.zone_codes else "") + ",".join(s.zone_codes)
        table.add_row(s.subscription_id, s.agency_id, where, ",".join(sorted(s.hazard_kinds))
                      or "all", s.min_level.value,
                      ", ".join(f"{c.kind.value}:{c.address}" for c in s.channels))
    console.print(table)


@subscribe_app.command("remove")
def subscribe_remove(subscription_id: Annotated[str, typer.Argument()]) -> None:
    """Remove a subscription (deliveries already planned keep their history)."""
    try:
        with session_scope(open_store()) as session:
            repo.remove_subscription(session, subscription_id, at=datetime.now(UTC))
    except repo.StoreError as exc:
        raise _fail(str(exc), 1) from exc
    console.print(f"subscription {subscription_id} removed")


@alerts_app.command("list")
def alerts_list(event: Annotated[str | None, typer.Option(help="Only this event.")] = None,
                ) -> None:
    """List the CAP messages issued, newest first, with their level in words."""
    with session_scope(open_store()) as session:
        alerts = repo.list_alerts(session, event_id=event)
    table = Table("Identifier", "Type", "Level", "Sent", "Expires", "Top reason")
    for a in sorted(alerts, key=lambda a: a.sent, reverse=True):
        table.add_row(a.identifier, a.msg_type.value, a.priority.level.value.upper(),
                      a.sent.isoformat(timespec="minutes"), a.expires.isoformat(
                          timespec="minutes"), a.priority.reasons[0] if a.priority.reasons
                      else "")
    console.print(table)


@alerts_app.command("show")
def alerts_show(
    identifier: Annotated[str, typer.Argument(help="CAP identifier.")],
    cap: Annotated[bool, typer.Option("--cap", help="Print the exact CAP XML sent.")] = False,
) -> None:
    """Show one alert: level, reasons, who it reached; or its CAP bytes as sent."""
    try:
        with session_scope(open_store()) as session:
            alert = repo.get_alert(session, identifier)
            matches = repo.list_matches(session, alert_identifier=identifier)
            deliveries = repo.list_deliveries(session, alert_identifier=identifier)
    except repo.RecordNotFoundError as exc:
        raise _fail(str(exc), 1) from exc
    if cap:
        sys.stdout.buffer.write(alert.cap_bytes)
        sys.stdout.flush()
        return
    p = alert.priority
    console.print(f"[bold]{alert.identifier}[/bold] {alert.msg_type.value}, level "
                  f"{p.level.value.upper()} (severity {p.severity.value}, urgency "
                  f"{p.urgency.value}, certainty {p.certainty.value}), event {alert.event_id}")
    for reason in p.reasons:
        console.print(f"  - {reason}")
    for m in matches:
        console.print(f"  reaches {m.subscription_id} ({m.agency_id}): "
                      f"{m.exposure.population:,.0f} people in its area, "
                      f"{m.exposure.disability:,.0f} with disabilities")
    console.print(f"  {len(deliveries)} deliveries in the outbox")


def assess(
    hazard: Annotated[Path, typer.Argument(help="Hazard feed file.")],
    region: Annotated[Path, typer.Option(help="Region pack manifest.")],
    variable: Annotated[str | None, typer.Option(help="Variable or field.")] = None,
    time: Annotated[str | None, typer.Option(help="Time to select.")] = None,
    member: Annotated[str | None, typer.Option(help="Member, or max|mean|min|exceedance.")
                      ] = None,
    threshold: Annotated[float | None, typer.Option(help="Threshold for exceedance.")] = None,
    kind: Annotated[str | None, typer.Option(help="Hazard kind if the file does not say.")
                    ] = None,
) -> None:
    """Overlay, assess and match one hazard; store the alert and its deliveries.

    Prints the decision (Alert, Update, Cancel or nothing) and why, the level with its
    reasons, and the subscriptions reached with the figures inside each one's area.
    """
    from workers.assess_job import run_assess
    from workers.cli.main import _errors_to_exit_codes
    from workers.cli.options import read_options

    options = read_options(variable=variable, time=time, member=member, threshold=threshold,
                           kind=kind)
    settings = load_settings()
    with _errors_to_exit_codes():
        outcome = run_assess(hazard, region, options, settings=settings,
                             sessions=open_store(settings), now=datetime.now(UTC))
    d = outcome.decision
    console.print(f"Decision: [bold]{d.action}[/bold] — " + "; ".join(d.reasons))
    if outcome.priority is not None and d.action != "none":
        p = outcome.priority
        console.print(f"Level {p.level.value.upper()}: " + "; ".join(p.reasons[:4]))
        console.print(f"Stored {outcome.identifier} for event {outcome.event_id}; "
                      f"{outcome.deliveries} deliveries planned")
        for m in outcome.matched:
            console.print(f"  {m.subscription.agency_id}/{m.subscription.subscription_id}: "
                          f"{m.exposure.population:,.0f} people in its area")
