"""`RegionPack`: the exposure layers of one region, loaded and checked, as a value.

A region pack is what a hazard is overlaid against: people per cell, admin zones, the
shares of vulnerable groups, facilities and a friction surface for travel time. The
loader lives in :mod:`feeds.region`; everything here is already on known grids and CRSs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import geopandas as gpd
import pandas as pd

from geo.raster import Raster
from geo.types import Group

DEFAULT_MIN_PUBLIC_COUNT = 5
"""Counts below this are suppressed in outputs meant for anyone but the owning agency."""


@dataclass(frozen=True, slots=True)
class GroupLayer:
    """How many people of one vulnerable group live where.

    Exactly one source is usual, but rates and a registry may be combined: the registry
    counts are then used where present (they are the better figure), rates elsewhere.

    Attributes:
        group: which group.
        rate_by_zone: share of the population (0..1) per ``zone_id``.
        rate_raster: share of the population (0..1) per population cell.
        registry_counts: people per population cell, aggregated from individual records
            (their locations are dropped at load time and never reach any output).
        source: where it came from, for the report.
    """

    group: Group
    rate_by_zone: pd.Series | None = None
    rate_raster: Raster | None = None
    registry_counts: Raster | None = None
    source: str = ""

    @property
    def is_registry(self) -> bool:
        """True when counts come from individual records (privacy rules apply)."""
        return self.registry_counts is not None


@dataclass(frozen=True, slots=True)
class RegionPack:
    """All exposure layers of one region.

    Attributes:
        name: the region's name.
        population: people per cell (counts; densities are converted at load time).
        zones: admin units with columns ``zone_id`` (str), ``name`` and ``geometry``, in
            the population CRS; ``None`` when the pack has none.
        groups: vulnerable-group layers by group.
        facilities: points with ``facility_id``, ``name``, ``type`` (a
            :class:`~geo.types.FacilityType` value) and ``geometry``, population CRS.
        friction: minutes needed to cross one metre of each cell, on its own grid.
        min_public_count: counts below this are suppressed in public outputs.
        access_threshold_min: travel time to care beyond which people count as cut off.
        source: the folder or manifest it was loaded from.
    """

    name: str
    population: Raster
    zones: gpd.GeoDataFrame | None = None
    groups: Mapping[Group, GroupLayer] = field(default_factory=dict)
    facilities: gpd.GeoDataFrame | None = None
    friction: Raster | None = None
    min_public_count: int = DEFAULT_MIN_PUBLIC_COUNT
    access_threshold_min: float = 60.0
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))
