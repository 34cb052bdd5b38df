"""From an overlay to the inputs of alerting: what the hazard is and who it reaches.

The overlay (:func:`geo.overlay.run_overlay`) gives tables per zone and class; alerting needs
two small values: a :class:`~alerts.model.HazardSummary` (kind, classes reached, times,
certainty inputs) and an :class:`~alerts.model.ExposureSummary` (people, vulnerable groups,
people cut off from care, facilities hit, area), over the whole region or inside the zones
one subscriber named. Pure functions: values in, values out.

Conventions:

* people and groups are counted in severity classes ``>= from_class`` (class 0 is "below");
* people cut off from care are the hospital figures (``cut_off_hospital_*``) summed over
  EVERY class, class 0 included: a road cut by the flood strands people who stay dry;
* the area is the exact area of the classified hazard cells (``cell_area_km2`` of the
  footprint), not the area of the generalised polygons.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import replace

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from alerts.errors import AlertError, SubscriptionError
from alerts.model import ClassExposure, ExposureSummary, FacilityHit, HazardSummary
from geo.classes import SeverityClasses, classify
from geo.hazard import HazardGrid
from geo.overlay import OverlayResult
from geo.types import HazardKind, Nature
from geo.zones import ZoneRaster

GROUP_COLUMNS: tuple[str, ...] = ("disability", "older", "electricity_dependent")
"""Vulnerable-group columns of the overlay's exposure table, as ExposureSummary names them."""

CUT_OFF_FACILITY_TYPE = "hospital"
"""Access to care means access to a hospital: its ``cut_off_*`` columns are reported."""

_PERCENT_UNITS = frozenset({"%", "percent", "pct"})


def summarize_hazard(
    hazard: HazardGrid, classes: SeverityClasses, max_class: int
) -> HazardSummary:
    """Summarise a hazard grid for alerting.

    Args:
        hazard: the 2-D hazard that was overlaid.
        classes: the severity classes the overlay used.
        max_class: the highest class reached anywhere (see :func:`max_class_of`).

    Returns:
        The summary. ``onset`` is the valid time of a forecast and the issue time of an
        observation (falling back to its valid time). ``exceedance_share`` is, for
        probability grids only, the highest share of ensemble members over the threshold
        (units ``"1"``, or ``"%"`` converted), else ``None``.

    Raises:
        AlertError: ``max_class`` is outside ``0..classes.count``, or a probability grid
            holds shares outside 0..1.
    """
    if not 0 <= max_class <= classes.count:
        raise AlertError(
            f"max_class must be between 0 and {classes.count} (the classes of {hazard.source}),"
            f" got {max_class}"
        )
    if hazard.nature == Nature.OBSERVED:
        onset = hazard.issued_at if hazard.issued_at is not None else hazard.valid_at
    else:
        onset = hazard.valid_at
    return HazardSummary(
        kind=hazard.kind.value,
        nature=hazard.nature.value,
        units=hazard.units,
        n_classes=classes.count,
        max_class=max_class,
        max_class_label=classes.label(max_class),
        issued_at=hazard.issued_at,
        onset=onset,
        exceedance_share=_exceedance_share(hazard, classes),
        source=hazard.source,
        checksum=hazard.checksum,
        source_event_id=hazard.event_id,
    )


def _exceedance_share(hazard: HazardGrid, classes: SeverityClasses) -> float | None:
    """Highest member share inside the footprint (anywhere if nothing is classified)."""
    if hazard.kind != HazardKind.PROBABILITY:
        return None
    values = hazard.values_2d()
    if hazard.units.strip().lower() in _PERCENT_UNITS:
        values = values / 100.0
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return None
    if valid.min() < 0.0 or valid.max() > 1.0:
        raise AlertError(
            f"probability hazard from {hazard.source} holds shares from {valid.min():g} to "
            f"{valid.max():g}; expected shares of members between 0 and 1 (units '1' or '%')"
        )
    inside = classify(values, classes.breaks) >= 1
    return float(np.nanmax(values[inside]) if inside.any() else valid.max())


