"""``tocsin dispatch``, ``deliveries``, ``worker``, ``beat``, ``alerts ack``, ``agency secret``.

The outbox in the store is the truth: ``dispatch`` delivers what is due in this process (no
broker needed), ``worker`` and ``beat`` run the same on Celery, ``deliveries`` shows the
outbox and re-drives failed rows, and ``alerts ack`` stops a red alert's escalation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

from alerts.channels.webhook import webhook_secret_for
from store import outbox, outbox_rules, repo
from store.db import session_scope
from store.models import DeliveryStatus
from workers.cli.store_cmds import _fail, agency_app, alerts_app, load_settings, open_store
from workers.names import QueueNames

console = Console()
deliveries_app = typer.Typer(help="The outbox: what was delivered, what is pending, what "
                                  "failed and why; re-drive failed deliveries.",
                             no_args_is_help=True)


DRAIN_WAIT_S = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def redact_address(address: str) -> str:
    """An address fit for a listing: a URL without credentials, query or fragment.

    Webhook URLs often carry a token in the query or user part; operators need the host and
    path to recognise a receiver, never the token.
    """
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return address
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    hidden = "?…" if parts.query or parts.fragment else ""
    user = "…@" if parts.username or parts.password else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", "")) + hidden


def _context():  # noqa: ANN202 - DispatchContext, imported late (channels pull in httpx)
    from workers.channel_setup import build_registry, dispatch_policy
    from workers.dispatch import DispatchContext

    settings = load_settings()
    try:
        registry = build_registry(settings)
    except ValueError as exc:
        raise _fail(f"bad channel setting: {exc}") from exc
    return DispatchContext(sessions=open_store(settings), registry=registry,
                           policy=dispatch_policy(settings))


def dispatch(
    enqueue: Annotated[bool, typer.Option(
        "--enqueue", help="Send what is due to the Celery workers (TOCSIN_BROKER_URL) instead "
                          "of delivering it in this process.")] = False,
) -> None:
    """Deliver every delivery that is due now, highest level first, and say what happened.

    Exit code 0 when nothing failed, 5 when a delivery failed permanently (see `tocsin
    deliveries list --status error`).
    """
    from workers.sweep import drain, still_pending, sweep

    ctx = _context()
    if enqueue:
        from workers.celery_app import make_celery
        from workers.tasks import enqueue_due

        app = make_celery(load_settings())
        report = sweep(ctx, now=_now(), enqueue_every_s=ctx.policy.lease_s)
        sent = enqueue_due(app, report.due, batch_size=ctx.policy.batch_size)
        app.close()
        console.print(f"{sent} deliveries sent to the workers "
                      f"({report.digests} digests, {report.escalations} escalations made)")
        return
    counts: dict[str, int] = {}
    with console.status("Delivering...") as status:
        def seen(outcome) -> None:  # noqa: ANN001
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
            status.update(f"Delivering... {sum(counts.values())} done")
            if outcome.outcome == "failed":
                console.print(f"[red]failed[/red] {outcome.key[:12]}: {outcome.detail}")
        try:
            # Waits a few seconds for what comes due meanwhile (an Update behind its Alert,
            # a quick retry), never long enough to spend a delivery's attempts.
            drain(ctx, now=_now, on_outcome=seen, max_wait_s=DRAIN_WAIT_S)
        finally:
            ctx.close()
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing due"
    console.print(f"dispatch: {summary}")
    left = still_pending(ctx)
    if left:
        soonest = min((d.not_before for d in left if d.not_before), default=None)
        when = f"; the next is due at {soonest.isoformat(timespec='seconds')}" if soonest else ""
        console.print(f"[yellow]{len(left)} deliveries are not sent yet[/yellow] (retrying, "
                      f"quiet hours or digests{when}): run `tocsin dispatch` again or let the "
                      "workers send them")
    if counts.get("failed"):
        raise typer.Exit(5)


@deliveries_app.command("list")
def deliveries_list(
    status: Annotated[list[str] | None, typer.Option(
        help="Only these statuses (repeatable): pending, sending, ack, error, held, "
             "digested.")] = None,
    agency: Annotated[str | None, typer.Option(help="Only this agency.")] = None,
    alert: Annotated[str | None, typer.Option(help="Only this alert (CAP identifier).")] = None,
    limit: Annotated[int, typer.Option(help="Most rows shown, newest first.")] = 50,
) -> None:
    """Show the outbox: each delivery's status, attempts, and the receipt or the reason."""
    try:
        statuses = [DeliveryStatus(s) for s in status or ()]
    except ValueError as exc:
        raise _fail(f"--status: {exc}; use one of {[s.value for s in DeliveryStatus]}") from exc
    with session_scope(open_store()) as session:
        rows = outbox.list_outbox(session, statuses=statuses, agency_id=agency,
                                  alert_identifier=alert, limit=limit)
        counts = outbox.count_by_status(session)
    table = Table()
    for name in ("Key", "Alert", "Level", "Channel", "Address", "Kind", "Status", "Tries",
                 "Receipt or reason"):
        # Keys, statuses and counts never wrap: they are what an operator copies and scans.
        table.add_column(name, no_wrap=name in ("Key", "Level", "Status", "Tries"),
                         overflow="fold")
    for d in rows:
        why = d.receipt if d.status is DeliveryStatus.ACK else (d.last_error or "")
        table.add_row(d.idempotency_key[:12], d.alert_identifier,
                      d.level.value.upper() if d.level else "", d.channel.kind.value,
                      redact_address(d.channel.address), d.kind, d.status.value,
                      str(d.attempts), why or "")
    console.print(table)
    console.print("outbox: " + (", ".join(f"{n} {s.value}" for s, n in sorted(
        counts.items(), key=lambda item: item[0].value)) or "empty"))


