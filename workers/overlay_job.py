"""The analyst's overlay as a job: files in, files out.

Reads a hazard feed file and a region pack, runs :func:`geo.overlay.run_overlay`, and writes
``exposure.csv``, ``access.csv``, ``footprint.gpkg``, ``map.png`` and ``report.html``. The
command line and (later) the workers call this same function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import tomli_w

from feeds.errors import SelectionError
from feeds.read import read_hazard
from feeds.region import load_region_pack
from feeds.windows import raster_grid, read_zones_file, windowed_exposure
from geo.classes import SeverityClasses, classify, default_classes, default_resampling
from geo.exposure import exposure_frame, totals_by_class
from geo.footprints import build_footprints
from geo.hazard import HazardGrid
from geo.maps import render_overlay_map
from geo.overlay import OverlayCache, OverlayOptions, OverlayResult, run_overlay
from geo.privacy import suppress_small_counts
from geo.region import DEFAULT_MIN_PUBLIC_COUNT, RegionPack
from geo.report import map_alt_text, render_report

ProgressFn = Callable[[str], None]
"""Called with the name of each step as it starts (drives a progress bar)."""

STEPS = ("read hazard", "load region", "overlay", "write tables", "draw map", "write report")


@dataclass(frozen=True, slots=True)
class OverlayJob:
    """What to overlay and where to write it.

    Attributes:
        hazard_path: the hazard feed file.
        out_dir: where the outputs go (created).
        region_manifest: a region pack manifest; or else ``population`` (and ``zones``).
        population: a population raster, when there is no region pack.
        population_kind: ``counts`` or ``density`` (people per km2).
        zones: admin units for ``population``.
        zone_id_field: the id column of ``zones``.
        zones_crs: CRS for ``zones`` when the file has none.
        breaks: class breaks, or ``None`` for the hazard kind's defaults.
        audience: ``public`` hides small registry-derived counts; ``owner`` shows all.
        impassable_from_class: hazard class from which cells block travel (``None``: the
            kind's default).
        windowed: read a loose population raster window by window (also automatic above
            :data:`LARGE_RASTER_CELLS`): bounded memory, people only.
    """

    hazard_path: Path
    out_dir: Path
    region_manifest: Path | None = None
    population: Path | None = None
    population_kind: str = "counts"
    zones: Path | None = None
    zone_id_field: str = "zone_id"
    zones_crs: str | None = None
    breaks: tuple[float, ...] | None = None
    audience: str = "public"
    impassable_from_class: int | None = None
    windowed: bool = False


@dataclass(frozen=True, slots=True)
class OverlayOutputs:
    """Paths written by a job, the result they came from, and what was hidden in them.

    ``hidden_columns`` are registry-derived columns whose counts below
    ``min_public_count`` were suppressed (``None``: an owner's outputs, nothing hidden).
    """

    result: OverlayResult
    hazard: HazardGrid
    exposure_csv: Path
    access_csv: Path
    footprint_gpkg: Path
    map_png: Path
    report_html: Path
    hidden_columns: tuple[str, ...] = ()
    min_public_count: int | None = None


def run_overlay_job(
    job: OverlayJob,
    read_options: object | None = None,
    *,
    progress: ProgressFn | None = None,
    cache: OverlayCache | None = None,
    region: RegionPack | None = None,
) -> OverlayOutputs:
    """Run one overlay from files and write its outputs.

    Args:
        job: inputs and output folder.
        read_options: :class:`feeds.base.ReadOptions` for the hazard (variable, time...).
        progress: called with each step's name.
        cache: zone rasters and access baselines reused across jobs on one region.
        region: an already loaded region pack (skips loading ``job``'s layers).

    Raises:
        FeedError: a file could not be read. GeoError: the overlay could not be computed.
    """
    step = progress or (lambda _name: None)
    step("read hazard")
    hazard = read_hazard(job.hazard_path, read_options)  # type: ignore[arg-type]
    require_2d(hazard)
    step("load region")
    job.out_dir.mkdir(parents=True, exist_ok=True)
    classes = _classes(job, hazard)
    if region is None and _streams(job):
        step("overlay")
        return _write_outputs(job, hazard, _windowed_result(job, hazard, classes), None, step)
    if region is None:
        region = load_region_pack(job.region_manifest or write_layers_manifest(job))
    step("overlay")
    options = OverlayOptions(classes=classes, impassable_from_class=job.impassable_from_class)
    result = run_overlay(hazard, region, options, cache)
    return _write_outputs(job, hazard, result, region, step)


def _write_outputs(
    job: OverlayJob,
    hazard: HazardGrid,
    result: OverlayResult,
    region: RegionPack | None,
    step: ProgressFn,
) -> OverlayOutputs:
    step("write tables")
    public = job.audience == "public"
    groups = registry_columns(region) if public and region is not None else []
    # Every column derived from a registry group: the group itself and its cut-off figures.
    hidden = groups + [c for c in result.exposure.columns
                       if c.startswith("cut_off_") and c.rsplit("_", 1)[-1] in groups]
    min_count = region.min_public_count if region is not None else DEFAULT_MIN_PUBLIC_COUNT
    exposure_csv = job.out_dir / "exposure.csv"
    _public_table(result.exposure, hidden, min_count).to_csv(
        exposure_csv, index=False, float_format="%.3f"
    )
    access_csv = job.out_dir / "access.csv"
    access_hidden = ["disability"] if "disability" in groups else []
    _public_table(result.access, access_hidden, min_count).to_csv(
        access_csv, index=False, float_format="%.3f")
    footprint_gpkg = job.out_dir / "footprint.gpkg"
    footprint_gpkg.unlink(missing_ok=True)
    result.footprint.to_file(footprint_gpkg, layer="footprint", driver="GPKG")
    step("draw map")
    title = f"{hazard.kind.value.replace('_', ' ')} over {result.region}"
    png = render_overlay_map(
        result.footprint, result.classes, title=title,
        zones=region.zones if region is not None else None,
        facilities=region.facilities if region is not None else None,
        extent=result.population_grid.bounds,
    )
    map_png = job.out_dir / "map.png"
    map_png.write_bytes(png)
    step("write report")
    report_html = job.out_dir / "report.html"
    report_html.write_text(
        render_report(
            result, title=f"Hazard overlay: {title}", map_png=png, map_alt=map_alt_text(result),
            details=_details(hazard, result.region, job),
            suppressed_columns=hidden + (["access_disability"] if access_hidden else []),
            min_public_count=min_count if public else None,
        ),
        encoding="utf-8",
    )
    return OverlayOutputs(result, hazard, exposure_csv, access_csv, footprint_gpkg, map_png,
                          report_html, tuple(hidden), min_count if public else None)


LARGE_RASTER_CELLS = 150_000_000
"""Loose population rasters above this many cells (600 MB as float32) are read by windows."""


def _streams(job: OverlayJob) -> bool:
    """True when a loose population raster is overlaid window by window (bounded memory)."""
    if job.region_manifest is not None or job.population is None:
        return False
    if job.windowed:
        return True
    height, width = raster_grid(job.population).shape
    return height * width > LARGE_RASTER_CELLS


def _windowed_result(
    job: OverlayJob, hazard: HazardGrid, classes: SeverityClasses
) -> OverlayResult:
    """People by zone and class, streamed from the population file: bounded memory.

    Only counts are supported (a density file would need per-window areas) and only people
    are counted: vulnerable groups, facilities and access need a region pack.
    """
    if job.population_kind != "counts":
        raise SelectionError(job.population, "window-by-window overlays need a counts raster "
                             "(--population-kind counts)")
    assert job.population is not None
    zones = (read_zones_file(job.zones, id_field=job.zone_id_field, crs=job.zones_crs)
             if job.zones is not None else None)
    sums, zone_ids = windowed_exposure(job.population, hazard, zones, classes,
                                       resampling=default_resampling(hazard.kind))
    names = dict(zip(zones["zone_id"], zones["name"], strict=True)) if zones is not None else {}
    exposure = exposure_frame(sums, zone_ids, [names.get(z, z) for z in zone_ids], classes,
                              ["population"])
    grid = raster_grid(job.population)
    footprint = build_footprints(classify(hazard.values_2d(), classes.breaks), hazard.grid,
                                 classes)
    return OverlayResult(
        region=job.population.stem, hazard_source=hazard.source, classes=classes,
        exposure=exposure, totals=totals_by_class(exposure), footprint=footprint,
        facilities_hit=gpd.GeoDataFrame(
            columns=["facility_id", "name", "type", "class", "label", "geometry"],
            geometry="geometry", crs=grid.crs),
        access=pd.DataFrame(columns=["zone_id", "zone_name", "facility_type", "population",
                                     "disability"]),
        class_index=np.zeros((0, 0), dtype=np.uint8), population_grid=grid,
        impassable_from_class=None, access_threshold_min=60.0,
    )


def require_2d(hazard: HazardGrid) -> None:
    """An overlay needs one field: name the dimensions left and the values to choose from."""
    if not hazard.extra_dims:
        return
    choices = []
    for dim in hazard.extra_dims:
        values = [str(v)[:19] for v in hazard.data[dim].values[:6]] if dim in hazard.data.coords \
            else [str(i) for i in range(min(hazard.data.sizes[dim], 6))]
        more = ", ..." if hazard.data.sizes[dim] > 6 else ""
        choices.append(f"{dim} ({hazard.data.sizes[dim]}: {', '.join(values)}{more})")
    raise SelectionError(
        hazard.source,
        "holds several fields along " + "; ".join(choices) + ". Choose one with --time / "
        "--member (an index or a value), or reduce over members with --member max|mean|min|"
        "exceedance",
    )


def _classes(job: OverlayJob, hazard: HazardGrid) -> SeverityClasses:
    if job.breaks is not None:
        return SeverityClasses(job.breaks, hazard.units)
    return default_classes(hazard.kind)


def registry_columns(region: RegionPack) -> list[str]:
    """Exposure columns that come from individual records (privacy rules apply)."""
    return [group.value for group, layer in region.groups.items() if layer.is_registry]


def _public_table(frame: pd.DataFrame, hidden: list[str], min_count: int) -> pd.DataFrame:
    out = frame.copy()
    for col in hidden:
        if col in out:
            values = out[col].to_numpy(float)
            out[col] = np.where(np.isnan(suppress_small_counts(values, min_count)), np.nan,
                                np.rint(values))
    return out


def write_layers_manifest(job: OverlayJob) -> Path:
    """Write a region-pack manifest for loose layers (``--population``/``--zones``).

    The manifest lands in the output folder, so the run can be repeated exactly.
    """
    if job.population is None:
        raise ValueError("give either a region pack (--region) or a population raster")
    manifest: dict[str, object] = {
        "region": {"name": job.population.stem},
        "population": {"path": str(job.population.resolve()), "kind": job.population_kind},
    }
    if job.zones is not None:
        zones: dict[str, str] = {"path": str(job.zones.resolve()), "id": job.zone_id_field}
        if job.zones_crs:
            zones["crs"] = job.zones_crs
        manifest["zones"] = zones
    path = job.out_dir / "region.toml"
    path.write_text(tomli_w.dumps(manifest), encoding="utf-8")
    return path


def _details(hazard: HazardGrid, region_name: str, job: OverlayJob) -> list[tuple[str, str]]:
    rows = [
        ("Hazard", hazard.kind.value.replace("_", " ")),
        ("Source file", Path(hazard.source).name),
        ("Variable", hazard.variable or "(single field)"),
        ("Units", hazard.units or "(none)"),
        ("Observed or forecast", hazard.nature.value),
        ("Issued", hazard.issued_at.isoformat() if hazard.issued_at else "not stated"),
        ("Valid", hazard.valid_at.isoformat() if hazard.valid_at else "not stated"),
        ("Checksum", hazard.checksum),
        ("Region", region_name),
        ("Audience", job.audience),
    ]
    if hazard.event_id:
        rows.insert(1, ("Event", hazard.event_id))
    return rows

