"""The sample USGS ShakeMap ``grid.xml`` writer.

Writes the scenario earthquake of the sample region in the real ShakeMap layout, with MMI,
PGA, PGV and spectral accelerations that are mutually consistent. Split out of
:mod:`feeds.sample.hazards` (which calls it from
:func:`~feeds.sample.hazards.write_sample_hazards`) to keep that module small; like every
sample writer it is deterministic: the same arguments give a byte-identical file.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from feeds.sample.latlon import LATLON_STEP_DEG, distance_km, latlon_axes
from geo.types import BBox

SHAKEMAP_EVENT_ID = "sample2024abcd"

_SHAKEMAP_NS = "http://earthquake.usgs.gov/eqcenter/shakemap"


def _mmi_bakun_wentworth(magnitude: float, hypo_km: np.ndarray) -> np.ndarray:
    """MMI from magnitude and hypocentral distance (Bakun & Wentworth 1997 form)."""
    return 3.67 + 1.17 * magnitude - 3.19 * np.log10(np.maximum(hypo_km, 1.0))


def write_shakemap_grid(
    path: Path,
    bounds_lonlat: BBox,
    epicentre_lonlat: tuple[float, float],
    *,
    magnitude: float,
    depth_km: float,
    origin_time: datetime,
    rng: np.random.Generator,
) -> Path:
    """Write a USGS ShakeMap ``grid.xml`` (0.01 deg) of one earthquake.

    MMI follows a Bakun-Wentworth attenuation with hypocentral distance plus smooth site
    noise; PGA and PGV are derived from MMI with the inverse Wald et al. (1999) relations,
    so the fields are mutually consistent. The layout is the real one: a ``shakemap_grid``
    root in the ShakeMap namespace, ``event``, ``grid_specification``, ``grid_field`` rows
    and whitespace-separated ``grid_data`` rows from north-west, row by row.

    Returns:
        ``path``.
    """
    lons, lats = latlon_axes(bounds_lonlat)
    lon2, lat2 = np.meshgrid(lons, lats)
    epi_km = distance_km(lon2, lat2, *epicentre_lonlat)
    site = gaussian_filter(rng.standard_normal(epi_km.shape), sigma=4.0)
    site /= np.abs(site).max() or 1.0
    mmi = np.clip(_mmi_bakun_wentworth(magnitude, np.hypot(epi_km, depth_km)) + 0.3 * site,
                  1.0, 10.0)
    pga_pctg = 10 ** ((mmi + 1.66) / 3.66) / 980.665 * 100.0
    pgv_cms = 10 ** ((mmi - 2.35) / 3.47)
    psa03 = pga_pctg * 2.1
    psa10 = pga_pctg * 0.9
    psa30 = pga_pctg * 0.25
    event_ts = origin_time.strftime("%Y-%m-%dT%H:%M:%SUTC")
    process_ts = (origin_time + timedelta(minutes=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = ["LON", "LAT", "PGA", "PGV", "MMI", "PSA03", "PSA10", "PSA30", "STDPGA", "URAT",
              "SVEL"]
    units = ["dd", "dd", "pctg", "cms", "intensity", "pctg", "pctg", "pctg", "ln(pctg)", "",
             "ms"]
    step = LATLON_STEP_DEG
    head = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
        f'<shakemap_grid xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns="{_SHAKEMAP_NS}" xsi:schemaLocation="http://earthquake.usgs.gov '
        f'http://earthquake.usgs.gov/eqcenter/shakemap/xml/schemas/shakemap.xsd" '
        f'event_id="{SHAKEMAP_EVENT_ID}" shakemap_id="{SHAKEMAP_EVENT_ID}" '
        f'shakemap_version="1" code_version="4.0 (Tocsin sample)" '
        f'process_timestamp="{process_ts}" shakemap_originator="us" map_status="RELEASED" '
        f'shakemap_event_type="SCENARIO">',
        f'<event event_id="{SHAKEMAP_EVENT_ID}" magnitude="{magnitude:.1f}" '
        f'depth="{depth_km:.1f}" lat="{epicentre_lonlat[1]:.6f}" '
        f'lon="{epicentre_lonlat[0]:.6f}" event_timestamp="{event_ts}" event_network="us" '
        f'event_description="Sample valley scenario earthquake" />',
        f'<grid_specification lon_min="{lons[0]:.6f}" lat_min="{lats[-1]:.6f}" '
        f'lon_max="{lons[-1]:.6f}" lat_max="{lats[0]:.6f}" '
        f'nominal_lon_spacing="{step:.6f}" nominal_lat_spacing="{step:.6f}" '
        f'nlon="{lons.size}" nlat="{lats.size}" />',
        '<event_specific_uncertainty name="pga" value="0.0" numsta="" />',
    ]
    head += [f'<grid_field index="{i}" name="{n}" units="{u}" />'
             for i, (n, u) in enumerate(zip(fields, units, strict=True), start=1)]
    rows = np.column_stack([
        lon2.ravel(), lat2.ravel(), pga_pctg.ravel(), pgv_cms.ravel(), mmi.ravel(),
        psa03.ravel(), psa10.ravel(), psa30.ravel(),
    ])
    body = [
        f"{r[0]:.4f} {r[1]:.4f} {r[2]:.2f} {r[3]:.2f} {r[4]:.2f} {r[5]:.2f} {r[6]:.2f} "
        f"{r[7]:.2f} 0.57 1 760"
        for r in rows
    ]
    text = "\n".join([*head, "<grid_data>", *body, "</grid_data>", "</shakemap_grid>", ""])
    path.write_text(text, encoding="utf-8")
    return path
