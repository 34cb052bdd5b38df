"""Which subscriptions a footprint reaches, fast, and the exposure inside each subscriber's area.

Semantics (exact at cell resolution): a subscription polygon matches when it shares a
positive area with at least one population cell whose class is ``min_class`` or more. A
polygon that only touches such a cell along an edge or at a corner does not match. A zone
code matches when any cell of that zone (cell-centre rasterisation, as in
:mod:`geo.zones`) is in such a class. The matched class is the highest class among those
cells.

How it is fast. The index (built once per region pack and subscription set) holds every
polygon in the population grid's *cell coordinates* (``col, row``; cell ``(r, c)`` is the
square ``[c, c+1] x [r, r+1]``), its cell bounding box, a box of cells inside it and whether
it is a rectangle. For each footprint, :func:`match` keeps the highest and lowest class of
every 16 x 16 block of cells and the highest of every 4 x 4 sub-block (one parallel read of
the class grid into small tables that stay in cache; no table per class level), then, per
polygon, in parallel:

1. the blocks of its bounding box bound its class from above: below ``min_class``, no
   match, no polygon test;
2. a rectangle: the bounding box *is* the polygon: the box's highest class, read from the
   blocks and sub-blocks wholly inside the box and the cells of the others whose maximum
   could raise it;
3. the box's lowest class (when the box lies on the grid) and the highest class of the
   inner box bound it from below, the box's highest class from above; when the bounds
   meet, that is the answer;
4. otherwise (a polygon on a footprint edge) an exact scan-line test: a cell overlaps the
   polygon if and only if an edge passes through the cell's open interior or its centre is
   inside the polygon. Each edge's cells in each row, and each row's run of inside centres,
   are intervals read the same way (skipping blocks that cannot raise the answer), and the
   scan stops once the upper bound is reached: O(edges x rows spanned) plus the cells read,
   never more than the polygon's cells.

Vertices are reprojected from EPSG:4326 with pyproj (edges are first split to at most
:data:`SEGMENT_MAX_DEG` so long edges follow the projection); edges are straight in the
grid's CRS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from alerts._exposure_window import (
    Placed,
    area_window,
    sub_grid,
    to_cell_coords,
    window_layer,
)
from alerts._matching_kernels import (
    block_extrema,
    inner_boxes,
    match_parts,
    zone_max_class,
)
from alerts.errors import SubscriptionError
from alerts.model import ClassExposure, ExposureSummary, FacilityHit, Subscription
from geo.exposure import accumulate, group_counts
from geo.grid import Grid
from geo.overlay import OverlayResult
from geo.region import RegionPack
from geo.types import Group, HazardKind
from geo.zones import ZoneRaster, rasterize_lonlat

SEGMENT_MAX_DEG = 0.1
"""Longest polygon edge (degrees) reprojected as a straight line; about 11 km."""
_RECT_RTOL = 1e-9  # a polygon is a rectangle when its area is its box's within this
_WGS84 = CRS.from_epsg(4326)


@dataclass(frozen=True, slots=True, eq=False)
class SubscriptionIndex:
    """Subscriptions prepared for matching on one population grid.

    Attributes:
        grid: the population grid.
        subscription_ids: ids, in the order of the subscriptions given.
        id_array: the same ids as an object array (matched ids are picked from it).
        part_sub: for every polygon part, the position of its subscription.
        boxes: ``int64 (parts, 4)``: ``row0, row1, col0, col1`` cell ranges (end exclusive)
            clipped to the grid; empty when the part lies off the grid.
        clipped: the part's box extends beyond the grid.
        rectangular: the part equals its bounding box (axis-aligned in the grid).
        inner: ``int64 (parts, 4)`` cell ranges of a box inside the part (empty: none); a
            footprint cell there is a match without a polygon test.
        coords: ``float64 (n, 2)`` ring vertices in cell coordinates ``(col, row)``.
        ring_offsets: start of each ring in ``coords`` (plus the end).
        part_rings: start of each part's rings in ``ring_offsets`` (plus the end).
        zone_sub: position of the subscription of each (subscription, zone) pair.
        zone_idx: zone index (in the zone raster) of each pair.
        zone_raster: the zones of the grid, when zone codes are matched.
        kind_filter: for each hazard kind, which subscriptions want it (empty kinds: all).
    """

    grid: Grid
    subscription_ids: tuple[str, ...]
    id_array: np.ndarray
    part_sub: np.ndarray
    boxes: np.ndarray
    clipped: np.ndarray
    rectangular: np.ndarray
    inner: np.ndarray
    coords: np.ndarray
    ring_offsets: np.ndarray
    part_rings: np.ndarray
    zone_sub: np.ndarray
    zone_idx: np.ndarray
    zone_raster: ZoneRaster | None
    kind_filter: dict[str, np.ndarray]

    @property
    def n_parts(self) -> int:
        """Number of polygon parts indexed."""
        return len(self.part_sub)


@dataclass(frozen=True, slots=True, eq=False)
class MatchResult:
    """The subscriptions a footprint reaches.

    Attributes:
        subscription_ids: matched ids, in index order.
        positions: their positions in the index.
        max_class: the highest class (``uint8``) inside each matched subscription's area.
        exact_tests: polygon parts that needed the exact scan-line test.
    """

    subscription_ids: tuple[str, ...]
    positions: np.ndarray
    max_class: np.ndarray
    exact_tests: int

    def as_dict(self) -> dict[str, int]:
        """``{subscription_id: max_class}``."""
        return dict(zip(self.subscription_ids, self.max_class.tolist(), strict=True))


def build_index(
    subscriptions: Sequence[Subscription], grid: Grid, *, zone_raster: ZoneRaster | None = None
) -> SubscriptionIndex:
    """Prepare subscriptions for :func:`match` on the population grid ``grid``.

    Args:
        subscriptions: validated subscriptions (areas in EPSG:4326 WKT).
        grid: the population grid the overlay's class index is on.
        zone_raster: the zones of ``grid``; needed when subscriptions name zone codes.

    Raises:
        SubscriptionError: unreadable WKT, a non-polygon area, zone codes without a zone
            raster, or codes the zone raster does not know (naming the subscription).
    """
    ids = tuple(s.subscription_id for s in subscriptions)
    owners = np.fromiter((i for i, s in enumerate(subscriptions) for _ in s.areas_wkt),
                         dtype=np.int64)
    wkts = np.array([w for s in subscriptions for w in s.areas_wkt], dtype=object)
    try:
        geoms = shapely.from_wkt(wkts) if len(wkts) else np.empty(0, dtype=object)
    except shapely.errors.GEOSException as exc:
        raise SubscriptionError(f"unreadable area WKT in the subscriptions: {exc}") from exc
    parts, which = shapely.get_parts(geoms, return_index=True)
    bad = shapely.get_type_id(parts) != 3
    if bad.any():
        sub = ids[owners[which[np.flatnonzero(bad)[0]]]]
        raise SubscriptionError(f"subscription {sub!r} has an area that is not a polygon")
    part_sub = owners[which].astype(np.int64)
    cells = to_cell_coords(shapely.segmentize(parts, SEGMENT_MAX_DEG), grid)
    boxes, clipped, rectangular = _cell_boxes(cells, grid)
    coords, ring_offsets, part_rings = _flatten_rings(cells)
    inner = np.zeros((len(cells), 4), dtype=np.int64)
    if len(cells):
        inside = shapely.get_coordinates(shapely.point_on_surface(cells))
        inner_boxes(coords, ring_offsets, part_rings, inside[:, 0].copy(),
                     inside[:, 1].copy(), grid.height, grid.width, inner)
    zone_sub, zone_idx = _zone_pairs(subscriptions, zone_raster)
    kind_filter = _kind_filter(subscriptions)
    return SubscriptionIndex(
        grid=grid, subscription_ids=ids, id_array=np.array(ids, dtype=object),
        part_sub=part_sub, boxes=boxes, clipped=clipped,
        rectangular=rectangular, inner=inner, coords=coords, ring_offsets=ring_offsets,
        part_rings=part_rings, zone_sub=zone_sub, zone_idx=zone_idx, zone_raster=zone_raster,
        kind_filter=kind_filter,
    )


def match(
    index: SubscriptionIndex,
    class_index: np.ndarray,
    *,
    min_class: int = 1,
    hazard_kind: str | None = None,
) -> MatchResult:
    """The subscriptions whose area holds a cell of class ``min_class`` or more.

    Args:
        index: from :func:`build_index` on the grid of ``class_index``.
        class_index: ``uint8`` class of every population cell (the overlay's
            ``class_index``), shape ``index.grid.shape``.
        min_class: the lowest class that counts (1: the whole footprint).
        hazard_kind: when given, subscriptions not wanting this kind are left out.

    Returns:
        Matched subscriptions with the highest class inside each one's area. (The alert
        level a subscriber asked for is decided later, from the priority, not here.)

    Raises:
        SubscriptionError: ``class_index`` not on the index's grid, bad ``min_class`` or kind.
    """
    cls = np.ascontiguousarray(class_index)
    if cls.shape != index.grid.shape or cls.dtype != np.uint8:
        raise SubscriptionError(
            f"class_index must be uint8 of the index grid's shape {index.grid.shape}, got "
            f"{cls.dtype} {cls.shape}"
        )
    if not 1 <= min_class <= 255:
        raise SubscriptionError(f"min_class must be 1..255, got {min_class}")
    if hazard_kind is not None and hazard_kind not in index.kind_filter:
        raise SubscriptionError(
            f"unknown hazard kind {hazard_kind!r}; valid kinds are {sorted(index.kind_filter)}"
        )
    best = np.zeros(len(index.subscription_ids), dtype=np.uint8)
    exact = 0
    top = int(cls.max()) if cls.size else 0
    if top >= min_class:
        if index.n_parts:
            block_max, block_min, sub_max = block_extrema(cls)
            part_best = np.zeros(index.n_parts, dtype=np.uint8)
            exact = int(match_parts(
                cls, block_max, block_min, sub_max, min_class, index.boxes, index.clipped,
                index.rectangular, index.inner, index.coords, index.ring_offsets,
                index.part_rings, part_best,
            ))
            np.maximum.at(best, index.part_sub, part_best)
        if len(index.zone_sub):
            assert index.zone_raster is not None
            zone_best = zone_max_class(index.zone_raster.index, cls, min_class,
                                       index.zone_raster.n_zones)
            np.maximum.at(best, index.zone_sub, zone_best[index.zone_idx])
    if hazard_kind is not None:
        best[~index.kind_filter[hazard_kind]] = 0
    positions = np.flatnonzero(best)
    return MatchResult(
        subscription_ids=tuple(index.id_array[positions].tolist()),
        positions=positions, max_class=best[positions], exact_tests=exact,
    )


def exposure_for(
    subscription: Subscription,
    result: OverlayResult,
    zone_raster: ZoneRaster,
    *,
    region: RegionPack | None = None,
) -> ExposureSummary:
    """Exposure of one event inside one subscriber's own area.

    Zone codes only: the overlay's exposure rows of those zones (the same share-based
    figures as the event totals, with people cut off from hospitals). With polygons: the
    polygons (and any zones) rasterised on the population grid by cell centre, and people
    and groups summed by the dominant class of each cell with
    :func:`geo.exposure.accumulate`; cut-off figures are then 0 (the overlay keeps them by
    zone only). Footprint area is the true area of the cells of class 1 and above.

    Args:
        subscription: the subscriber.
        result: the overlay of the event.
        zone_raster: the zones of the population grid (``result.population_grid``).
        region: the region pack; required for polygon areas (population and groups).

    Raises:
        SubscriptionError: zone raster on another grid, unknown zone codes, or polygons
            without ``region``.
    """
    grid = result.population_grid
    if not zone_raster.grid.same_as(grid):
        raise SubscriptionError("zone_raster is not on the overlay's population grid")
    positions = _zone_positions(subscription, zone_raster)
    if subscription.areas_wkt and region is None:
        raise SubscriptionError(
            f"subscription {subscription.subscription_id!r} has polygons: exposure inside "
            "them needs the region pack (population and groups)"
        )
    if not subscription.areas_wkt:
        return _zone_exposure(subscription, result, zone_raster, positions)
    # Everything below works on the window of the subscriber's area only: a small area on a
    # 10,000 x 10,000 grid costs its own cells, not the grid's (10,000 subscribers at once).
    win = area_window(subscription, zone_raster, positions, region)
    window_grid = sub_grid(grid, win)
    rows, cols = win
    zone_index = zone_raster.index[rows, cols]
    inside = np.isin(zone_index, positions) if len(positions) else np.zeros(
        window_grid.shape, dtype=bool)
    if subscription.areas_wkt:
        areas = shapely.from_wkt(np.array(subscription.areas_wkt, dtype=object))
        inside |= rasterize_lonlat(areas, window_grid, all_touched=False,
                                   segment_max_deg=SEGMENT_MAX_DEG)
    mask = np.where(inside, 0, -1).astype(np.int16)
    n_classes = result.classes.count
    layers = [window_grid.cell_areas_m2().astype(np.float64)]
    names = ["area_m2"]
    if subscription.areas_wkt:
        assert region is not None
        population = np.ma.filled(region.population.data[rows, cols].astype(np.float32), 0.0)
        population = np.nan_to_num(population, nan=0.0)
        layers.append(population)
        names.append("population")
        sub_zones = ZoneRaster(index=zone_index, zone_ids=zone_raster.zone_ids,
                               names=zone_raster.names, grid=window_grid)
        for group in Group:
            layer = region.groups.get(group)
            if layer is not None:
                counts = group_counts(population, sub_zones, window_layer(layer, win, window_grid))
                layers.append(counts.astype(np.float64))
                names.append(group.value)
    class_index = np.ascontiguousarray(result.class_index[rows, cols])
    sums = accumulate(mask, class_index, layers, 1, n_classes)[:, 0, 1:]
    table = pd.DataFrame({name: sums[i] for i, name in enumerate(names)},
                         index=pd.RangeIndex(1, n_classes + 1, name="class"))
    # Polygon subscribers get no cut-off figures: the overlay keeps those by zone only.
    return _summary(table, result, Placed(inside, win), 0.0, 0.0)


_ZONE_AREAS: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
"""The last event's area per zone and class: ``(class_index, zone index, areas)``."""


