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
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize

from geo.errors import CRSMismatchError, GeoError, GeometryRepairedWarning, GridMismatchError
from geo.grid import Grid

OUTSIDE_ZONE_ID = "outside"
"""Zone id reported for cells (and facilities) outside every zone."""

_INT16_MAX_ZONES = 32767
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True, eq=False)
class ZoneRaster:
    """Zone of every cell of a grid.

    Attributes:
        index: ``int16`` (fewer than 32,767 zones) or ``int32`` array of ``grid.shape``;
            ``i`` is ``zone_ids[i]``, ``-1`` is outside every zone.
        zone_ids: zone ids in the order of the source frame.
        names: zone names, same order.
        grid: the grid of ``index``.
    """

    index: np.ndarray
    zone_ids: tuple[str, ...]
    names: tuple[str, ...]
    grid: Grid

    def __post_init__(self) -> None:
        if self.index.shape != self.grid.shape:
            raise GridMismatchError(
                f"zone index has shape {self.index.shape} but its grid has {self.grid.shape}"
            )
        if len(self.zone_ids) != len(self.names):
            raise GeoError(f"{len(self.zone_ids)} zone ids but {len(self.names)} names")

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