@deliveries_app.command("retry")
def deliveries_retry(
    keys: Annotated[list[str] | None, typer.Argument(
        help="Idempotency keys (or their first 12 characters, as listed).")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed",
                                             help="Every failed delivery.")] = False,
) -> None:
    """Put failed deliveries back in the outbox (after fixing the cause); `dispatch` sends."""
    if not keys and not all_failed:
        raise _fail("give delivery keys, or --all-failed")
    with session_scope(open_store()) as session:
        failed = outbox.list_outbox(session, statuses=[DeliveryStatus.ERROR], limit=100_000)
        if all_failed:
            wanted = [d.idempotency_key for d in failed]
        else:
            wanted = []
            for given in keys or ():
                found = [d.idempotency_key for d in failed if d.idempotency_key.startswith(given)]
                if len(found) != 1:
                    raise _fail(f"{given!r} matches {len(found)} failed deliveries; "
                                "give the key as `tocsin deliveries list --status error` shows")
                wanted += found
        done = outbox.redrive_failed(session, wanted, at=_now(), by="tocsin deliveries retry")
    console.print(f"{len(done)} deliveries back in the outbox; run `tocsin dispatch` or let "
                  "the workers' sweep send them")


@alerts_app.command("ack")
def alerts_ack(
    identifier: Annotated[str, typer.Argument(help="CAP identifier of the alert.")],
    agency: Annotated[str, typer.Option(help="The agency acknowledging it.")],
    by: Annotated[str, typer.Option(help="Who acknowledges (name, duty desk).")] = "cli",
) -> None:
    """Acknowledge an alert for an agency: its event stops escalating to that agency."""
    try:
        with session_scope(open_store()) as session:
            repo.get_agency(session, agency)
            new = outbox_rules.acknowledge(session, identifier, agency, at=_now(), by=by)
    except repo.RecordNotFoundError as exc:
        raise _fail(str(exc), 1) from exc
    console.print(f"{identifier} acknowledged by {agency}" if new
                  else f"{identifier} was already acknowledged by {agency}")


@agency_app.command("secret")
def agency_secret(agency_id: Annotated[str, typer.Argument(help="The agency.")]) -> None:
    """Print the agency's webhook signing secret (derived from the deployment's secret)."""
    from workers.channel_setup import webhook_master_secret

    settings = load_settings()
    with session_scope(open_store(settings)) as session:
        try:
            repo.get_agency(session, agency_id)
        except repo.RecordNotFoundError as exc:
            raise _fail(str(exc), 1) from exc
    console.print(webhook_secret_for(webhook_master_secret(settings), agency_id), markup=False)


def _install_logging(app, loglevel: str, log_format: str) -> None:  # noqa: ANN001
    """Structured logs in every worker process (JSON unless a person is watching)."""
    import sys

    from workers.logs import install_celery_logging

    if log_format not in ("auto", "json", "text"):
        raise _fail(f"--log-format must be json, text or auto, got {log_format!r}")
    as_json = not sys.stderr.isatty() if log_format == "auto" else log_format == "json"
    install_celery_logging(app, loglevel.upper(), json=as_json)


def worker(
    queues: Annotated[str, typer.Option(
        help="Comma-separated queues to consume. Give dispatch.red alone to a worker of its "
             "own so red alerts never wait.")] = ",".join(QueueNames.ALL),
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    beat: Annotated[bool, typer.Option(
        help="Also run the beat (the outbox sweep) in this worker: one per deployment.")
    ] = False,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    log_format: Annotated[str, typer.Option(
        help="'json' (one JSON object a line, with the delivery, alert, event and feed ids) "
             "or 'text'; default json unless standard error is a terminal.")] = "auto",
) -> None:
    """Run a Celery worker on TOCSIN_BROKER_URL (default: a local broker needing no server)."""
    from workers.celery_app import make_celery

    settings = load_settings()
    open_store(settings)  # migrate before any task runs
    app = make_celery(settings)
    _install_logging(app, loglevel, log_format)
    argv = ["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", loglevel,
            "--without-gossip", "--without-mingle", "-n", f"tocsin-{queues}@%h"]
    if beat:
        argv += ["-B", "-s", str(settings.data_dir / "celerybeat-schedule")]
    app.worker_main(argv)


def beat(
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    log_format: Annotated[str, typer.Option(help="'json', 'text' or 'auto'.")] = "auto",
) -> None:
    """Run the beat alone: it enqueues the outbox sweep and the feed polls on schedule."""
    from workers.celery_app import make_celery

    settings = load_settings()
    open_store(settings)
    app = make_celery(settings)
    _install_logging(app, loglevel, log_format)
    app.start(["beat", "--loglevel", loglevel, "-s",
               str(settings.data_dir / "celerybeat-schedule")])
