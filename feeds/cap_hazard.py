"""External CAP 1.2 alerts as hazard grids, so they enter the same pipeline as rasters.

A CAP message has areas, not a field: its footprint (polygons, circles, geocodes the
region pack knows) is drawn onto the population grid with the message's CAP severity as a
categorical class (Minor 1, Moderate 2, Severe 3, Extreme 4), cells touched by an area
counted in; cells outside are 0. The message is parsed by the hardened parser (no
entities, no network, size limit, schema): a CAP 1.1, malformed or hostile file is
refused with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from shapely.geometry.base import BaseGeometry

from alerts.cap_geometry import footprint_of
from alerts.cap_parse import MAX_CAP_BYTES, parse_cap
from alerts.errors import CapError
from alerts.model import AlertEvent, Severity
from feeds.base import require_file
from feeds.errors import FeedFormatError
from geo.classes import SeverityClasses
from geo.grid import Grid
from geo.hazard import HazardGrid
from geo.types import HazardKind, Nature
from geo.zones import rasterize_lonlat

SEVERITY_CLASSES = SeverityClasses(
    (1.0, 2.0, 3.0, 4.0), "", ("Minor", "Moderate", "Severe", "Extreme")
)
"""Classes of a CAP-derived hazard: one per CAP severity (Unknown counts as Minor)."""

_SEVERITY_VALUE = {Severity.MINOR: 1.0, Severity.MODERATE: 2.0, Severity.SEVERE: 3.0,
                   Severity.EXTREME: 4.0, Severity.UNKNOWN: 1.0}


def is_cap_file(path: str | Path) -> bool:
    """True when the file's first bytes hold a CAP ``alert`` element of any version."""
    with open(require_file(path), "rb") as fh:
        head = fh.read(4096)
    return b"<alert" in head and b"emergency:cap:" in head


def read_cap_hazard(
    path: str | Path,
    grid: Grid,
    *,
    geocode_lookup: Mapping[str, BaseGeometry] | None = None,
) -> HazardGrid:
    """A CAP message's areas as a categorical hazard on ``grid`` (the population grid).

    Args:
        path: the CAP XML file.
        grid: where to draw the areas.
        geocode_lookup: geometries (EPSG:4326) of the geocodes the region knows.

    Raises:
        FeedFormatError: the file is not a valid CAP 1.2 message (the reason is given),
            or its areas are empty or miss the grid.
    """
    src = require_file(path)
    data = src.read_bytes()
    if len(data) > MAX_CAP_BYTES:
        raise FeedFormatError(src, f"CAP file of {len(data):,} bytes exceeds the "
                              f"{MAX_CAP_BYTES:,}-byte limit")
    try:
        message = parse_cap(data)
        footprint = footprint_of(message, geocode_lookup)
    except CapError as exc:
        raise FeedFormatError(src, f"not an acceptable CAP 1.2 message: {exc}") from exc
    if footprint.is_empty:
        raise FeedFormatError(src, "the CAP message has no area Tocsin can draw (no polygon, "
                              "circle or known geocode)")
    values = _draw(footprint, _severity_value(message), grid)
    if not (values > 0).any():
        raise FeedFormatError(src, "the CAP message's areas do not touch the region")
    info = message.infos[0]
    return HazardGrid(
        data=xr.DataArray(values, dims=("y", "x")), grid=grid, kind=HazardKind.CATEGORICAL,
        units="", nature=Nature.OBSERVED if info.certainty.value == "Observed"
        else Nature.FORECAST,
        source=str(src), checksum="sha256:" + hashlib.sha256(data).hexdigest(),
        variable="severity", issued_at=message.sent, valid_at=info.onset or message.sent,
        event_id=_producer_event_id(message),
        attrs={"cap_event": info.event, "cap_msg_type": message.msg_type.value},
    )


def _producer_event_id(message: AlertEvent) -> str:
    """The producer's event: the first message it references, else this message itself.

    An Update or Cancel references the original Alert, so every message of one external
    event maps to the same id and to one Tocsin event.
    """
    first = message.references[0] if message.references else message
    return f"{first.sender},{first.identifier}"


def is_cancel(hazard: HazardGrid) -> bool:
    """True when the hazard came from an external CAP Cancel: its event is over."""
    return hazard.attrs.get("cap_msg_type") == "Cancel"


def _severity_value(message: AlertEvent) -> float:
    return max((_SEVERITY_VALUE.get(i.severity, 1.0) for i in message.infos), default=1.0)


def _draw(footprint: BaseGeometry, value: float, grid: Grid) -> np.ndarray:
    mask = rasterize_lonlat(footprint, grid, all_touched=True)
    # Outside the areas the message says nothing is happening: 0, below every class.
    return np.where(mask, value, 0.0)
