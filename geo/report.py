"""The overlay report: one self-contained, accessible HTML page.

Tables have captions and header cells with scope, the map is embedded with a text
alternative that says what it shows, numbers are rounded for reading, and nothing is
carried by colour alone. Counts of registry-derived groups below the region's minimum are
shown as "fewer than N" in public reports.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence

import pandas as pd

from geo.overlay import OverlayResult
from geo.privacy import is_small_count

_GROUP_TITLES = {
    "population": "People",
    "disability": "People with disabilities",
    "older": "Older people",
    "electricity_dependent": "Electricity-dependent people",
    "hospital": "Hospitals",
    "care_home": "Care homes",
    "shelter": "Shelters",
    "school": "Schools",
}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:70rem;
margin:1.5rem auto;padding:0 1rem;color:#111;line-height:1.45}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.92rem}
caption{text-align:left;font-weight:600;padding:0.3rem 0}
th,td{border:1px solid #999;padding:0.25rem 0.55rem}
th{background:#eee} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #999}
.note{font-size:0.9rem;color:#333}
"""


def format_count(value: float, *, suppress_below: int | None = None) -> str:
    """A count for reading: whole people with separators; small counts hidden if asked."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if suppress_below is not None and is_small_count(float(value), suppress_below):
        return f"fewer than {suppress_below}"
    return f"{int(round(float(value))):,}"


def _table(
    caption: str, header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1
) -> str:
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in header)
    body = []
    for row in rows:
        cells = [f'<th scope="row">{html.escape(row[0])}</th>']
        for i, cell in enumerate(row[1:], start=1):
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(header)}">None.</td></tr>')
    return (f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _value_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in _GROUP_TITLES if c in frame.columns]


def render_report(
    result: OverlayResult,
    *,
    title: str,
    map_png: bytes,
    map_alt: str,
    details: Sequence[tuple[str, str]] = (),
    suppressed_columns: Sequence[str] = (),
    min_public_count: int | None = None,
) -> str:
    """Build the overlay report as one HTML document.

    Args:
        result: the overlay result.
        title: page title.
        map_png: the map, embedded as a data URI.
        map_alt: the map's text alternative.
        details: (name, value) pairs describing the hazard and the run.
        suppressed_columns: columns whose small counts are hidden (registry-derived groups).
        min_public_count: the threshold for hiding them; ``None`` shows everything
            (the owning agency's own report).
    """
    cols = _value_columns(result.totals)

    def fmt(col: str, value: float) -> str:
        below = min_public_count if col in suppressed_columns else None
        return format_count(value, suppress_below=below)

    totals_rows = [
        [row["label"], *[fmt(c, row[c]) for c in cols]]
        for _, row in result.totals.sort_values("class", ascending=False).iterrows()
        if row["class"] > 0
    ]
    areas = {int(r["class"]): r["area_km2"] for _, r in result.footprint.iterrows()}
    area_rows = [
        [result.classes.label(k), f"{areas.get(k, 0.0):,.1f}"]
        for k in range(result.classes.count, 0, -1)
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        _table("About this overlay", ["Item", "Value"], details, numeric_from=99),
        "<h2>People and facilities by severity class</h2>",
        _table("Totals over the region, most severe class first",
               ["Class", *[_GROUP_TITLES[c] for c in cols]], totals_rows),
        _table("Footprint area by class", ["Class", "Area (km²)"], area_rows),
        "<h2>Map</h2>",
        f'<img src="data:image/png;base64,{base64.b64encode(map_png).decode()}" '
        f'alt="{html.escape(map_alt)}">',
        "<h2>Facilities in the footprint</h2>",
        _table("Facilities in a severity class, most severe first",
               ["Facility", "Type", "Class"],
               [[str(r["name"]), str(r["type"]).replace("_", " "), str(r["label"])]
                for _, r in result.facilities_hit.iterrows()], numeric_from=99),
        "<h2>Access to care cut by the hazard</h2>",
        _access_note(result),
        _access_table(result, min_public_count if "access_disability" in suppressed_columns
                      else None),
        "<h2>Zones with people in a severity class</h2>",
        _zone_table(result, cols, fmt),
    ]
    if suppressed_columns and min_public_count:
        parts.append(
            f'<p class="note">Counts from individual registries below {min_public_count} are '
            "shown as “fewer than” to protect the people listed.</p>"
        )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _access_note(result: OverlayResult) -> str:
    if result.impassable_from_class is None:
        return ('<p class="note">This kind of hazard does not close roads by itself, so access '
                "to care was not assessed (choose a class that blocks travel to assess it).</p>")
    label = html.escape(result.classes.label(result.impassable_from_class))
    return (f'<p class="note">People living where the travel time to the nearest facility is '
            f"within {result.access_threshold_min:g} minutes today but beyond it once hazard "
            f"cells of class “{label}” and above become impassable.</p>")


def _access_table(result: OverlayResult, hide_below: int | None = None) -> str:
    access = result.access
    if access.empty:
        if result.impassable_from_class is None:
            return ""
        return "<p>No friction surface or facilities in this region pack: access not computed.</p>"
    summary = access.groupby(["zone_id", "zone_name", "facility_type"], as_index=False)[
        ["population", "disability"]
    ].sum()
    summary = summary[summary["population"] > 0.5].sort_values("population", ascending=False)
    rows = [[f"{r['zone_name']} ({r['zone_id']})", str(r["facility_type"]).replace("_", " "),
             format_count(r["population"]),
             format_count(r["disability"], suppress_below=hide_below)]
            for _, r in summary.iterrows()]
    return _table("People newly beyond the access threshold, by zone",
                  ["Zone", "Facility type", "People", "People with disabilities"], rows,
                  numeric_from=2)


def _zone_table(result: OverlayResult, cols: list[str], fmt: object) -> str:
    exposed = result.exposure[result.exposure["class"] > 0]
    by_zone = exposed.groupby(["zone_id", "zone_name"], as_index=False)[cols].sum()
    by_zone = by_zone[by_zone["population"] > 0.5].sort_values("population", ascending=False)
    rows = [[f"{r['zone_name']} ({r['zone_id']})", *[fmt(c, r[c]) for c in cols]]  # type: ignore[operator]
            for _, r in by_zone.iterrows()]
    return _table("Zones by people in any severity class (all classes summed)",
                  ["Zone", *[_GROUP_TITLES[c] for c in cols]], rows)


def map_alt_text(result: OverlayResult) -> str:
    """Describe the map in words: footprint areas and people per class."""
    pieces = []
    for k in range(result.classes.count, 0, -1):
        people = result.totals.loc[result.totals["class"] == k, "population"]
        area = result.footprint.loc[result.footprint["class"] == k, "area_km2"]
        pieces.append(
            f"{result.classes.label(k)}: {float(area.sum()) if len(area) else 0.0:,.1f} km², "
            f"{format_count(float(people.sum()) if len(people) else 0.0)} people"
        )
    hit = len(result.facilities_hit)
    return (f"Map of the hazard footprint over {result.region}, classes shaded and hatched. "
            + "; ".join(pieces) + f". {hit} facilities lie in a severity class.")

