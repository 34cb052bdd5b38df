"""The hazard overlay: one hazard grid against a region pack's exposure layers.

This is the analyst's whole computation and the step the alerting pipeline calls:

1. severity classes of the hazard (defaults per kind, or the caller's breaks);
2. the hazard sampled onto the population grid (population is never interpolated; a finer
   hazard is counted by the share of each population cell in each class);
3. one fused pass over the pre-rasterised zones: people, vulnerable groups by zone and class;
4. facilities by zone and class;
5. footprints polygonised on the hazard's own grid;
6. travel time to care at baseline and with the hazard's severe cells made impassable, giving
   the people (and people with disabilities) beyond the access threshold only because of it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from types import MappingProxyType

import geopandas as gpd
import numpy as np
import pandas as pd

from geo.access import (
    AccessBaseline,
    access_under_hazard,
    compute_access_baseline,
    newly_cut_off,
    times_on_grid,
)
from geo.classes import SeverityClasses, classify, default_classes, default_resampling
from geo.errors import GeoError
from geo.exposure import (
    accumulate,
    exposure_frame,
    facilities_by_zone_class,
    group_counts,
    totals_by_class,
)
from geo.footprints import build_footprints
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.region import RegionPack
from geo.sampling import class_shares, sample_hazard
from geo.types import FacilityType, Group, HazardKind, Resampling
from geo.zones import ZoneRaster, rasterize_zones

ACCESS_FACILITY_TYPES: tuple[FacilityType, ...] = (FacilityType.HOSPITAL, FacilityType.SHELTER)
"""Facility types whose travel time is reported: care and refuge."""

IMPASSABLE_FROM_VALUE: Mapping[HazardKind, float] = MappingProxyType({
    # 0.5 m of water floats cars and knocks adults over: roads are closed from there.
    HazardKind.FLOOD_DEPTH: 0.5,
    # MMI VIII: heavy damage to ordinary buildings, debris and damaged bridges block roads.
    HazardKind.SHAKING_MMI: 7.5,
})
"""For each kind that blocks travel, the hazard value from which cells become impassable.

Kinds absent here (wind, rain, heat) do not cut roads by themselves: access is assessed for
them only when the caller names a class.
"""


class UnitsMismatchError(GeoError, ValueError):
    """The hazard's units differ from the units of the class breaks."""


@dataclass(frozen=True, slots=True)
class OverlayOptions:
    """What the caller may choose about an overlay.

    Attributes:
        classes: severity classes; ``None`` takes the hazard kind's defaults.
        resampling: how the hazard is sampled; ``None`` takes the kind's default.
        impassable_from_class: hazard cells of this class and above block travel; ``None``
            takes the first class at or above the kind's value in
            :data:`IMPASSABLE_FROM_VALUE` (flood: 0.5 m; MMI: VIII), and no access
            assessment for kinds that do not block travel.
        access_types: facility types whose access is computed.
        max_footprint_vertices: vertex budget per footprint polygon.
    """

    classes: SeverityClasses | None = None
    resampling: Resampling | None = None
    impassable_from_class: int | None = None
    access_types: tuple[FacilityType, ...] = ACCESS_FACILITY_TYPES
    max_footprint_vertices: int = 2000


@dataclass(slots=True)
class OverlayCache:
    """Per-region-pack work done once and reused for every hazard: zones and baselines."""

    zone_rasters: MutableMapping[Grid, ZoneRaster] = field(default_factory=dict)
    access_baselines: MutableMapping[FacilityType, AccessBaseline] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OverlayResult:
    """Everything an overlay found, as plain tables and geometries.

    Attributes:
        region: name of the region pack.
        hazard_source: where the hazard came from.
        classes: the severity classes used.
        exposure: one row per zone and class (class 0, ``below``, included) with people,
            vulnerable groups and facilities by type.
        totals: the same summed over zones, one row per class.
        footprint: class polygons with areas.
        facilities_hit: facilities in class 1 or above, with their class.
        access: per zone and facility type, people and people with disabilities beyond the
            access threshold only because of the hazard; empty without friction/facilities.
        class_index: dominant class of every population cell (for maps).
        population_grid: the grid of ``class_index``.
        impassable_from_class: the class from which cells blocked travel (``None``: access
            was not assessed for this hazard).
        access_threshold_min: the access threshold used.
    """

    region: str
    hazard_source: str
    classes: SeverityClasses
    exposure: pd.DataFrame
    totals: pd.DataFrame
    footprint: gpd.GeoDataFrame
    facilities_hit: gpd.GeoDataFrame
    access: pd.DataFrame
    class_index: np.ndarray
    population_grid: Grid
    impassable_from_class: int | None
    access_threshold_min: float


