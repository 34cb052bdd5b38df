"""Admin zones rasterised onto a population grid, once per region pack and grid.

The exposure kernel needs, for every population cell, the zone it belongs to. Rasterising
polygons is the slow step (seconds for thousands of zones on a large grid), so it is done
once and reused for every hazard: in memory through :class:`ZoneRasterCache`, and across
processes through :meth:`ZoneRaster.to_bytes` (the feeds layer decides where the bytes go).

Rules:

* cell-centre semantics: a cell belongs to the zone that contains its centre
  (``all_touched=False``), so every cell is counted once and zone totals add up to the grid
  total, as in a census aggregation;
* where zones overlap, the FIRST zone in the frame's order wins (sliver overlaps of
  digitised boundaries must not double-count people);
* cells whose centre is in no zone get index ``-1`` ("outside every zone").

The exposure kernel does not read the index cell by cell: zones are large, so the index is
compressed once into :class:`ZoneRuns` (runs of equal zone in row-major order, see
:func:`zone_runs`), cached on the :class:`ZoneRaster` and reused for every hazard.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from numba import njit, prange
from pyproj import CRS
from rasterio.features import rasterize

from geo.errors import CRSMismatchError, GeoError, GeometryRepairedWarning, GridMismatchError
from geo.grid import Grid
from geo.transformers import transformer

OUTSIDE_ZONE_ID = "outside"
"""Zone id reported for cells (and facilities) outside every zone."""

_INT16_MAX_ZONES = 32767
_FORMAT_VERSION = 1

RUN_BLOCK_CELLS = 4096
"""Runs are also cut at every multiple of this many cells (row-major offset), so no run is
longer: parallel work splits evenly even with one zone, and per-run scratch stays in L1."""


@dataclass(frozen=True, slots=True, eq=False)
class ZoneRuns:
    """A zone index as runs of equal zone, in row-major (flattened) order.

    Run ``i`` covers the flat cells ``starts[i]`` to ``starts[i + 1] - 1``, all in zone
    ``zones[i]`` (``-1``: outside every zone). Runs follow zones along rows and over row
    ends, and :func:`zone_runs` also cuts them every :data:`RUN_BLOCK_CELLS` cells. With
    zones a few hundred cells across, they take ~5 % of the index's memory, and the
    exposure kernel no longer reads the index.

    Attributes:
        starts: ``uint64`` ``(n_runs + 1,)``, increasing; the last entry is the cell count.
        zones: ``int32`` ``(n_runs,)`` zone index of each run.
        shape: shape of the zone index the runs came from.
    """

    starts: np.ndarray
    zones: np.ndarray
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        n_cells = int(np.prod(self.shape, dtype=np.int64))
        if (
            self.starts.dtype != np.uint64
            or self.zones.dtype != np.int32
            or self.starts.shape != (self.zones.size + 1,)
            or int(self.starts[0]) != 0
            or int(self.starts[-1]) != n_cells
            or not bool(np.all(self.starts[1:] > self.starts[:-1]))
        ):
            raise GeoError(
                f"zone runs need increasing uint64 starts from 0 to {n_cells} and one int32 "
                f"zone per run; got {self.starts.dtype} starts ({self.starts.size}) and "
                f"{self.zones.dtype} zones ({self.zones.size})"
            )

    @property
    def n_runs(self) -> int:
        """Number of runs."""
        return int(self.zones.size)

    def to_index(self) -> np.ndarray:
        """The zone index again (``int32``, :attr:`shape`), for checks and debugging."""
        lengths = np.diff(self.starts).astype(np.int64)
        return np.repeat(self.zones, lengths).reshape(self.shape)


def zone_runs(index: np.ndarray) -> ZoneRuns:
    """Compress a zone index into :class:`ZoneRuns` (two parallel passes over the index).

    Args:
        index: integer zone index of any shape (``-1`` outside every zone); values must
            fit in ``int32``.

    Returns:
        The runs, read-only.

    Raises:
        GeoError: the index is not integer, or has values beyond ``int32``.
    """
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise GeoError(f"zone index must be integers, got {index.dtype}")
    if index.dtype.itemsize > 4 or index.dtype == np.uint32:
        if index.size and (int(index.min()) < -(2**31) or int(index.max()) >= 2**31):
            raise GeoError("zone index values must fit in int32")
    flat = np.ascontiguousarray(index).reshape(-1)
    starts, zones = _runs_kernel(flat, RUN_BLOCK_CELLS)
    starts.flags.writeable = False
    zones.flags.writeable = False
    return ZoneRuns(starts=starts, zones=zones, shape=tuple(index.shape))


@njit(parallel=True, nogil=True, cache=True)
def _runs_kernel(flat, block):
    """Run starts and zones of ``flat``, cut at multiples of ``block`` (blocks in parallel)."""
    n = flat.size
    n_blocks = (n + block - 1) // block
    one = np.uint64(1)
    counts = np.zeros(n_blocks + 1, np.int64)
    for b in prange(n_blocks):
        lo = np.uint64(b * block)
        hi = np.uint64(min(n, (b + 1) * block))
        c = 1
        for p in range(lo + one, hi):
            c += flat[p] != flat[p - one]
        counts[b + 1] = c
    offsets = np.cumsum(counts)
    total = offsets[n_blocks]
    starts = np.empty(total + 1, np.uint64)
    zones = np.empty(total, np.int32)
    for b in prange(n_blocks):
        lo = np.uint64(b * block)
        hi = np.uint64(min(n, (b + 1) * block))
        i = offsets[b]
        starts[i] = lo
        zones[i] = flat[lo]
        for p in range(lo + one, hi):
            if flat[p] != flat[p - one]:
                i += 1
                starts[i] = p
                zones[i] = flat[p]
    starts[total] = n
    return starts, zones


@dataclass(frozen=True, slots=True, eq=False)
class ZoneRaster:
    """Zone of every cell of a grid.

    Attributes:
        index: ``int16`` (fewer than 32,767 zones) or ``int32`` array of ``grid.shape``;
            ``i`` is ``zone_ids[i]``, ``-1`` is outside every zone.
        zone_ids: zone ids in the order of the source frame.
        names: zone names, same order.
        grid: the grid of ``index``.

    The index is kept as a read-only view: its :attr:`runs` are computed once and cached,
    so it must not change afterwards.
    """

    index: np.ndarray
    zone_ids: tuple[str, ...]
    names: tuple[str, ...]
    grid: Grid
    _runs: ZoneRuns | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.index.shape != self.grid.shape:
            raise GridMismatchError(
                f"zone index has shape {self.index.shape} but its grid has {self.grid.shape}"
            )
        if len(self.zone_ids) != len(self.names):
            raise GeoError(f"{len(self.zone_ids)} zone ids but {len(self.names)} names")
        if self.index.dtype.kind not in "iu":
            raise GeoError(f"zone index must be integers, got {self.index.dtype}")
        frozen = self.index.view()
        frozen.flags.writeable = False
        object.__setattr__(self, "index", frozen)

    @property
    def runs(self) -> ZoneRuns:
        """The index as :class:`ZoneRuns`: computed on first use, then cached.

        Call it once when a region pack is loaded (it costs about one pass over the
        index); every exposure overlay on this raster then reuses it.
        """
        if self._runs is None:
            object.__setattr__(self, "_runs", zone_runs(self.index))
        assert self._runs is not None
        return self._runs

    @property
    def n_zones(self) -> int:
        """Number of zones (the ``outside`` row of exposure tables comes on top)."""
        return len(self.zone_ids)

    def to_bytes(self) -> bytes:
        """Serialise to ``.npz`` bytes (no pickle), for a cache file beside a region pack."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            version=np.array(_FORMAT_VERSION),
            index=self.index,
            zone_ids=np.array(self.zone_ids, dtype=str),
            names=np.array(self.names, dtype=str),
            shape=np.array(self.grid.shape, dtype=np.int64),
            transform=np.array(tuple(self.grid.transform)[:6], dtype=np.float64),
            crs_wkt=np.array(self.grid.crs.to_wkt()),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ZoneRaster:
        """Read bytes written by :meth:`to_bytes`.

        Raises:
            GeoError: the bytes are not a zone raster of this format version.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                version = int(npz["version"])
                if version != _FORMAT_VERSION:
                    raise GeoError(
                        f"zone raster format version {version}, expected {_FORMAT_VERSION}"
                    )
                grid = Grid(
                    tuple(int(v) for v in npz["shape"]),  # type: ignore[arg-type]
                    Affine(*npz["transform"].tolist()),
                    CRS.from_wkt(str(npz["crs_wkt"])),
                )
                return cls(
                    index=npz["index"],
                    zone_ids=tuple(str(v) for v in npz["zone_ids"]),
                    names=tuple(str(v) for v in npz["names"]),
                    grid=grid,
                )
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, GeoError):
                raise
            raise GeoError(f"not a zone raster file: {exc}") from exc


def rasterize_zones(zones: gpd.GeoDataFrame, grid: Grid) -> ZoneRaster:
    """Rasterise zones onto a grid with cell-centre semantics (see module doc).

    Args:
        zones: columns ``zone_id`` (unique), optionally ``name``, and polygon geometries,
            in any CRS (they are reprojected to ``grid.crs``).
        grid: the population grid.

    Returns:
        The :class:`ZoneRaster`.

    Raises:
        CRSMismatchError: the zones have no CRS.
        GeoError: ``zone_id`` is missing or not unique.

    Warns:
        GeometryRepairedWarning: invalid polygons were repaired with ``make_valid``.
    """
    prepared = prepare_zones(zones, grid.crs)
    zone_ids, names = _ids_and_names(prepared)
    geoms = np.asarray(prepared.geometry.values, dtype=object)
    dtype = np.int16 if len(zone_ids) < _INT16_MAX_ZONES else np.int32
    index = np.full(grid.shape, -1, dtype=dtype)
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if keep.any():
        order = np.flatnonzero(keep)[::-1]  # burnt last = wins: reverse so the first wins
        rasterize(
            zip(geoms[order], order.tolist(), strict=True),
            out=index,
            transform=grid.transform,
            all_touched=False,
        )
    return ZoneRaster(index=index, zone_ids=zone_ids, names=names, grid=grid)


def prepare_zones(zones: gpd.GeoDataFrame, crs: CRS) -> gpd.GeoDataFrame:
    """Zones checked (ids), reprojected to ``crs`` and repaired, ready to rasterise often.

    :func:`rasterize_zones` calls it; callers rasterising the same zones on many windows
    call it once first, so the reprojection and repair (and the warning) happen once.

    Raises:
        CRSMismatchError: the zones have no CRS.
        GeoError: ``zone_id`` is missing or not unique.

    Warns:
        GeometryRepairedWarning: invalid polygons were repaired with ``make_valid``.
    """
    zone_ids, _ = _ids_and_names(zones)
    if zones.crs is None:
        raise CRSMismatchError(
            "zones have no CRS; set one (e.g. zones.set_crs('EPSG:26916')) before rasterising"
        )
    if zones.crs != crs:
        zones = zones.to_crs(crs)
    geoms = np.asarray(zones.geometry.values, dtype=object)
    present = ~shapely.is_missing(geoms)
    invalid = present & ~shapely.is_valid(np.where(present, geoms, None))
    if not invalid.any():
        return zones
    bad = [zone_ids[i] for i in np.flatnonzero(invalid)]
    warnings.warn(
        GeometryRepairedWarning(
            f"{len(bad)} invalid zone polygon(s) repaired with make_valid: {bad[:10]}"
        ),
        stacklevel=3,
    )
    geoms = geoms.copy()
    geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    return zones.set_geometry(gpd.GeoSeries(geoms, index=zones.index, crs=zones.crs))


def zones_fingerprint(zones: gpd.GeoDataFrame) -> str:
    """``sha256:<hex>`` of the zones' ids, names, CRS and geometries (WKB), in order."""
    zone_ids, names = _ids_and_names(zones)
    digest = hashlib.sha256()
    digest.update((zones.crs.to_wkt() if zones.crs is not None else "").encode())
    for zone_id, name in zip(zone_ids, names, strict=True):
        digest.update(f"{len(zone_id)}:{zone_id}{len(name)}:{name}".encode())
    for wkb in shapely.to_wkb(np.asarray(zones.geometry.values), hex=False):
        digest.update(wkb if wkb is not None else b"\x00")
    return "sha256:" + digest.hexdigest()


