"""The overlay map: hazard classes, zones and facilities, readable without colour.

Classes are told apart by hatching as well as by a sequential palette, facilities by marker
shape as well as colour, and every symbol is in the legend, so the map survives greyscale
printing and colour-vision deficiency. A scale bar and a north arrow are drawn. The map is
returned as PNG bytes: writing it is the caller's business.
"""

from __future__ import annotations

import io
import math

import geopandas as gpd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from pyproj import CRS, Geod

from geo.classes import SeverityClasses
from geo.grid import metres_per_unit as grid_metres_per_unit
from geo.types import FacilityType

_HATCHES = ("", "..", "//", "xx", "\\\\\\", "++", "oo", "**", "--", "||")
# Sequential, colour-blind-safe (YlOrRd-like) and distinguishable in greyscale by lightness.
_PALETTE = ("#ffffb2", "#fed976", "#feb24c", "#fd8d3c", "#f03b20", "#bd0026", "#800026")
_FACILITY_STYLE = {
    FacilityType.HOSPITAL.value: ("P", "#0b3d91", "hospital"),
    FacilityType.CARE_HOME.value: ("s", "#006d2c", "care home"),
    FacilityType.SHELTER.value: ("^", "#54278f", "shelter"),
    FacilityType.SCHOOL.value: ("o", "#444444", "school"),
}


def class_style(k: int, n_classes: int) -> tuple[str, str]:
    """Fill colour and hatch of class ``k`` (1-based) out of ``n_classes``."""
    if n_classes <= 1:
        colour = _PALETTE[-2]
    else:
        colour = _PALETTE[round((k - 1) * (len(_PALETTE) - 1) / (n_classes - 1))]
    return colour, _HATCHES[(k - 1) % len(_HATCHES)]


def render_overlay_map(
    footprint: gpd.GeoDataFrame,
    classes: SeverityClasses,
    *,
    title: str,
    zones: gpd.GeoDataFrame | None = None,
    facilities: gpd.GeoDataFrame | None = None,
    extent: tuple[float, float, float, float] | None = None,
    dpi: int = 130,
) -> bytes:
    """Draw the footprint classes over zones and facilities; return PNG bytes.

    Args:
        footprint: class polygons (columns ``class``, ``label``, ``geometry``).
        classes: the severity classes (all are listed in the legend, even absent ones).
        title: the map title (hazard, source, time).
        zones: admin units drawn as thin outlines.
        facilities: points with a ``type`` column.
        extent: ``(minx, miny, maxx, maxy)`` to show; defaults to the zones' or footprint's.
        dpi: resolution of the PNG.
    """
    fig = Figure(figsize=(9.0, 8.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    crs = zones.crs if zones is not None and zones.crs is not None else footprint.crs
    if crs is not None and footprint.crs is not None and footprint.crs != crs:
        footprint = footprint.to_crs(crs)
    if crs is not None and facilities is not None and facilities.crs not in (None, crs):
        facilities = facilities.to_crs(crs)
    handles: list[Patch | Line2D] = []
    for k in range(1, classes.count + 1):
        colour, hatch = class_style(k, classes.count)
        part = footprint[footprint["class"] == k] if not footprint.empty else footprint
        if not part.empty:
            part.plot(ax=ax, facecolor=colour, edgecolor="#333333", hatch=hatch, linewidth=0.4)
        handles.append(Patch(facecolor=colour, edgecolor="#333333", hatch=hatch,
                             label=f"{classes.label(k)}" + ("" if not part.empty else " (none)")))
    if zones is not None and not zones.empty:
        zones.boundary.plot(ax=ax, color="#777777", linewidth=0.3)
        handles.append(Line2D([], [], color="#777777", linewidth=0.8, label="zone boundary"))
    if facilities is not None and not facilities.empty:
        for ftype, (marker, colour, name) in _FACILITY_STYLE.items():
            pts = facilities[facilities["type"] == ftype]
            if pts.empty:
                continue
            ax.scatter(pts.geometry.x, pts.geometry.y, marker=marker, s=36, c=colour,
                       edgecolors="white", linewidths=0.6, zorder=5)
            handles.append(Line2D([], [], marker=marker, color=colour, linestyle="",
                                  markeredgecolor="white", markersize=7, label=name))
    bounds = extent or _default_extent(footprint, zones)
    if bounds is not None:
        ax.set_xlim(bounds[0], bounds[2])
        ax.set_ylim(bounds[1], bounds[3])
    ax.set_aspect("equal" if crs is None or not CRS(crs).is_geographic else _geo_aspect(bounds))
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=7)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              title="Legend", title_fontsize=9, frameon=True)
    if bounds is not None and crs is not None:
        _scale_bar(ax, bounds, CRS(crs))
    _north_arrow(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": "tocsin"})
    return buf.getvalue()


def _default_extent(
    footprint: gpd.GeoDataFrame, zones: gpd.GeoDataFrame | None
) -> tuple[float, float, float, float] | None:
    for frame in (zones, footprint):
        if frame is not None and not frame.empty:
            minx, miny, maxx, maxy = frame.total_bounds
            return (float(minx), float(miny), float(maxx), float(maxy))
    return None


def _geo_aspect(bounds: tuple[float, float, float, float] | None) -> float:
    if bounds is None:
        return 1.0
    mid_lat = (bounds[1] + bounds[3]) / 2
    return 1.0 / max(math.cos(math.radians(mid_lat)), 0.01)


def _nice_length_m(target_m: float) -> float:
    exponent = math.floor(math.log10(max(target_m, 1e-9)))
    for mult in (5, 2, 1):
        if mult * 10**exponent <= target_m:
            return float(mult * 10**exponent)
    return float(10**exponent)


def _scale_bar(ax: Axes, bounds: tuple[float, float, float, float], crs: CRS) -> None:
    """Draw a scale bar about a fifth of the map wide, in km or m."""
    minx, miny, maxx, maxy = bounds
    width_units = maxx - minx
    x0 = minx + 0.05 * width_units
    y0 = miny + 0.05 * (maxy - miny)
    if crs.is_geographic:
        _, _, metres_per_unit = Geod(ellps="WGS84").inv(x0, y0, x0 + 1.0, y0)
    else:
        metres_per_unit = grid_metres_per_unit(crs)
    length_m = _nice_length_m(0.2 * width_units * metres_per_unit)
    length_units = length_m / metres_per_unit
    ax.plot([x0, x0 + length_units], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    text = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    ax.text(x0 + length_units / 2, y0 + 0.015 * (maxy - miny), text, ha="center", va="bottom",
            fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def _north_arrow(ax: Axes) -> None:
    ax.annotate("N", xy=(0.95, 0.95), xytext=(0.95, 0.86), xycoords="axes fraction",
                ha="center", va="center", fontsize=10, fontweight="bold",
                arrowprops={"arrowstyle": "-|>", "color": "black"})