def run_overlay(
    hazard: HazardGrid,
    region: RegionPack,
    options: OverlayOptions | None = None,
    cache: OverlayCache | None = None,
) -> OverlayResult:
    """Overlay one 2-D hazard grid on a region pack.

    Args:
        hazard: the hazard, with any time or member dimension already selected or reduced.
        region: the exposure layers.
        options: classes, resampling and access choices.
        cache: zones rasterised and access baselines from earlier overlays of the same pack.

    Returns:
        The exposure tables, footprints, facilities hit and access losses.

    Raises:
        GeoError: no overlap, no valid hazard value, units or CRS mismatch, bad breaks.
    """
    options = options or OverlayOptions()
    cache = cache if cache is not None else OverlayCache()
    classes = options.classes or default_classes(hazard.kind)
    _check_units(hazard, classes)
    resampling = options.resampling or default_resampling(hazard.kind)
    values = hazard.values_2d()
    pop = region.population
    shares = class_shares(values, hazard.grid, pop.grid, classes, resampling=resampling)

    zone = _zone_raster(region, cache)
    layers, layer_names = _exposure_layers(region, zone)
    impassable_from = _impassable_from(options, hazard, classes)
    access_layers, access_names = _access_layers(
        hazard, values, region, layers, layer_names, classes, impassable_from, options, cache
    )
    sums = accumulate(zone, shares, layers + access_layers, len(zone.zone_ids),
                      classes.count)
    exposure = exposure_frame(sums, zone.zone_ids, zone.names, classes,
                              layer_names + access_names)
    class_index = shares.dominant_index()
    exposure = _add_facilities(exposure, region, zone, class_index)
    totals = totals_by_class(exposure)
    access = _access_table(exposure, access_names)

    footprint = build_footprints(
        classify(values, classes.breaks), hazard.grid, classes,
        max_vertices=options.max_footprint_vertices,
    )
    hit = _facilities_hit(region, class_index, classes)
    return OverlayResult(
        region=region.name, hazard_source=hazard.source, classes=classes, exposure=exposure,
        totals=totals, footprint=footprint, facilities_hit=hit, access=access,
        class_index=class_index, population_grid=pop.grid,
        impassable_from_class=impassable_from,
        access_threshold_min=region.access_threshold_min,
    )


_UNIT_ALIASES = {"m/s": "m s-1", "m s**-1": "m s-1", "ms-1": "m s-1", "kg m-2": "mm",
                 "metre": "m", "meter": "m", "metres": "m", "meters": "m", "pctg": "%g"}


_UNKNOWN_UNITS = frozenset({"", "unknown", "none", "n/a"})


def _norm_units(units: str) -> str:
    u = units.strip().lower()
    return _UNIT_ALIASES.get(u, u)


def _check_units(hazard: HazardGrid, classes: SeverityClasses) -> None:
    # A hazard that declares no units is taken to be in the breaks' units (a GeoTIFF band
    # rarely says); one that declares other units is refused rather than misclassified.
    declared = _norm_units(hazard.units) if hazard.units else ""
    if declared in _UNKNOWN_UNITS:
        return
    if classes.units and declared != _norm_units(classes.units):
        raise UnitsMismatchError(
            f"hazard from {hazard.source} is in {hazard.units!r} but the class breaks are in "
            f"{classes.units!r}; convert the hazard or give breaks in {hazard.units!r}"
        )


def _zone_raster(region: RegionPack, cache: OverlayCache) -> ZoneRaster:
    grid = region.population.grid
    if grid not in cache.zone_rasters:
        zones = region.zones
        if zones is None:
            zones = gpd.GeoDataFrame(
                {"zone_id": ["all"], "name": ["all"]},
                geometry=[_grid_box(grid)], crs=grid.crs,
            )
        cache.zone_rasters[grid] = rasterize_zones(zones, grid)
    return cache.zone_rasters[grid]


def _grid_box(grid: Grid) -> object:
    from shapely.geometry import box

    return box(*grid.bounds)


def _exposure_layers(region: RegionPack, zone: ZoneRaster) -> tuple[list[np.ndarray], list[str]]:
    population = region.population.filled(0.0, np.float32)
    layers = [population]
    names = ["population"]
    for group in Group:
        layer = region.groups.get(group)
        if layer is not None:
            layers.append(np.asarray(group_counts(population, zone, layer), dtype=np.float32))
            names.append(group.value)
    return layers, names


def _add_facilities(
    exposure: pd.DataFrame, region: RegionPack, zone: ZoneRaster, class_index: np.ndarray
) -> pd.DataFrame:
    if region.facilities is None or region.facilities.empty:
        return exposure
    # Facilities are counted in the dominant class of the cell they stand in.
    counts = facilities_by_zone_class(region.facilities, region.population.grid, zone, class_index)
    out = exposure.merge(counts, on=["zone_id", "class"], how="left")
    ftypes = [ftype.value for ftype in FacilityType]
    for col in ftypes:
        out[col] = out[col].fillna(0).astype(int) if col in out else 0
    access = [c for c in out.columns if c.startswith("cut_off_")]
    rest = [c for c in out.columns if c not in ftypes and c not in access]
    return out[rest + ftypes + access]


