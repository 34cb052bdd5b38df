"""Terminal output shared by the commands: progress over job steps, summary tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from geo.privacy import is_small_count
from workers.overlay_job import STEPS, OverlayOutputs

_GROUP_TITLES = {
    "population": "People",
    "disability": "Disabled",
    "older": "Older",
    "electricity_dependent": "Elec.dep.",
}
_FACILITY_COLUMNS = ("hospital", "care_home", "shelter", "school")


def _count(value: float, hidden: bool, min_count: int | None) -> str:
    """A count for the terminal; small registry counts hidden as in the public files."""
    if hidden and min_count is not None and is_small_count(value, min_count):
        return f"<{min_count}"
    return f"{value:,.0f}"


@contextmanager
def progress_steps(console: Console) -> Iterator[Callable[[str], None]]:
    """A progress bar over the overlay job's steps; yields the callback the job calls."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description:<14}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=len(STEPS))
        seen: list[str] = []

        def step(name: str) -> None:
            if seen:
                progress.advance(task)
            seen.append(name)
            progress.update(task, description=name)

        yield step
        progress.update(task, completed=len(STEPS))


def print_overlay_summary(console: Console, outputs: OverlayOutputs) -> None:
    """Print the totals by class, facilities hit, access losses and where the files are."""
    result = outputs.result
    totals = result.totals
    groups = [c for c in _GROUP_TITLES if c in totals.columns]
    facilities = [c for c in _FACILITY_COLUMNS if c in totals.columns]
    table = Table(title=f"{result.region}: {outputs.hazard.kind.value.replace('_', ' ')} "
                        f"from {outputs.hazard.source.rsplit('/', 1)[-1]}")
    table.add_column("Class", no_wrap=True)
    table.add_column("km²", justify="right")
    for col in groups:
        table.add_column(_GROUP_TITLES[col], justify="right")
    if facilities:
        table.add_column("Facilities", justify="right")
    areas = dict(zip(result.footprint["class"], result.footprint["area_km2"], strict=True))
    omitted = 0
    for _, row in totals.sort_values("class", ascending=False).iterrows():
        k = int(row["class"])
        if k == 0:
            continue
        if areas.get(k, 0.0) == 0.0 and row["population"] < 0.5:
            omitted += 1
            continue
        cells = [_count(row[c], c in outputs.hidden_columns, outputs.min_public_count)
                 for c in groups]
        if facilities:
            cells.append(f"{int(sum(row[c] for c in facilities)):,}")
        table.add_row(str(row["label"]), f"{areas.get(k, 0.0):,.1f}", *cells)
    if omitted:
        table.caption = f"{omitted} empty classes not shown"
    console.print(table)
    if result.impassable_from_class is None:
        console.print("Access to care: not assessed (this hazard does not close roads by itself)")
    for ftype, row in result.access.groupby("facility_type")[["population", "disability"]].sum(
    ).iterrows():
        disabled = _count(row["disability"], "disability" in outputs.hidden_columns,
                          outputs.min_public_count)
        console.print(
            f"Cut off from the nearest {str(ftype).replace('_', ' ')} within "
            f"{result.access_threshold_min:g} min by the hazard: {row['population']:,.0f} "
            f"people, {disabled} with disabilities"
        )
    console.print(f"Facilities in a severity class: {len(result.facilities_hit)}")
    console.print(f"Outputs in {outputs.exposure_csv.parent}: exposure.csv, access.csv, "
                  "footprint.gpkg, map.png, report.html")
