"""Closed vocabularies of the core, in one place."""

from enum import StrEnum
from typing import Literal


class HazardKind(StrEnum):
    """What a hazard grid measures; decides default units, breaks and resampling."""

    FLOOD_DEPTH = "flood_depth"
    RAINFALL = "rainfall"
    WIND_GUST = "wind_gust"
    SHAKING_MMI = "shaking_mmi"
    SHAKING_PGA = "shaking_pga"
    SHAKING_PGV = "shaking_pgv"
    WAVE_HEIGHT = "wave_height"
    HEAT = "heat"
    COLD = "cold"
    FIRE = "fire"
    PROBABILITY = "probability"
    CATEGORICAL = "categorical"
    OTHER = "other"


class Nature(StrEnum):
    """Whether a hazard grid was observed or is a forecast (CAP certainty follows from it)."""

    OBSERVED = "observed"
    FORECAST = "forecast"


class FacilityType(StrEnum):
    """Facility types a region pack may hold."""

    HOSPITAL = "hospital"
    CARE_HOME = "care_home"
    SHELTER = "shelter"
    SCHOOL = "school"


class Group(StrEnum):
    """Vulnerable groups counted by the overlay."""

    DISABILITY = "disability"
    OLDER = "older"
    ELECTRICITY_DEPENDENT = "electricity_dependent"


Resampling = Literal["bilinear", "nearest"]
"""How a hazard is sampled onto the population grid: continuous or categorical fields."""

BBox = tuple[float, float, float, float]
"""A bounding box as ``(minx, miny, maxx, maxy)``."""
