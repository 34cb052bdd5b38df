"""`Grid`: the georeferencing of a raster (shape, affine transform, CRS), as a value.

Modelled on odc-geo's ``GeoBox``: the core passes grids and arrays around, never open
datasets. All bounding boxes are ``(minx, miny, maxx, maxy)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Geod

from geo.errors import CRSMismatchError, GridMismatchError
from geo.transformers import transformer
from geo.types import BBox

_WGS84_GEOD = Geod(ellps="WGS84")
# Projected grids: areal scale factors are computed on a coarse lattice of this many cells
# a side and interpolated; distortion varies smoothly, so this is exact to well under 0.1 %.
_AREA_FACTOR_STEP_CELLS = 32


@dataclass(frozen=True, slots=True)
class Grid:
    """A regular north-up (or rotated) raster grid.

    Attributes:
        shape: ``(height, width)`` in cells.
        transform: affine map from ``(col, row)`` to ``(x, y)`` of the cell's upper-left corner.
        crs: the coordinate reference system of ``x, y``.
    """

    shape: tuple[int, int]
    transform: Affine
    crs: CRS

    def __post_init__(self) -> None:
        height, width = self.shape
        if height <= 0 or width <= 0:
            raise GridMismatchError(f"grid shape must be positive, got {self.shape}")
        if self.crs is None:
            raise CRSMismatchError("a grid needs a CRS; none was given")
        object.__setattr__(self, "shape", (int(height), int(width)))
        if not isinstance(self.crs, CRS):
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs))

    @classmethod
    def from_bounds(cls, bounds: BBox, shape: tuple[int, int], crs: CRS | str | int) -> Grid:
        """Build a north-up grid covering ``bounds`` with ``shape`` cells."""
        minx, miny, maxx, maxy = bounds
        height, width = shape
        transform = Affine((maxx - minx) / width, 0.0, minx, 0.0, -(maxy - miny) / height, maxy)
        return cls(shape, transform, CRS.from_user_input(crs))

    @property
    def height(self) -> int:
        """Number of rows."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Number of columns."""
        return self.shape[1]

    @property
    def res(self) -> tuple[float, float]:
        """Cell size ``(xres, yres)`` in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def is_rectilinear(self) -> bool:
        """True when the grid has no rotation or shear."""
        return self.transform.b == 0 and self.transform.d == 0

    @property
    def bounds(self) -> BBox:
        """Outer bounds ``(minx, miny, maxx, maxy)`` in the grid's CRS."""
        corners = [self.transform @ (c, r) for c in (0, self.width) for r in (0, self.height)]
        xs = [p[0] for p in corners]
        ys = [p[1] for p in corners]
        return (min(xs), min(ys), max(xs), max(ys))

    def xy_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """1-D cell-centre coordinates ``(x, y)`` of a rectilinear grid."""
        if not self.is_rectilinear:
            raise GridMismatchError("cell-centre vectors need a grid without rotation")
        xs = self.transform.c + (np.arange(self.width) + 0.5) * self.transform.a
        ys = self.transform.f + (np.arange(self.height) + 0.5) * self.transform.e
        return xs, ys

    def same_as(self, other: Grid, *, rtol: float = 1e-9) -> bool:
        """True when both grids have the same shape, CRS and (almost) the same transform."""
        if self.shape != other.shape or self.crs != other.crs:
            return False
        a = np.array(self.transform[:6], dtype=float)
        b = np.array(other.transform[:6], dtype=float)
        scale = max(abs(self.transform.a), abs(self.transform.e))
        return bool(np.allclose(a, b, rtol=rtol, atol=rtol * scale))

    def require_same(self, other: Grid, what: str) -> None:
        """Raise :class:`GridMismatchError` naming ``what`` unless ``other`` is the same grid."""
        if not self.same_as(other):
            raise GridMismatchError(
                f"{what} is on a different grid: expected shape {self.shape}, CRS "
                f"{self.crs.to_string()}, transform {tuple(self.transform)[:6]}; got shape "
                f"{other.shape}, CRS {other.crs.to_string()}, transform "
                f"{tuple(other.transform)[:6]}"
            )

    def cell_areas_m2(self) -> np.ndarray:
        """True ground area of every cell in square metres, shape ``(height, width)``.

        Geographic grids use the geodesic area of each row's cell on the WGS84 ellipsoid
        (cells in a row are equal); projected grids divide the nominal cell area by the
        projection's areal scale factor, so Web Mercator or UTM cells get their real size.
        """
        if self.crs.is_geographic:
            return np.broadcast_to(self._row_areas_geographic_m2()[:, None], self.shape).copy()
        return self._areas_projected_m2()

    def _row_areas_geographic_m2(self) -> np.ndarray:
        if not self.is_rectilinear:
            raise GridMismatchError("geodesic cell areas need a grid without rotation")
        xres = abs(self.transform.a)
        top = self.transform.f + np.arange(self.height) * self.transform.e
        bottom = top + self.transform.e
        lat_hi = np.clip(np.maximum(top, bottom), -90.0, 90.0)
        lat_lo = np.clip(np.minimum(top, bottom), -90.0, 90.0)
        areas = np.empty(self.height)
        for i, (lo, hi) in enumerate(zip(lat_lo, lat_hi, strict=True)):
            lons = [0.0, xres, xres, 0.0]
            lats = [lo, lo, hi, hi]
            area, _ = _WGS84_GEOD.polygon_area_perimeter(lons, lats)
            areas[i] = abs(area)
        return areas

    def _areas_projected_m2(self) -> np.ndarray:
        from pyproj import Proj
        from scipy.interpolate import RegularGridInterpolator

        unit = metres_per_unit(self.crs)
        nominal_m2 = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
        nominal_m2 *= unit * unit
        step = _AREA_FACTOR_STEP_CELLS
        rows = np.unique(np.r_[np.arange(0, self.height, step), self.height - 1]) + 0.5
        cols = np.unique(np.r_[np.arange(0, self.width, step), self.width - 1]) + 0.5
        cc, rr = np.meshgrid(cols, rows)
        xs, ys = self.transform @ (cc, rr)
        to_geo = transformer(self.crs, self.crs.geodetic_crs)
        lon, lat = to_geo.transform(xs, ys)
        try:
            factors = Proj(self.crs).get_factors(lon, lat).areal_scale
        except Exception:  # noqa: BLE001 - some projections have no factor support
            factors = np.ones_like(lon)
        factors = np.where(np.isfinite(factors) & (factors > 0), factors, 1.0)
        if factors.shape == (1, 1) or np.allclose(factors, factors.flat[0], rtol=1e-6):
            return np.full(self.shape, nominal_m2 / float(factors.flat[0]))
        interp = RegularGridInterpolator(
            (rows, cols), factors, bounds_error=False, fill_value=None, method="linear"
        )
        out = np.empty(self.shape)
        all_cols = np.arange(self.width) + 0.5
        for r in range(self.height):
            pts = np.column_stack([np.full(self.width, r + 0.5), all_cols])
            out[r] = nominal_m2 / interp(pts)
        return out


