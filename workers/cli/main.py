"""The ``tocsin`` command line.

Each command parses its arguments and calls one job function that the workers also use.
Exit codes: 0 done; 2 bad usage; 3 an input file could not be read (the message names it);
4 the inputs were read but cannot be overlaid (no overlap, empty hazard, CRS or units
mismatch); 5 a delivery failed permanently (``tocsin dispatch``); 6 a feed could not be
polled (``tocsin feeds``); 1 anything unexpected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alerts.errors import AlertError
from feeds.errors import FeedError
from geo.errors import GeoError
from workers.cli.api_cmds import api_key_app, serve
from workers.cli.cap_cmd import cap_app
from workers.cli.dispatch_cmds import beat, deliveries_app, dispatch, worker
from workers.cli.feeds_cmds import feeds_app, run
from workers.cli.metrics_cmd import metrics
from workers.cli.options import read_options
from workers.cli.output import print_overlay_summary, progress_steps
from workers.cli.replay_cmds import replay_app
from workers.cli.store_cmds import agency_app, alerts_app, assess, migrate, subscribe_app

EXIT_INPUT_ERROR = 3
EXIT_OVERLAY_ERROR = 4

app = typer.Typer(
    name="tocsin",
    help=(
        "Tocsin: disaster-response geospatial alerting. Reads hazard rasters (GeoTIFF/COG, "
        "NetCDF, GRIB, ShakeMap grid.xml), overlays them on population, vulnerable groups, "
        "facilities and access to care, and writes tables, maps and reports.\n\n"
        "Exit codes: 0 done, 2 bad usage, 3 unreadable input (named in the message), "
        "4 inputs that cannot be overlaid or assessed, 5 a delivery failed permanently, "
        "6 a feed could not be polled, 1 unexpected error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
region_app = typer.Typer(help="Build and inspect region packs (the exposure layers).",
                         no_args_is_help=True)
app.add_typer(region_app, name="region")
app.add_typer(cap_app, name="cap")
app.add_typer(agency_app, name="agency")
app.add_typer(subscribe_app, name="subscribe")
app.add_typer(alerts_app, name="alerts")
app.command("assess")(assess)
app.command("migrate")(migrate)
app.add_typer(deliveries_app, name="deliveries")
app.command("dispatch")(dispatch)
app.command("worker")(worker)
app.command("beat")(beat)
app.command("metrics")(metrics)
app.add_typer(feeds_app, name="feeds")
app.command("run")(run)
app.add_typer(replay_app, name="replay")
app.command("serve")(serve)
app.add_typer(api_key_app, name="api-key")

console = Console(stderr=False)
err_console = Console(stderr=True)


def _parse_breaks(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            f"--breaks must be numbers separated by commas, e.g. 0.15,0.5,1.5; got {text!r}"
        ) from exc


@app.command()
def overlay(
    hazard: Annotated[Path, typer.Argument(help="Hazard feed file (GeoTIFF, NetCDF, GRIB, "
                                           "ShakeMap grid.xml[.gz], any GDAL raster).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")],
    region: Annotated[Path | None, typer.Option(
        help="Region pack manifest (region.toml). Or give --population (and --zones).")] = None,
    population: Annotated[Path | None, typer.Option(help="Population raster.")] = None,
    population_kind: Annotated[str, typer.Option(
        help="'counts' (people per cell) or 'density' (people per km², converted with true "
             "cell areas).")] = "counts",
    zones: Annotated[Path | None, typer.Option(help="Admin zones (any vector format).")] = None,
    zone_id: Annotated[str, typer.Option(help="Id column of --zones.")] = "zone_id",
    zones_crs: Annotated[str | None, typer.Option(
        help="CRS of --zones when the file has none, e.g. EPSG:26916.")] = None,
    variable: Annotated[str | None, typer.Option(
        help="Variable, field or band: NetCDF variable, GRIB shortName, ShakeMap field "
             "(MMI, PGA, PGV), or band=N.")] = None,
    time: Annotated[str | None, typer.Option(help="Time to select (ISO time or index).")] = None,
    member: Annotated[str | None, typer.Option(
        help="Ensemble member to select (index), or a reduction over members: max, mean, "
             "min, exceedance (with --threshold).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="With --member exceedance: the share of members at or above this value.")] = None,
    units: Annotated[str | None, typer.Option(
        help="Units of the hazard values when the file does not say or says wrongly "
             "(m, mm, m s-1, MMI...).")] = None,
    kind: Annotated[str | None, typer.Option(
        help="Hazard kind when the file does not say (flood_depth, rainfall, wind_gust, "
             "shaking_mmi, ...).")] = None,
    nodata: Annotated[float | None, typer.Option(
        help="No-data sentinel overriding a wrong declared value (e.g. -9999).")] = None,
    breaks: Annotated[str | None, typer.Option(
        help="Class breaks (lower bounds, increasing), e.g. 0.15,0.5,1.5; classes are "
             "[b_k, b_k+1) and the top one is open.")] = None,
    audience: Annotated[str, typer.Option(
        help="'public' hides registry counts below the pack's minimum; 'owner' shows all.")
    ] = "public",
    windowed: Annotated[bool, typer.Option(
        help="Read --population window by window (bounded memory; people only). Automatic "
             "for rasters over 150 million cells.")] = False,
    impassable_from_class: Annotated[int | None, typer.Option(
        help="Hazard class (1 = lowest) from which cells block travel when computing access "
             "to care. Default: flood 0.5 m, MMI VIII; not assessed for other kinds.")] = None,
) -> None:
    """Overlay one hazard on population, vulnerable groups, facilities and access to care.

    Writes exposure.csv, access.csv, footprint.gpkg, map.png and report.html into --out, and
    prints a summary by severity class.
    """
    from workers.overlay_job import OverlayJob, run_overlay_job

    if region is None and population is None:
        raise typer.BadParameter("give --region PACK, or --population RASTER (and --zones)")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {out} exists and is not a folder")
    if audience not in ("public", "owner"):
        raise typer.BadParameter(f"--audience must be 'public' or 'owner', got {audience!r}")
    if population_kind not in ("counts", "density"):
        raise typer.BadParameter(f"--population-kind must be counts or density, got "
                                 f"{population_kind!r}")
    options = read_options(variable=variable, time=time, member=member, threshold=threshold,
                           kind=kind, nodata=nodata, units=units)
    job = OverlayJob(hazard_path=hazard, out_dir=out, region_manifest=region,
                     population=population, population_kind=population_kind, zones=zones,
                     zone_id_field=zone_id, zones_crs=zones_crs, breaks=_parse_breaks(breaks),
                     audience=audience, impassable_from_class=impassable_from_class,
                     windowed=windowed)
    with _errors_to_exit_codes(), progress_steps(console) as step:
        outputs = run_overlay_job(job, options, progress=step)
    print_overlay_summary(console, outputs)


@region_app.command("sample")
def region_sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the pack into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same "
                                           "files.")] = 7,
    size: Annotated[int, typer.Option(help="Cells a side (100 m cells).")] = 400,
) -> None:
    """Build the deterministic sample region pack and hazard feed files over it."""
    from feeds.sample import build_sample_region

    with _errors_to_exit_codes(), console.status("Building the sample region..."):
        sample = build_sample_region(out, seed=seed, size=size)
    console.print(f"Region pack: [bold]{sample.manifest}[/bold]")
    console.print(f"Hazard feeds in {sample.root / 'feeds'}:")
    for feed in sample.hazards:
        console.print(f"  {feed.path.name}  ({feed.kind}, {feed.format})")


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder for the demo (default: demo/ in TOCSIN_DATA_DIR).")] = None,
    rebuild: Annotated[bool, typer.Option(help="Rebuild the sample region.")] = False,
) -> None:
    """Run the main job on the embedded default: sample region, every feed format, overlays.

    Needs no server. Builds the sample region (once), then overlays each sample hazard feed
    (flood forecast runs, rainfall ensemble, wind gust GRIB2, ShakeMap) and writes each
    overlay's tables, map and report under --out.
    """
    from workers.cli.store_cmds import load_settings
    from workers.demo import run_demo

    with _errors_to_exit_codes():
        run_demo(out or load_settings().data_dir / "demo", console=console, rebuild=rebuild)


class _errors_to_exit_codes:  # noqa: N801 - used as a context manager, reads as a phrase
    """Turn feed and geo errors into a one-line message and a meaningful exit code."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type | None, exc: BaseException | None, _tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, FeedError):
            err_console.print(f"[bold red]error:[/bold red] cannot read input: {exc}")
            raise typer.Exit(EXIT_INPUT_ERROR)
        if isinstance(exc, GeoError):
            err_console.print(f"[bold red]error:[/bold red] cannot overlay: {exc}")
            raise typer.Exit(EXIT_OVERLAY_ERROR)
        if isinstance(exc, AlertError):
            err_console.print(f"[bold red]error:[/bold red] cannot assess: {exc}")
            raise typer.Exit(EXIT_OVERLAY_ERROR)
        return False


def main() -> None:
    """Entry point of the ``tocsin`` console script."""
    app()

