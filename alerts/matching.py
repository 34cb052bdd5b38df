"""Which subscriptions a footprint reaches, fast, and the exposure inside each subscriber's area.

Semantics (exact at cell resolution): a subscription polygon matches when it shares a
positive area with at least one population cell whose class is ``min_class`` or more. A
polygon that only touches such a cell along an edge or at a corner does not match. A zone
code matches when any cell of that zone (cell-centre rasterisation, as in
:mod:`geo.zones`) is in such a class. The matched class is the highest class among those
cells.

How it is fast. The index (built once per region pack and subscription set) holds every
polygon in the population grid's *cell coordinates* (``col, row``; cell ``(r, c)`` is the
square ``[c, c+1] x [r, r+1]``), its cell bounding box and whether it is a rectangle. For each
footprint, :func:`match` builds one summed-area table per class level (``class >= k``,
``int32``) in a single parallel pass, then per polygon:

1. no footprint cell in its bounding box (4 lookups): no match, no polygon test;
2. a rectangle: the bounding box *is* the polygon: the box's highest class;
3. the box entirely of one class or more (count equals box cells): at least that class;
4. otherwise (a polygon on a footprint edge) an exact scan-line test: a cell overlaps the
   polygon if and only if an edge passes through the cell's open interior or its centre is
   inside the polygon. Each edge's cells in each row, and each row's run of inside centres,
   are intervals answered by the table in O(1), so the test costs O(edges x rows spanned),
   never O(cells).

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
from numba import njit, prange
from pyproj import CRS, Transformer
from rasterio.features import rasterize

from alerts.errors import SubscriptionError
from alerts.model import ClassExposure, ExposureSummary, FacilityHit, Subscription
from geo.exposure import accumulate, group_counts
from geo.grid import Grid
from geo.overlay import OverlayResult
from geo.region import RegionPack
from geo.types import Group, HazardKind
from geo.zones import ZoneRaster

SEGMENT_MAX_DEG = 0.1
"""Longest polygon edge (degrees) reprojected as a straight line; about 11 km."""
_STRIPE_COLS = 1024  # columns per parallel stripe when building the summed-area tables
_RECT_RTOL = 1e-9  # a polygon is a rectangle when its area is its box's within this
_WGS84 = CRS.from_epsg(4326)


@dataclass(frozen=True, slots=True, eq=False)
class SubscriptionIndex:
    """Subscriptions prepared for matching on one population grid.

    Attributes:
        grid: the population grid.
        subscription_ids: ids, in the order of the subscriptions given.
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
    cells = _to_cell_coords(shapely.segmentize(parts, SEGMENT_MAX_DEG), grid)
    boxes, clipped, rectangular = _cell_boxes(cells, grid)
    coords, ring_offsets, part_rings = _flatten_rings(cells)
    inner = np.zeros((len(cells), 4), dtype=np.int64)
    if len(cells):
        inside = shapely.get_coordinates(shapely.point_on_surface(cells))
        _inner_boxes(coords, ring_offsets, part_rings, inside[:, 0].copy(),
                     inside[:, 1].copy(), grid.height, grid.width, inner)
    zone_sub, zone_idx = _zone_pairs(subscriptions, zone_raster)
    kind_filter = _kind_filter(subscriptions)
    return SubscriptionIndex(
        grid=grid, subscription_ids=ids, part_sub=part_sub, boxes=boxes, clipped=clipped,
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
    n_subs = len(index.subscription_ids)
    best = np.zeros(n_subs, dtype=np.uint8)
    exact = 0
    top = int(cls.max()) if cls.size else 0
    if top >= min_class:
        if index.n_parts:
            sat = summed_area_tables(cls, min_class, top)
            part_best = np.zeros(index.n_parts, dtype=np.uint8)
            exact = int(_match_parts(
                sat, min_class, index.boxes, index.clipped, index.rectangular, index.inner,
                index.coords,
                index.ring_offsets, index.part_rings, part_best,
            ))
            np.maximum.at(best, index.part_sub, part_best)
        if len(index.zone_sub):
            assert index.zone_raster is not None
            zone_best = _zone_max_class(index.zone_raster.index, cls, min_class,
                                        index.zone_raster.n_zones)
            np.maximum.at(best, index.zone_sub, zone_best[index.zone_idx])
    if hazard_kind is not None:
        best[~index.kind_filter[hazard_kind]] = 0
    positions = np.flatnonzero(best)
    return MatchResult(
        subscription_ids=tuple(index.subscription_ids[i] for i in positions.tolist()),
        positions=positions, max_class=best[positions], exact_tests=exact,
    )


def summed_area_tables(class_index: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``(hi - lo + 1, H + 1, W + 1)`` summed-area tables of ``class_index >= k``, k = lo..hi.

    ``t[k - lo, r, c]`` counts the cells above-left of ``(r, c)`` (exclusive); ``int32``
    while the grid has fewer than 2**31 cells, else ``int64``. One parallel pass.
    """
    height, width = class_index.shape
    dtype = np.int32 if height * width < 2**31 else np.int64
    n_stripes = -(-width // _STRIPE_COLS)
    offsets = _stripe_offsets(class_index, lo, hi - lo + 1, _STRIPE_COLS, n_stripes)
    out = np.empty((hi - lo + 1, height + 1, width + 1), dtype=dtype)
    _fill_tables(class_index, lo, offsets, _STRIPE_COLS, out)
    return out


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
    inside = np.isin(zone_raster.index, positions) if len(positions) else np.zeros(
        grid.shape, dtype=bool)
    if subscription.areas_wkt:
        if region is None:
            raise SubscriptionError(
                f"subscription {subscription.subscription_id!r} has polygons: exposure inside "
                "them needs the region pack (population and groups)"
            )
        inside |= _rasterize_areas(subscription.areas_wkt, grid)
    mask = np.where(inside, 0, -1).astype(np.int16)
    n_classes = result.classes.count
    layers = [grid.cell_areas_m2().astype(np.float64)]
    names = ["area_m2"]
    if subscription.areas_wkt:
        assert region is not None
        population = region.population.filled(0.0, np.float32)
        layers.append(population)
        names.append("population")
        for group in Group:
            layer = region.groups.get(group)
            if layer is not None:
                layers.append(group_counts(population, zone_raster, layer).astype(np.float64))
                names.append(group.value)
    sums = accumulate(mask, result.class_index, layers, 1, n_classes)[:, 0, 1:]
    table = pd.DataFrame({name: sums[i] for i, name in enumerate(names)},
                         index=pd.RangeIndex(1, n_classes + 1, name="class"))
    cut_pop = cut_dis = 0.0
    if not subscription.areas_wkt:
        rows = result.exposure[result.exposure["zone_id"].isin(subscription.zone_codes)
                               & (result.exposure["class"] >= 1)]
        per_class = rows.groupby("class").sum(numeric_only=True).drop(
            columns=["area_m2"], errors="ignore")
        table = table.join(per_class, how="left").fillna(0.0)
        cut_pop = float(rows.get("cut_off_hospital_population", pd.Series(0.0)).sum())
        cut_dis = float(rows.get("cut_off_hospital_disability", pd.Series(0.0)).sum())
    return _summary(table, result, inside, cut_pop, cut_dis)


# --- building the index -----------------------------------------------------------------


def _to_cell_coords(parts: np.ndarray, grid: Grid) -> np.ndarray:
    to_grid = Transformer.from_crs(_WGS84, grid.crs, always_xy=True)
    inverse = ~grid.transform

    def project(lonlat: np.ndarray) -> np.ndarray:
        x, y = to_grid.transform(lonlat[:, 0], lonlat[:, 1])
        col, row = inverse @ (np.asarray(x), np.asarray(y))
        return np.column_stack([col, row])

    return shapely.transform(parts, project) if len(parts) else parts


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


def _rasterize_areas(areas_wkt: Sequence[str], grid: Grid) -> np.ndarray:
    geoms = shapely.segmentize(shapely.from_wkt(np.array(areas_wkt, dtype=object)),
                               SEGMENT_MAX_DEG)
    to_grid = Transformer.from_crs(_WGS84, grid.crs, always_xy=True)
    projected = shapely.transform(
        geoms, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
    burnt = rasterize(((g, 1) for g in projected), out_shape=grid.shape,
                      transform=grid.transform, fill=0, all_touched=False, dtype=np.uint8)
    return burnt.astype(bool)


def _summary(
    table: pd.DataFrame, result: OverlayResult, inside: np.ndarray, cut_pop: float,
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


def _facilities_inside(result: OverlayResult, inside: np.ndarray) -> tuple[FacilityHit, ...]:
    hit = result.facilities_hit
    if hit is None or hit.empty:
        return ()
    grid = result.population_grid
    cols, rows = (~grid.transform) @ (hit.geometry.x.to_numpy(), hit.geometry.y.to_numpy())
    rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    on = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
    keep = np.zeros(len(hit), dtype=bool)
    keep[on] = inside[rows[on], cols[on]]
    return tuple(FacilityHit(name=str(r["name"]), type=str(r["type"]),
                             class_label=str(r["label"]))
                 for _, r in hit.loc[keep].iterrows())


# --- kernels -------------------------------------------------------------------------------


@njit(parallel=True, cache=True)
def _stripe_offsets(cls, lo, n_levels, stripe, n_stripes):  # pragma: no cover - compiled
    """Per row and level, cells ``>= k`` in the stripes left of each stripe (row prefix)."""
    height, width = cls.shape
    out = np.zeros((n_levels, height, n_stripes), dtype=np.int64)
    for r in prange(height):
        for s in range(n_stripes - 1):
            counts = np.zeros(n_levels, dtype=np.int64)
            for c in range(s * stripe, min(width, (s + 1) * stripe)):
                v = cls[r, c]
                for li in range(n_levels):
                    if v >= lo + li:
                        counts[li] += 1
            for li in range(n_levels):
                out[li, r, s + 1] = out[li, r, s] + counts[li]
    return out


@njit(parallel=True, cache=True)
def _fill_tables(cls, lo, offsets, stripe, out):  # pragma: no cover - compiled
    """Fill the summed-area tables stripe by stripe; each stripe's rows stay in cache."""
    height, width = cls.shape
    n_levels, _, n_stripes = offsets.shape
    for s in prange(n_stripes):
        c0, c1 = s * stripe, min(width, (s + 1) * stripe)
        for li in range(n_levels):
            for c in range(c0, c1):
                out[li, 0, c + 1] = 0
            if s == 0:
                for r in range(height + 1):
                    out[li, r, 0] = 0
        for r in range(height):
            for li in range(n_levels):
                k = lo + li
                run = offsets[li, r, s]
                for c in range(c0, c1):
                    if cls[r, c] >= k:
                        run += 1
                    out[li, r + 1, c + 1] = out[li, r, c + 1] + run


@njit(cache=True, inline="always")
def _count(sat, r0, r1, c0, c1):  # pragma: no cover - compiled
    return sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]


@njit(parallel=True, cache=True)
def _match_parts(sat, lo, boxes, clipped, rect, inner, coords, ring_offsets, part_rings,
                 out):  # pragma: no cover - compiled
    """Highest class (or 0) of every part: box tests first, exact scan lines on edges."""
    n_levels = sat.shape[0]
    exact = np.zeros(boxes.shape[0], dtype=np.uint8)
    for p in prange(boxes.shape[0]):
        r0, r1, c0, c1 = boxes[p, 0], boxes[p, 1], boxes[p, 2], boxes[p, 3]
        if r1 <= r0 or c1 <= c0 or _count(sat[0], r0, r1, c0, c1) == 0:
            continue
        upper, full_level = 0, -1
        cells = (r1 - r0) * (c1 - c0)
        for li in range(n_levels - 1, -1, -1):
            n = _count(sat[li], r0, r1, c0, c1)
            if n > 0 and upper == 0:
                upper = li + 1
            if n == cells and not clipped[p]:
                full_level = li
                break
        if rect[p] or full_level == upper - 1:
            out[p] = lo + upper - 1
            continue
        found = _inner_level(sat, inner[p], upper - 1, full_level)
        if found < upper - 1:
            exact[p] = 1
            for li in range(upper - 1, found, -1):
                if _polygon_hits(sat[li], coords, ring_offsets, part_rings[p],
                                 part_rings[p + 1]):
                    found = li
                    break
        if found >= 0:
            out[p] = lo + found
    return exact.sum()


@njit(cache=True, inline="always")
def _inner_level(sat, box, top, floor_level):  # pragma: no cover - compiled
    """Highest level in ``floor_level+1..top`` with a cell in the inner box, else floor."""
    if box[1] > box[0] and box[3] > box[2]:
        for li in range(top, floor_level, -1):
            if _count(sat[li], box[0], box[1], box[2], box[3]) > 0:
                return li
    return floor_level


@njit(cache=True, inline="always")
def _edge_cells_in_row(x0, y0, x1, y1, r, width):  # pragma: no cover - compiled
    """Columns of row ``r`` whose cell interior the edge crosses (``first > last``: none)."""
    if y0 == y1:
        if not (r < y0 < r + 1):
            return 0, -1
        xa, xb = min(x0, x1), max(x0, x1)
    else:
        ya, yb = max(r, min(y0, y1)), min(r + 1.0, max(y0, y1))
        if ya >= yb:
            return 0, -1
        xa = x0 + (ya - y0) * (x1 - x0) / (y1 - y0)
        xb = x0 + (yb - y0) * (x1 - x0) / (y1 - y0)
        xa, xb = min(xa, xb), max(xa, xb)
    if xa == xb:  # vertical: only a cell whose open interior holds x
        ca = int(np.floor(xa))
        cb = ca if ca != xa else ca - 1
    else:
        ca, cb = int(np.floor(xa)), int(np.ceil(xb)) - 1
    return max(ca, 0), min(cb, width - 1)


@njit(cache=True)
def _polygon_hits(sat, coords, ring_offsets, ring0, ring1):  # pragma: no cover - compiled
    """True when a cell counted by ``sat`` overlaps the polygon with positive area."""
    height, width = sat.shape[0] - 1, sat.shape[1] - 1
    n_cross = 0
    for ring in range(ring0, ring1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            y0, y1 = coords[v, 1], coords[v + 1, 1]
            top = min(float(height), np.ceil(max(y0, y1)))
            n_cross += max(0, int(top - max(0.0, np.floor(min(y0, y1))))) + 1
    keys = np.empty(n_cross, dtype=np.float64)
    rows = np.empty(n_cross, dtype=np.int64)
    n = 0
    span = width + 4.0
    for ring in range(ring0, ring1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            x0, y0 = coords[v, 0], coords[v, 1]
            x1, y1 = coords[v + 1, 0], coords[v + 1, 1]
            ra = max(0, int(np.floor(min(y0, y1))))
            rb = min(height, int(np.ceil(max(y0, y1))))
            for r in range(ra, rb):
                ca, cb = _edge_cells_in_row(x0, y0, x1, y1, r, width)
                if ca <= cb and _count(sat, r, r + 1, ca, cb + 1) > 0:
                    return True
                # Crossing of the row's centre line (half-open: vertices counted once).
                yc = r + 0.5
                if min(y0, y1) <= yc < max(y0, y1):
                    xc = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
                    keys[n] = r * span + min(max(xc, -1.0), width + 1.0) + 1.0
                    rows[n] = r
                    n += 1
    order = np.argsort(keys[:n])
    i = 0
    while i + 1 < n:
        a, b = order[i], order[i + 1]
        if rows[a] != rows[b]:  # unpaired crossing (degenerate ring): skip it
            i += 1
            continue
        r = rows[a]
        xa = keys[a] - r * span - 1.0
        xb = keys[b] - r * span - 1.0
        ca = max(0, int(np.ceil(xa - 0.5)))
        cb = min(width - 1, int(np.floor(xb - 0.5)))
        if ca <= cb and _count(sat, r, r + 1, ca, cb + 1) > 0:
            return True
        i += 2
    return False


@njit(parallel=True, cache=True)
def _inner_boxes(coords, ring_offsets, part_rings, px, py, height, width,
                 out):  # pragma: no cover - compiled
    """A box inside each part: its widths through an interior point, shrunk until clear."""
    for p in prange(len(px)):
        r0, r1 = part_rings[p], part_rings[p + 1]
        xl, xr = _nearest_crossings(coords, ring_offsets, r0, r1, px[p], py[p], 0)
        yb, yt = _nearest_crossings(coords, ring_offsets, r0, r1, px[p], py[p], 1)
        if not (xl < px[p] < xr and yb < py[p] < yt):
            continue
        for scale in (0.9, 0.7, 0.5, 0.3):
            bx0, bx1 = px[p] - scale * (px[p] - xl), px[p] + scale * (xr - px[p])
            by0, by1 = py[p] - scale * (py[p] - yb), py[p] + scale * (yt - py[p])
            if not _edges_meet_box(coords, ring_offsets, r0, r1, bx0, by0, bx1, by1):
                out[p, 0] = min(max(int(np.floor(by0)), 0), height)
                out[p, 1] = min(max(int(np.ceil(by1)), 0), height)
                out[p, 2] = min(max(int(np.floor(bx0)), 0), width)
                out[p, 3] = min(max(int(np.ceil(bx1)), 0), width)
                break


@njit(cache=True)
def _nearest_crossings(coords, ring_offsets, r0, r1, px, py, axis):  # pragma: no cover
    """Nearest boundary crossings either side of the point, along x (axis 0) or y (1)."""
    other = 1 - axis
    at, pos = (py, px) if axis == 0 else (px, py)
    below, above = -np.inf, np.inf
    for ring in range(r0, r1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            a0, a1 = coords[v, other], coords[v + 1, other]
            if min(a0, a1) <= at < max(a0, a1):
                b0, b1 = coords[v, axis], coords[v + 1, axis]
                b = b0 + (at - a0) * (b1 - b0) / (a1 - a0)
                if b < pos:
                    below = max(below, b)
                elif b > pos:
                    above = min(above, b)
                else:  # the point is on the boundary
                    return np.inf, -np.inf
    return below, above


@njit(cache=True)
def _edges_meet_box(coords, ring_offsets, r0, r1, bx0, by0, bx1, by1):  # pragma: no cover
    """True when an edge has a point in the closed box (Liang-Barsky clipping)."""
    for ring in range(r0, r1):
        for v in range(ring_offsets[ring], ring_offsets[ring + 1] - 1):
            x0, y0 = coords[v, 0], coords[v, 1]
            dx, dy = coords[v + 1, 0] - x0, coords[v + 1, 1] - y0
            t0, t1 = 0.0, 1.0
            meets = True
            # Constraints p * t <= q for x >= bx0, x <= bx1, y >= by0, y <= by1.
            for q, p in ((x0 - bx0, -dx), (bx1 - x0, dx), (y0 - by0, -dy), (by1 - y0, dy)):
                if p == 0.0:
                    if q < 0.0:
                        meets = False
                        break
                    continue
                if p < 0.0:
                    t0 = max(t0, q / p)
                else:
                    t1 = min(t1, q / p)
                if t0 > t1:
                    meets = False
                    break
            if meets:
                return True
    return False


@njit(parallel=True, cache=True)
def _zone_max_class(zone, cls, lo, n_zones):  # pragma: no cover - compiled
    """Highest class ``>= lo`` in each zone (0 when none), from per-row-block tables."""
    height, width = cls.shape
    n_blocks = 64
    tables = np.zeros((n_blocks, n_zones + 1), dtype=np.uint8)
    step = -(-height // n_blocks)
    for b in prange(n_blocks):
        for r in range(b * step, min(height, (b + 1) * step)):
            for c in range(width):
                v = cls[r, c]
                z = zone[r, c]
                if v >= lo and z >= 0 and v > tables[b, z]:
                    tables[b, z] = v
    out = np.zeros(n_zones, dtype=np.uint8)
    for b in range(n_blocks):
        for z in range(n_zones):
            out[z] = max(out[z], tables[b, z])
    return out