def max_class_of(result: OverlayResult) -> int:
    """Highest severity class with at least one hazard cell (0 when the footprint is empty)."""
    footprint = result.footprint
    if footprint.empty:
        return 0
    if "cells" in footprint:
        footprint = footprint[footprint["cells"] > 0]
    return int(footprint["class"].max()) if not footprint.empty else 0


def footprint_lonlat(result: OverlayResult, *, from_class: int = 1) -> BaseGeometry:
    """The footprint of classes ``>= from_class`` as one geometry in EPSG:4326 (lon, lat).

    This is the shape event identity compares across feed runs (:mod:`alerts.events`); it
    is empty when no cell reaches ``from_class``.

    Raises:
        AlertError: ``from_class`` is outside ``1..classes.count``.
    """
    _check_from_class(result, from_class)
    footprint = result.footprint
    if footprint.empty:
        return shapely.Polygon()
    parts = footprint[footprint["class"] >= from_class]
    if parts.empty:
        return shapely.Polygon()
    return shapely.union_all(parts.to_crs("EPSG:4326").geometry.to_numpy())


def summarize_exposure(result: OverlayResult, *, from_class: int = 1) -> ExposureSummary:
    """Exposure of the whole region to one overlay.

    Args:
        result: the overlay.
        from_class: the lowest class counted as exposed (1: every class above "below").

    Returns:
        People and groups in classes ``>= from_class``; people cut off from hospitals (all
        classes); facilities standing in classes ``>= from_class`` (none marked cut off:
        the overlay does not tell which facilities are unreachable); the footprint area of
        those classes on the hazard grid (it may reach beyond the region); per class figures,
        most severe last.

    Raises:
        AlertError: ``from_class`` is outside ``1..classes.count``.
    """
    _check_from_class(result, from_class)
    area_by_class = _footprint_area_by_class(result)
    summary = _summary_from_rows(result, result.totals, from_class, area_by_class)
    hits = result.facilities_hit
    hits = hits[hits["class"] >= from_class] if not hits.empty else hits
    facilities = tuple(
        FacilityHit(name=str(row.name), type=str(row.type), class_label=str(row.label))
        for row in hits[["name", "type", "label"]].itertuples(index=False)
    )
    return replace(summary, facilities_hit=facilities)


def exposure_in_zones(
    result: OverlayResult,
    zone_ids: Collection[str],
    *,
    from_class: int = 1,
    zone_raster: ZoneRaster | None = None,
) -> ExposureSummary:
    """Exposure inside some zones of the region: the sum of their rows of the overlay.

    Used for subscriptions by zone code, so that each subscriber gets the figures of its own
    area, not the event total.

    Args:
        result: the overlay.
        zone_ids: the zones (``zone_id`` of the region pack); duplicates count once.
        from_class: the lowest class counted as exposed.
        zone_raster: the zones on the population grid (the overlay cache holds it); with it,
            ``area_km2`` is the true area of the population cells of those zones whose
            dominant class is ``>= from_class``; without it the area of a set of zones is
            unknown and ``area_km2`` (and the per-class areas) are ``NaN``, never a guess.

    Returns:
        The summary. ``facilities_hit`` is empty: the overlay does not record the zone of
        each facility hit (the per-zone facility counts are in ``result.exposure``).

    Raises:
        SubscriptionError: no zone given, or zones the region does not have.
        AlertError: ``from_class`` out of range, or a zone raster of another grid.
    """
    _check_from_class(result, from_class)
    wanted = sorted(set(zone_ids))
    if not wanted:
        raise SubscriptionError("no zone id given: name at least one zone of the region pack")
    known = set(result.exposure["zone_id"].astype(str))
    unknown = [z for z in wanted if z not in known]
    if unknown:
        some = ", ".join(sorted(known)[:5])
        raise SubscriptionError(
            f"zone ids {unknown} are not zones of region {result.region!r} "
            f"(it has {len(known)} zones, e.g. {some})"
        )
    rows = result.exposure[result.exposure["zone_id"].astype(str).isin(wanted)]
    per_class = rows.drop(columns=["zone_id", "zone_name"], errors="ignore").groupby(
        ["class", "label"], as_index=False, sort=True
    ).sum(numeric_only=True)
    area_by_class = _zone_area_by_class(result, wanted, zone_raster)
    return _summary_from_rows(result, per_class, from_class, area_by_class)


