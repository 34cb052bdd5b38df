"""``tocsin demo``: the main job on the embedded default, with no server.

Builds the sample region once, then overlays every sample hazard feed on it: the three
flood forecast runs (GeoTIFF), the rainfall ensemble (NetCDF, as the probability of 50 mm
over the members), the wind gust forecast (GRIB2) and the earthquake (ShakeMap grid.xml).
Each overlay writes its tables, map and report in a folder of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from feeds.base import ReadOptions
from feeds.region import load_region_pack
from feeds.sample import build_sample_region
from geo.overlay import OverlayCache
from workers.cli.output import print_overlay_summary, progress_steps
from workers.overlay_job import OverlayJob, run_overlay_job

RAIN_PROBABILITY_THRESHOLD_MM = 50.0
"""The demo's rainfall question: how likely is 50 mm in 24 h (the 'heavy' class)?"""


@dataclass(frozen=True, slots=True)
class DemoFeed:
    """One hazard feed of the demo and how to read it."""

    name: str
    path: Path
    options: ReadOptions


def demo_feeds(feed_dir: Path) -> list[DemoFeed]:
    """The demo's hazard feeds, in the order they are played, with their read options."""
    return [
        *[
            DemoFeed(f"flood run {n}", feed_dir / f"flood_depth_run{n}.tif",
                     ReadOptions(kind="flood_depth"))
            for n in (1, 2, 3)
        ],
        DemoFeed("rain ensemble", feed_dir / "rain_forecast.nc",
                 ReadOptions(variable="precipitation_amount", time=0, reduce="exceedance",
                             threshold=RAIN_PROBABILITY_THRESHOLD_MM)),
        DemoFeed("wind gust", feed_dir / "wind_gust.grib2", ReadOptions(variable="gust")),
        DemoFeed("earthquake", feed_dir / "shakemap_grid.xml", ReadOptions(variable="MMI")),
    ]


def run_demo(out: Path, *, console: Console, rebuild: bool = False) -> list[Path]:
    """Build (or reuse) the sample region and overlay every demo feed; return report paths."""
    region_dir = out / "region"
    manifest = region_dir / "region.toml"
    if rebuild or not manifest.exists():
        with console.status("Building the sample region and its hazard feeds..."):
            build_sample_region(region_dir)
    console.print(f"Sample region: {manifest}")
    region = load_region_pack(manifest)
    cache = OverlayCache()
    reports = []
    for feed in demo_feeds(region_dir / "feeds"):
        target = out / "overlays" / feed.path.stem
        console.rule(f"[bold]{feed.name}[/bold]: {feed.path.name}")
        job = OverlayJob(hazard_path=feed.path, out_dir=target, region_manifest=manifest)
        with progress_steps(console) as step:
            outputs = run_overlay_job(job, feed.options, progress=step, cache=cache,
                                      region=region)
        print_overlay_summary(console, outputs)
        reports.append(outputs.report_html)
    console.rule("[bold]done[/bold]")
    for path in reports:
        console.print(f"report: {path}")
    return reports