def require_same_crs(a: CRS, b: CRS, what_a: str, what_b: str) -> None:
    """Raise :class:`CRSMismatchError` naming both layers unless their CRSs are equal."""
    if a is None or b is None:
        missing = what_a if a is None else what_b
        raise CRSMismatchError(f"{missing} has no CRS; give one (e.g. EPSG:4326)")
    if CRS.from_user_input(a) != CRS.from_user_input(b):
        raise CRSMismatchError(
            f"{what_a} is in {CRS.from_user_input(a).to_string()} but {what_b} is in "
            f"{CRS.from_user_input(b).to_string()}; reproject one of them first"
        )


_UNIT_NAME_METRES = {"metre": 1.0, "meter": 1.0, "m": 1.0, "kilometre": 1000.0,
                     "foot": 0.3048, "us survey foot": 1200 / 3937}


def metres_per_unit(crs: CRS) -> float:
    """Length of one unit of a projected CRS's first axis in metres (1.0 when unstated).

    Some CRSs built from WKT1 report no conversion factor (``NaN``); the unit name is used then.
    """
    if not crs.axis_info:
        return 1.0
    axis = crs.axis_info[0]
    factor = axis.unit_conversion_factor
    if factor is not None and np.isfinite(factor) and factor > 0:
        return float(factor)
    return _UNIT_NAME_METRES.get((axis.unit_name or "").strip().lower(), 1.0)