def _zone_class_areas(result: OverlayResult, zone_raster: ZoneRaster) -> np.ndarray:
    """Area (m2) of each zone in each class of this event, computed once per event.

    Every zone subscriber of an event shares it, so the grid is read once, not once per
    subscriber. The cache holds the last event only (compared by identity).
    """
    for class_index, zone_index, areas in _ZONE_AREAS:
        if class_index is result.class_index and zone_index is zone_raster.index:
            return areas
    n_zones, n_classes = len(zone_raster.zone_ids), result.classes.count
    areas = accumulate(zone_raster, result.class_index,
                       [zone_raster.grid.cell_areas_m2().astype(np.float64)], n_zones,
                       n_classes)[0]
    _ZONE_AREAS[:] = [(result.class_index, zone_raster.index, areas)]
    return areas


def _zone_exposure(subscription: Subscription, result: OverlayResult, zone_raster: ZoneRaster,
                   positions: np.ndarray) -> ExposureSummary:
    """Exposure of a zone-code subscriber: the overlay's zone rows and the zones' areas."""
    n_classes = result.classes.count
    areas = _zone_class_areas(result, zone_raster)
    by_class = areas[np.asarray(positions, dtype=np.int64)].sum(axis=0)[1:] if len(positions) \
        else np.zeros(n_classes)
    table = pd.DataFrame({"area_m2": by_class},
                         index=pd.RangeIndex(1, n_classes + 1, name="class"))
    rows_ = result.exposure[result.exposure["zone_id"].isin(subscription.zone_codes)
                            & (result.exposure["class"] >= 1)]
    per_class = rows_.groupby("class").sum(numeric_only=True).drop(
        columns=["area_m2"], errors="ignore")
    table = table.join(per_class, how="left").fillna(0.0)
    cut_pop = float(rows_.get("cut_off_hospital_population", pd.Series(0.0)).sum())
    cut_dis = float(rows_.get("cut_off_hospital_disability", pd.Series(0.0)).sum())
    return _summary(table, result, _InZones(zone_raster.index, positions), cut_pop, cut_dis)