def _facilities_hit(
    region: RegionPack, class_index: np.ndarray, classes: SeverityClasses
) -> gpd.GeoDataFrame:
    facilities = region.facilities
    columns = ["facility_id", "name", "type", "class", "label", "geometry"]
    if facilities is None or facilities.empty:
        return gpd.GeoDataFrame(
            columns=columns, geometry="geometry", crs=region.population.grid.crs
        )
    grid = region.population.grid
    cols, rows = (~grid.transform) @ (facilities.geometry.x.to_numpy(),
                                      facilities.geometry.y.to_numpy())
    rows = np.floor(rows).astype(int)
    cols = np.floor(cols).astype(int)
    inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    cls = np.zeros(len(facilities), dtype=int)
    cls[inside] = class_index[rows[inside], cols[inside]]
    hit = facilities.assign(**{"class": cls}).loc[cls > 0].copy()
    hit["label"] = [classes.label(int(k)) for k in hit["class"]]
    return hit[columns].sort_values(["class", "type", "name"], ascending=[False, True, True])


def _impassable_from(
    options: OverlayOptions, hazard: HazardGrid, classes: SeverityClasses
) -> int | None:
    if options.impassable_from_class is not None:
        k = options.impassable_from_class
        if not 1 <= k <= classes.count:
            raise GeoError(f"impassable_from_class must be 1..{classes.count}, got {k}")
        return k
    threshold = IMPASSABLE_FROM_VALUE.get(hazard.kind)
    if threshold is None:
        return None
    for k in range(1, classes.count + 1):
        if classes.lower(k) >= threshold:
            return k
    return None


def _access_layers(
    hazard: HazardGrid,
    values: np.ndarray,
    region: RegionPack,
    layers: list[np.ndarray],
    layer_names: list[str],
    classes: SeverityClasses,
    impassable_from: int | None,
    options: OverlayOptions,
    cache: OverlayCache,
) -> tuple[list[np.ndarray], list[str]]:
    """People (and people with disabilities) newly beyond the access threshold, per cell."""
    facilities = region.facilities
    if (impassable_from is None or region.friction is None or facilities is None
            or facilities.empty):
        return [], []
    friction_grid = region.friction.grid
    on_friction = sample_hazard(
        values, hazard.grid, friction_grid,
        resampling=options.resampling or default_resampling(hazard.kind), allow_empty=True,
    )
    impassable = classify(on_friction, classes.breaks) >= impassable_from
    population = layers[0]
    disability = (layers[layer_names.index(Group.DISABILITY.value)]
                  if Group.DISABILITY.value in layer_names else None)
    out_layers: list[np.ndarray] = []
    out_names: list[str] = []
    pop_grid = region.population.grid
    for ftype in options.access_types:
        if not (facilities["type"] == ftype.value).any():
            continue
        if ftype not in cache.access_baselines:
            cache.access_baselines[ftype] = compute_access_baseline(
                region.friction, facilities, ftype
            )
        baseline = cache.access_baselines[ftype]
        cut = newly_cut_off(
            times_on_grid(baseline.times_min, friction_grid, pop_grid),
            times_on_grid(access_under_hazard(baseline, impassable), friction_grid, pop_grid),
            region.access_threshold_min,
        )
        out_layers.append(np.where(cut, population, np.float32(0)))
        out_names.append(f"cut_off_{ftype.value}_population")
        if disability is not None:
            out_layers.append(np.where(cut, disability, np.float32(0)))
            out_names.append(f"cut_off_{ftype.value}_disability")
    return out_layers, out_names


def _access_table(exposure: pd.DataFrame, access_names: list[str]) -> pd.DataFrame:
    """Per zone and facility type: people newly cut off, summed over the classes they live in."""
    rows = []
    for name in access_names:
        if not name.endswith("_population"):
            continue
        ftype = name.removeprefix("cut_off_").removesuffix("_population")
        dis_col = f"cut_off_{ftype}_disability"
        cols = [name] + ([dis_col] if dis_col in exposure else [])
        per_zone = exposure.groupby(["zone_id", "zone_name"], as_index=False, sort=False)[
            cols].sum()
        per_zone = per_zone.rename(columns={name: "population", dis_col: "disability"})
        if "disability" not in per_zone:
            per_zone["disability"] = np.nan
        per_zone.insert(2, "facility_type", ftype)
        rows.append(per_zone)
    if not rows:
        return pd.DataFrame(columns=["zone_id", "zone_name", "facility_type", "population",
                                     "disability"])
    return pd.concat(rows, ignore_index=True)
