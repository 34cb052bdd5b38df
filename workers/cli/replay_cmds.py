"""``tocsin replay``: deterministic replay of archived feeds; ``replay diff`` of two runs.

Exit codes as ``tocsin``'s: 0 done; 2 bad usage (a bad time, an unknown feed, a run
directory that holds another replay); 3 an input cannot be read (archive, catalog, feeds
file, region pack); 1 anything else (items that failed unexpectedly: re-run to resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from feeds.errors import FeedError
from workers.cli.store_cmds import load_settings

console = Console()
err_console = Console(stderr=True)
replay_app = typer.Typer(
    help="Replay archived feeds over a time window, deterministically, into a run folder "
         "(nothing is sent unless --dispatch live); compare two runs with `replay diff`.")

EXIT_INPUT_ERROR = 3


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code)


@replay_app.callback(invoke_without_command=True)
def replay(
    ctx: typer.Context,
    archive: Annotated[Path | None, typer.Option(
        "--archive", help="The ingest archive (TOCSIN_ARCHIVE_DIR), a folder of feed files "
                          "(one subfolder per feed id) or a STAC catalog.json.")] = None,
    since: Annotated[str | None, typer.Option(
        "--from", help="Window start, ISO 8601 (UTC if no offset), on each item's own "
                       "issue time.")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Window end (exclusive).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="The run folder: manifest, store, outputs. An existing run with the "
                      "same arguments is resumed.")] = None,
    feeds: Annotated[list[str] | None, typer.Option(
        "--feeds", help="Feeds to replay (repeat or comma-separate); default every enabled "
                        "feed.")] = None,
    rules: Annotated[str | None, typer.Option(
        "--rules", help="Priority rules: a shipped version (1) or a rules TOML file.")] = None,
    dispatch: Annotated[str, typer.Option(
        "--dispatch", help="none (default): nothing rendered or sent; sink: messages "
                           "written under RUN/sink/; live: the real channels.")] = "none",
    workers: Annotated[int, typer.Option(
        "--workers", help="Worker processes to start on the run's own broker; 0 assesses "
                          "in this process.")] = 1,
    feeds_config: Annotated[Path | None, typer.Option(
        "--feeds-config", help="The feeds TOML (default TOCSIN_FEEDS_CONFIG).")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Store URL whose subscriptions are snapshotted (default the live "
                        "store, TOCSIN_DATABASE_URL).")] = None,
    broker: Annotated[str | None, typer.Option(
        "--broker", help="An external broker for the workers (default: a filesystem "
                         "broker inside the run folder).")] = None,
) -> None:
    """Replay the archive's items between --from and --to into --out, as of their own times.

    Items are assessed in event-time order within each event chain and in parallel across
    independent chains; alerts and CAP bytes do not depend on --workers. Writes the alert
    timeline per event and the messages (and updates: noise) per subscription under
    RUN/outputs/.
    """
    if ctx.invoked_subcommand is not None:
        return
    from workers.replay import ReplayRequest
    from workers.replay_manifest import ReplayUsageError, parse_time

    missing = [name for name, value in (("--archive", archive), ("--from", since),
                                        ("--to", until), ("--out", out)) if value is None]
    if missing:
        raise _fail(f"tocsin replay needs {', '.join(missing)} (see tocsin replay --help)", 2)
    settings = load_settings()
    config = feeds_config or settings.feeds_config
    if config is None:
        raise _fail("no feeds file: give --feeds-config or set TOCSIN_FEEDS_CONFIG", 2)
    try:
        request = ReplayRequest(
            source=archive, since=parse_time(since, "--from"),  # type: ignore[arg-type]
            until=parse_time(until, "--to"), feeds_config=config,  # type: ignore[arg-type]
            feed_ids=tuple(f.strip() for item in feeds or [] for f in item.split(",")
                           if f.strip()),
            rules=rules, dispatch=dispatch.strip().lower(), store_url=store, workers=workers,
            broker_url=broker)  # type: ignore[arg-type]
    except ReplayUsageError as exc:
        raise _fail(str(exc), 2) from exc
    report = _run(request, out, settings)  # type: ignore[arg-type]
    _print_report(report)
    if report.failed:
        raise _fail(f"{len(report.failed)} item(s) failed unexpectedly (first: item "
                    f"{report.failed[0][0]}: {report.failed[0][1]}); run the same command "
                    "again to resume", 1)


def _run(request, out: Path, settings):  # noqa: ANN001, ANN202 - typed in workers.replay
    from workers.replay import run_replay
    from workers.replay_manifest import ReplayError, ReplayInputError, ReplayUsageError

    bar = Progress(TextColumn("{task.description:<10}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} items"), TimeElapsedColumn(),
                   console=console, transient=False, disable=not console.is_terminal)
    tasks: dict[str, TaskID] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    try:
        with bar:
            return run_replay(request, out, live=settings, progress=progress)
    except KeyboardInterrupt as exc:
        raise _fail(f"interrupted: run the same command again to resume the run in {out}",
                    130) from exc
    except ReplayUsageError as exc:
        raise _fail(str(exc), 2) from exc
    except (ReplayInputError, FeedError) as exc:
        raise _fail(f"cannot read input: {exc}", EXIT_INPUT_ERROR) from exc
    except ReplayError as exc:
        raise _fail(str(exc), 1) from exc


def _print_report(report) -> None:  # noqa: ANN001 - workers.replay.ReplayReport
    verb = "resumed" if report.resumed else "done"
    table = Table(title=f"Replay {report.run_id} ({verb})", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for status, count in sorted(report.statuses.items()):
        table.add_row(f"items {status}", f"{count:,}")
    table.add_row("partitions", f"{report.plan['partitions']:,}")
    for msg_type in ("Alert", "Update", "Cancel"):
        table.add_row(f"messages {msg_type}", f"{report.alerts.get(msg_type, 0):,}")
    for outcome, count in sorted(report.dispatched.items()):
        table.add_row(f"deliveries {outcome}", f"{count:,}")
    if report.assessed:
        table.add_row("items per minute", f"{report.items_per_min:,.1f}")
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}")
    console.print(f"Outputs in {report.run_dir / 'outputs'} (timeline, noise, items, CAP)")


@replay_app.command("diff")
def replay_diff(
    run_a: Annotated[Path, typer.Argument(help="The first run folder (the baseline).")],
    run_b: Annotated[Path, typer.Argument(help="The second run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
    show_same: Annotated[bool, typer.Option(help="Also list events that did not change.")
                         ] = False,
) -> None:
    """Compare two replays event by event: messages gained, lost, level changed."""
    from workers.replay_diff import diff_runs
    from workers.replay_manifest import ReplayUsageError

    try:
        result = diff_runs(run_a, run_b)
    except ReplayUsageError as exc:
        raise _fail(str(exc), 2) from exc
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
        return
    a, b = result.run_a, result.run_b
    table = Table(title=f"Rules {a['rules_version']} (A: {a['run_id']}) vs "
                        f"{b['rules_version']} (B: {b['run_id']})")
    for column in ("event", "A", "B", "change"):
        table.add_column(column)
    for event in result.events:
        if event.status == "same" and not show_same:
            continue
        changes = "; ".join(f"{c.change} at {c.at[:16]}" for c in event.changes) or "same"
        table.add_row(", ".join(event.events_a or event.events_b),
                      " > ".join(event.timeline_a) or "-", " > ".join(event.timeline_b) or "-",
                      f"{event.status}: {changes}")
    console.print(table)
    totals = result.totals()
    console.print(f"messages gained {totals['gained']}, lost {totals['lost']}, level changed "
                  f"{totals['level']}, type changed {totals['type']}; events gained "
                  f"{totals['events_gained']}, lost {totals['events_lost']}, changed "
                  f"{totals['events_changed']}, same {totals['events_same']}")
    if result.only_a or result.only_b:
        console.print(f"items replayed in one run only (not compared): A {result.only_a}, "
                      f"B {result.only_b}")
    for note in result.notes:
        console.print(f"note: {note}")


@replay_app.command("worker")
def replay_worker(
    run_dir: Annotated[Path, typer.Argument(help="The run folder.")],
    broker: Annotated[str | None, typer.Option(help="The broker the replay uses.")] = None,
) -> None:
    """Run one more worker for a replay (on another machine sharing the run folder)."""
    from workers.replay_tasks import main

    main([str(run_dir), *(["--broker", broker] if broker else [])])