class ZoneRasterCache:
    """Zone rasters already computed, keyed by (zones fingerprint, grid).

    A plain in-memory map with first-in-first-out eviction; it never touches files.
    """

    def __init__(self, max_entries: int = 16) -> None:
        self._entries: OrderedDict[tuple[str, Grid], ZoneRaster] = OrderedDict()
        self._max_entries = max_entries
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, zones: gpd.GeoDataFrame, grid: Grid) -> ZoneRaster:
        """The zone raster of ``zones`` on ``grid``, rasterised only on the first request."""
        key = (zones_fingerprint(zones), grid)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            found = rasterize_zones(zones, grid)
            self._entries[key] = found
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return found

    def put(self, zones: gpd.GeoDataFrame, zone_raster: ZoneRaster) -> None:
        """Store a zone raster loaded from elsewhere (e.g. a cache file) for ``zones``."""
        self._entries[(zones_fingerprint(zones), zone_raster.grid)] = zone_raster


def _ids_and_names(zones: gpd.GeoDataFrame) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if "zone_id" not in zones.columns:
        raise GeoError(f"zones need a 'zone_id' column; columns are {list(zones.columns)}")
    zone_ids = tuple(str(v) for v in zones["zone_id"])
    duplicated = sorted(z for z, n in Counter(zone_ids).items() if n > 1)
    if duplicated:
        raise GeoError(f"zone_id values must be unique; repeated: {duplicated[:10]}")
    if OUTSIDE_ZONE_ID in zone_ids:
        raise GeoError(f"zone_id {OUTSIDE_ZONE_ID!r} is reserved for cells outside every zone")
    names = tuple(str(v) for v in zones["name"]) if "name" in zones.columns else zone_ids
    return zone_ids, names


def rasterize_lonlat(
    geometries: object,
    grid: Grid,
    *,
    all_touched: bool,
    segment_max_deg: float | None = None,
) -> np.ndarray:
    """Cells of ``grid`` covered by lon/lat (EPSG:4326) geometries, as a boolean mask.

    Args:
        geometries: one shapely geometry or an array of them, in lon/lat.
        grid: the grid to burn them onto (any CRS).
        all_touched: every cell a geometry touches (a conservative footprint), or only
            cells whose centre it contains.
        segment_max_deg: densify edges to this length first, so that long edges follow
            the projection's curvature; ``None`` keeps the vertices as they are.
    """
    geoms = np.atleast_1d(np.asarray(geometries, dtype=object))
    if segment_max_deg is not None:
        geoms = shapely.segmentize(geoms, segment_max_deg)
    to_grid = transformer("EPSG:4326", grid.crs).transform
    projected = shapely.transform(geoms, lambda x, y: to_grid(x, y), interleaved=False)
    shapes = [(g, 1) for g in projected if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(grid.shape, dtype=bool)
    burnt = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0,
                      all_touched=all_touched, dtype=np.uint8)
    return burnt.astype(bool)