def _check_from_class(result: OverlayResult, from_class: int) -> None:
    if not 1 <= from_class <= result.classes.count:
        raise AlertError(
            f"from_class must be between 1 and {result.classes.count} (the classes of "
            f"{result.hazard_source}), got {from_class}"
        )


def _summary_from_rows(
    result: OverlayResult,
    per_class: pd.DataFrame,
    from_class: int,
    area_by_class: dict[int, float],
) -> ExposureSummary:
    """Totals of one-row-per-class figures (classes ``>= from_class``), plus cut-offs."""
    exposed = per_class[per_class["class"] >= from_class]
    by_class = []
    for k in range(from_class, result.classes.count + 1):
        row = exposed[exposed["class"] == k]
        by_class.append(ClassExposure(
            k=k,
            label=result.classes.label(k),
            population=_col_sum(row, "population"),
            disability=_col_sum(row, "disability"),
            older=_col_sum(row, "older"),
            electricity_dependent=_col_sum(row, "electricity_dependent"),
            area_km2=area_by_class.get(k, 0.0),
        ))
    return ExposureSummary(
        population=sum(c.population for c in by_class),
        disability=sum(c.disability for c in by_class),
        older=sum(c.older for c in by_class),
        electricity_dependent=sum(c.electricity_dependent for c in by_class),
        # Every class: people outside the footprint lose access too when roads are cut.
        cut_off_population=_col_sum(per_class, f"cut_off_{CUT_OFF_FACILITY_TYPE}_population"),
        cut_off_disability=_col_sum(per_class, f"cut_off_{CUT_OFF_FACILITY_TYPE}_disability"),
        area_km2=sum(c.area_km2 for c in by_class),
        by_class=tuple(by_class),
    )


def _col_sum(frame: pd.DataFrame, column: str) -> float:
    """Sum of a column; 0 when the overlay had no such layer (the region lacks it)."""
    if column not in frame or frame.empty:
        return 0.0
    return float(frame[column].fillna(0.0).sum())


def _footprint_area_by_class(result: OverlayResult) -> dict[int, float]:
    footprint = result.footprint
    if footprint.empty:
        return {}
    # cell_area_km2 is exact (cells times their true area); area_km2 is of the generalised
    # polygons, which cover a little more.
    column = "cell_area_km2" if "cell_area_km2" in footprint else "area_km2"
    return {int(k): float(a) for k, a in zip(footprint["class"], footprint[column], strict=True)}


def _zone_area_by_class(
    result: OverlayResult, zone_ids: list[str], zone_raster: ZoneRaster | None
) -> dict[int, float]:
    if zone_raster is None:
        return {k: math.nan for k in range(1, result.classes.count + 1)}
    if not zone_raster.grid.same_as(result.population_grid):
        raise AlertError(
            f"the zone raster is on another grid than the population of region "
            f"{result.region!r}; rasterise the zones on the overlay's population grid"
        )
    codes = [i for i, z in enumerate(zone_raster.zone_ids) if z in set(zone_ids)]
    in_zones = np.isin(zone_raster.index, codes)
    areas_km2 = result.population_grid.cell_areas_m2() / 1e6
    return {
        k: float(areas_km2[in_zones & (result.class_index == k)].sum())
        for k in range(1, result.classes.count + 1)
    }