@dataclass(frozen=True, slots=True)
class _InZones:
    """Membership of cells in a set of zones, looked up only where asked (facilities)."""

    index: np.ndarray
    positions: np.ndarray

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.isin(self.index[rows, cols], self.positions)


# --- building the index -----------------------------------------------------------------


def _cell_boxes(cells: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell ranges each part overlaps with positive area: floor(min) .. ceil(max)."""
    bounds = shapely.bounds(cells).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(bounds).all(axis=1)
    bounds = np.where(finite[:, None], bounds, 0.0)
    lo = np.floor(bounds[:, [1, 0]])  # row0, col0
    hi = np.ceil(bounds[:, [3, 2]])  # row1, col1
    limit = np.array([grid.height, grid.width], dtype=float)
    clipped = ((lo < 0) | (hi > limit)).any(axis=1)
    lo, hi = np.clip(lo, 0, limit), np.clip(hi, 0, limit)
    boxes = np.column_stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]]).astype(np.int64)
    boxes[~finite] = 0
    box_area = (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1])
    rectangular = finite & (box_area > 0) & (
        np.abs(shapely.area(cells) - box_area) <= _RECT_RTOL * box_area)
    return boxes, clipped, rectangular


def _flatten_rings(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rings, ring_part = shapely.get_rings(cells, return_index=True)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    n_vertices = np.bincount(ring_of, minlength=len(rings))
    ring_offsets = np.concatenate([[0], np.cumsum(n_vertices)]).astype(np.int64)
    n_rings = np.bincount(ring_part, minlength=len(cells))
    part_rings = np.concatenate([[0], np.cumsum(n_rings)]).astype(np.int64)
    return np.ascontiguousarray(coords, dtype=np.float64), ring_offsets, part_rings


def _kind_filter(subscriptions: Sequence[Subscription]) -> dict[str, np.ndarray]:
    every = np.fromiter((not s.hazard_kinds for s in subscriptions), dtype=bool,
                        count=len(subscriptions))
    wanted: dict[str, list[int]] = {kind.value: [] for kind in HazardKind}
    for i, sub in enumerate(subscriptions):
        for kind in sub.hazard_kinds:
            wanted.setdefault(kind, []).append(i)
    filters = {}
    for kind, positions in wanted.items():
        mask = every.copy()
        mask[positions] = True
        filters[kind] = mask
    return filters


def _zone_pairs(
    subscriptions: Sequence[Subscription], zone_raster: ZoneRaster | None
) -> tuple[np.ndarray, np.ndarray]:
    subs: list[int] = []
    zones: list[int] = []
    for i, sub in enumerate(subscriptions):
        if not sub.zone_codes:
            continue
        if zone_raster is None:
            raise SubscriptionError(
                f"subscription {sub.subscription_id!r} names zone codes: build the index "
                "with the region's zone raster"
            )
        found = _zone_positions(sub, zone_raster)
        subs += [i] * len(found)
        zones += found.tolist()
    return np.array(subs, dtype=np.int64), np.array(zones, dtype=np.int64)


def _zone_positions(sub: Subscription, zone_raster: ZoneRaster) -> np.ndarray:
    position = {z: i for i, z in enumerate(zone_raster.zone_ids)}
    unknown = sorted(set(sub.zone_codes) - position.keys())
    if unknown:
        raise SubscriptionError(
            f"subscription {sub.subscription_id!r} names unknown zone code(s) {unknown[:20]}"
        )
    return np.array(sorted({position[z] for z in sub.zone_codes}), dtype=np.int64)


# --- exposure helpers ----------------------------------------------------------------------


def _summary(
    table: pd.DataFrame, result: OverlayResult, inside: Placed | _InZones, cut_pop: float,
    cut_dis: float,
) -> ExposureSummary:
    def col(name: str, k: int) -> float:
        return float(table.at[k, name]) if name in table.columns else 0.0

    by_class = tuple(
        ClassExposure(k=k, label=result.classes.label(k), population=col("population", k),
                      disability=col("disability", k), older=col("older", k),
                      electricity_dependent=col("electricity_dependent", k),
                      area_km2=col("area_m2", k) / 1e6)
        for k in table.index.tolist()
    )
    return ExposureSummary(
        population=sum(c.population for c in by_class),
        disability=sum(c.disability for c in by_class),
        older=sum(c.older for c in by_class),
        electricity_dependent=sum(c.electricity_dependent for c in by_class),
        cut_off_population=cut_pop, cut_off_disability=cut_dis,
        facilities_hit=_facilities_inside(result, inside),
        area_km2=sum(c.area_km2 for c in by_class), by_class=by_class,
    )


def _facilities_inside(result: OverlayResult,
                       inside: Placed | _InZones) -> tuple[FacilityHit, ...]:
    hit = result.facilities_hit
    if hit is None or hit.empty:
        return ()
    grid = result.population_grid
    cols, rows = (~grid.transform) @ (hit.geometry.x.to_numpy(), hit.geometry.y.to_numpy())
    rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    keep = np.zeros(len(hit), dtype=bool)
    if isinstance(inside, _InZones):
        on = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
        keep[on] = inside.at(rows[on], cols[on])
    else:
        rows, cols = rows - inside.row0, cols - inside.col0
        height, width = inside.mask.shape
        on = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        keep[on] = inside.mask[rows[on], cols[on]]
    return tuple(FacilityHit(name=str(r["name"]), type=str(r["type"]),
                             class_label=str(r["label"]))
                 for _, r in hit.loc[keep].iterrows())
