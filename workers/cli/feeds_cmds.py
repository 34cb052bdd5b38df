"""``tocsin feeds status|poll`` and ``tocsin run``: the live pipeline from the command line.

``feeds poll`` runs the pipeline once in this process (poll, assess, dispatch: no broker);
``run`` starts the workers and the beat on one machine (the embedded default needs no
server); ``feeds status`` shows each feed's health from the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from feeds.errors import FeedError
from store import feeds_repo
from store.db import session_scope
from workers.cli.store_cmds import _fail, load_settings, open_store
from workers.names import QueueNames

console = Console()
feeds_app = typer.Typer(help="The feeds of the live pipeline: their health, and polling them "
                             "by hand.", no_args_is_help=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _pipeline():  # noqa: ANN202 - PipelineContext, imported late (readers are heavy)
    from workers.pipeline import open_pipeline

    settings = load_settings()
    try:
        return open_pipeline(settings, open_store(settings))
    except FeedError as exc:
        raise _fail(str(exc)) from exc


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    seconds = (now - at).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@feeds_app.command("status")
def feeds_status() -> None:
    """Per feed: last success, lag from issue to ingest, errors, items and quarantined files."""
    ctx = _pipeline()
    now = _now()
    try:
        from workers.pipeline import sync_feeds

        ids = sync_feeds(ctx, now=now)
        with session_scope(ctx.sessions) as session:
            health = feeds_repo.feed_health(session, ids)
    finally:
        ctx.close()
    # One block per feed rather than a wide table: readable in any terminal and in logs.
    for h in health:
        items = ", ".join(f"{n} {status}" for status, n in sorted(h.items.items())) or "none"
        lag = f", lag from issue to ingest {h.last_lag_s / 60:.0f} min" \
            if h.last_lag_s is not None else ""
        colour = "red" if h.consecutive_failures else "green"
        console.print(f"[bold]{h.feed_id}[/bold]: last success {_ago(h.last_success_at, now)}"
                      f"{lag}, [{colour}]{h.consecutive_failures} failure(s) in a row"
                      f"[/{colour}]", highlight=False)
        console.print(f"  items: {items}", highlight=False)
        if h.last_item is not None:
            last = h.last_item
            why = f": {last.reason}" if last.reason else ""
            console.print(f"  last item: {last.original_name} {last.status}"
                          f"{f' ({last.decision})' if last.decision else ''}{why}",
                          highlight=False, markup=False)
        if h.last_error:
            console.print(f"  last error ({_ago(h.last_error_at, now)}): {h.last_error}",
                          highlight=False, markup=False)
        for note in h.notes[-3:]:
            console.print(f"  noticed: {note}", highlight=False, markup=False)
        console.print(f"  next poll: {h.next_poll_at.isoformat(timespec='seconds')}"
                      if h.next_poll_at else "  next poll: now", highlight=False)
    if any(h.consecutive_failures for h in health):
        raise typer.Exit(6)


@feeds_app.command("poll")
def feeds_poll(
    feed: Annotated[list[str] | None, typer.Argument(help="Feeds to poll (default: all due).")
                    ] = None,
    force: Annotated[bool, typer.Option(help="Poll even when not due yet.")] = False,
    dispatch: Annotated[bool, typer.Option(help="Deliver the alerts made (in this process).")
                        ] = True,
) -> None:
    """Run the pipeline once here: poll the feeds, assess what they gave, deliver the alerts.

    Exit code 0; 6 when a feed could not be polled (its error is shown).
    """
    from workers.pipeline import assess_item, due_feeds, pending_items, poll_feed

    ctx = _pipeline()
    failed = False
    try:
        now = _now()
        ids = feed or due_feeds(ctx, now=now)
        unknown = [f for f in ids if f not in {c.id for c in ctx.feeds.feeds}]
        if unknown:
            raise _fail(f"unknown feed(s) {unknown}; the feeds file has "
                        f"{[c.id for c in ctx.feeds.feeds]}")
        for feed_id in ids:
            outcome = poll_feed(ctx, feed_id, now=_now(), force=force or bool(feed))
            if outcome is None:
                console.print(f"{feed_id}: not polled (not due, or another worker is on it)")
                continue
            failed = failed or bool(outcome.error)
            said = f"{len(outcome.item_ids)} new item(s)"
            said += f", {outcome.repeats} repeat(s)" if outcome.repeats else ""
            console.print(f"{feed_id}: {said}" + (f"; error: {outcome.error}"
                                                  if outcome.error else ""))
        for item_id in pending_items(ctx, now=_now()):
            with console.status(f"Assessing item {item_id}..."):
                result = assess_item(ctx, item_id, now=_now())
            if result is not None:
                what = result.alert_identifier or result.reason or ""
                console.print(f"  {result.feed_id} item {item_id}: {result.status} "
                              f"({result.decision or '-'}) {what}")
    finally:
        ctx.close()
    if dispatch:
        from workers.cli.dispatch_cmds import dispatch as run_dispatch

        run_dispatch(enqueue=False)
    if failed:
        raise typer.Exit(6)


def run(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run the live pipeline on this machine: workers on every queue, and the beat.

    Needs TOCSIN_FEEDS_CONFIG. On the embedded default no server is needed (a local broker
    and SQLite); with TOCSIN_BROKER_URL set, other machines can run `tocsin worker` beside it.
    """
    from workers.cli.dispatch_cmds import worker

    settings = load_settings()
    if settings.feeds_config is None:
        raise _fail("TOCSIN_FEEDS_CONFIG is not set: give the feeds TOML to watch "
                    "(docs/feeds.md)")
    worker(queues=",".join(QueueNames.ALL), concurrency=concurrency, beat=True,
           loglevel=loglevel, log_format="auto")
