"""Severity classes: break points per hazard kind, and classification of values.

Breaks are the lower bounds of the classes. With breaks ``b_1 < ... < b_n`` class ``k``
(1-based) holds values in ``[b_k, b_{k+1})`` and the top class is open above; class 0 holds
values below ``b_1`` and no-data. Intervals are closed below so that a depth of exactly
0.5 m is in the ``0.5-1.5 m`` class, as a reader of the legend would expect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from geo.errors import InvalidBreaksError
from geo.types import HazardKind, Resampling

_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")

# Default breaks, one rationale each. Units are the kind's canonical units below.
DEFAULT_BREAKS: Mapping[HazardKind, tuple[float, ...]] = MappingProxyType(
    {
        # Flood depth (m): 0.15 m hampers walking and wheelchairs, 0.5 m floats cars,
        # 1.5 m is life-threatening indoors (common flood-hazard rating bands).
        HazardKind.FLOOD_DEPTH: (0.15, 0.5, 1.5),
        # 24 h rainfall (mm): 50 / 100 / 200 mm, the usual heavy / very heavy / extreme bands.
        HazardKind.RAINFALL: (50.0, 100.0, 200.0),
        # Wind gust (m/s): 20 (gale damage), 25 (storm), 33 (hurricane force).
        HazardKind.WIND_GUST: (20.0, 25.0, 33.0),
        # MMI I..X: each integer intensity is the interval centred on it; X is open above
        # because the scale ends there (ShakeMap caps MMI at 10).
        HazardKind.SHAKING_MMI: (0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5),
        # Peak ground acceleration (%g): USGS ShakeMap's PGA bins for MMI V, VI, VII, VIII, IX.
        HazardKind.SHAKING_PGA: (3.9, 9.2, 18.0, 34.0, 65.0),
        # Peak ground velocity (cm/s): ShakeMap's PGV bins for MMI V..IX.
        HazardKind.SHAKING_PGV: (3.4, 8.1, 16.0, 31.0, 60.0),
        # Significant wave height (m): rough, very high, phenomenal seas (WMO sea state).
        HazardKind.WAVE_HEIGHT: (2.5, 6.0, 9.0),
        # Heat as air temperature (K): 30, 35, 40 degC.
        HazardKind.HEAT: (303.15, 308.15, 313.15),
        # Probability of exceedance (share of members): likely, very likely.
        HazardKind.PROBABILITY: (0.3, 0.6, 0.9),
    }
)

DEFAULT_UNITS: Mapping[HazardKind, str] = MappingProxyType(
    {
        HazardKind.FLOOD_DEPTH: "m",
        HazardKind.RAINFALL: "mm",
        HazardKind.WIND_GUST: "m s-1",
        HazardKind.SHAKING_MMI: "MMI",
        HazardKind.SHAKING_PGA: "%g",
        HazardKind.SHAKING_PGV: "cm/s",
        HazardKind.WAVE_HEIGHT: "m",
        HazardKind.HEAT: "K",
        HazardKind.PROBABILITY: "1",
    }
)

# Categorical fields must never be interpolated between categories.
_NEAREST_KINDS = frozenset({HazardKind.CATEGORICAL})


@dataclass(frozen=True, slots=True)
class SeverityClasses:
    """Ordered severity classes of one hazard.

    Attributes:
        breaks: strictly increasing, finite lower bounds of classes 1..n.
        units: units of the breaks.
        labels: one label per class 1..n, readable without colour.
    """

    breaks: tuple[float, ...]
    units: str = ""
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        breaks = tuple(float(b) for b in self.breaks)
        validate_breaks(breaks)
        object.__setattr__(self, "breaks", breaks)
        if not self.labels:
            object.__setattr__(self, "labels", _range_labels(breaks, self.units))
        elif len(self.labels) != len(breaks):
            raise InvalidBreaksError(
                f"{len(self.labels)} labels given for {len(breaks)} classes; need one per class"
            )

    @property
    def count(self) -> int:
        """Number of classes above class 0."""
        return len(self.breaks)

    def lower(self, k: int) -> float:
        """Lower bound (inclusive) of class ``k`` (1-based); ``-inf`` for class 0."""
        return -math.inf if k == 0 else self.breaks[k - 1]

    def upper(self, k: int) -> float:
        """Upper bound (exclusive) of class ``k``; ``inf`` for the top class."""
        return self.breaks[k] if k < self.count else math.inf

    def label(self, k: int) -> str:
        """Label of class ``k``; class 0 is ``"below"``."""
        return "below" if k == 0 else self.labels[k - 1]


def validate_breaks(breaks: Sequence[float]) -> None:
    """Raise :class:`InvalidBreaksError` unless breaks are finite and strictly increasing."""
    if len(breaks) == 0:
        raise InvalidBreaksError("at least one class break is needed")
    arr = np.asarray(breaks, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise InvalidBreaksError(f"class breaks must be finite numbers, got {list(breaks)}")
    if np.any(np.diff(arr) <= 0):
        raise InvalidBreaksError(f"class breaks must be strictly increasing, got {list(breaks)}")
    if len(arr) > 254:
        raise InvalidBreaksError(f"at most 254 classes are supported, got {len(arr)}")


def default_classes(kind: HazardKind, units: str | None = None) -> SeverityClasses:
    """The default severity classes of a hazard kind.

    Raises:
        InvalidBreaksError: the kind has no default; the caller must give breaks.
    """
    if kind not in DEFAULT_BREAKS:
        raise InvalidBreaksError(
            f"no default class breaks for hazard kind {kind.value!r}; give breaks explicitly"
        )
    breaks = DEFAULT_BREAKS[kind]
    labels: tuple[str, ...] = ()
    if kind is HazardKind.SHAKING_MMI:
        labels = _ROMAN[: len(breaks)]
    elif kind is HazardKind.PROBABILITY:
        labels = _range_labels(tuple(100 * b for b in breaks), "%")
    return SeverityClasses(breaks, units or DEFAULT_UNITS.get(kind, ""), tuple(labels))


def default_resampling(kind: HazardKind) -> Resampling:
    """Bilinear for continuous intensities, nearest for categorical fields."""
    return "nearest" if kind in _NEAREST_KINDS else "bilinear"


def classify(values: np.ndarray, breaks: Sequence[float]) -> np.ndarray:
    """Class index (uint8) of every value: 0 below the first break or no-data (NaN).

    Args:
        values: any-shaped float array; ``NaN`` is no-data.
        breaks: strictly increasing lower bounds of classes 1..n.

    Returns:
        Array of the same shape; ``k`` where ``breaks[k-1] <= v < breaks[k]``.
    """
    validate_breaks(breaks)
    if len(breaks) > _COMPARE_MAX_BREAKS:
        edges = np.asarray(breaks, dtype="float64")
        # side="right": a value equal to a break belongs to the class that break opens.
        out = np.searchsorted(edges, values, side="right").astype(np.uint8)
        out[np.isnan(values)] = 0
        return out
    # Few breaks: one comparison pass per break is several times faster than a binary
    # search per value, and NaN compares False, so no-data stays in class 0 for free.
    out = np.zeros(values.shape, dtype=np.uint8)
    scratch = np.empty(values.shape, dtype=bool)
    for b in breaks:
        np.greater_equal(values, b, out=scratch)
        out += scratch
    return out


_COMPARE_MAX_BREAKS = 12


def _range_labels(breaks: tuple[float, ...], units: str) -> tuple[str, ...]:
    # Dimensionless units ("1") add nothing a reader could use.
    suffix = "" if units in ("", "1") else ("%" if units == "%" else f" {units}")
    labels = []
    for i, lo in enumerate(breaks):
        if i + 1 < len(breaks):
            labels.append(f"{_fmt(lo)} to {_fmt(breaks[i + 1])}{suffix}")
        else:
            labels.append(f"{_fmt(lo)}{suffix} and above")
    return tuple(labels)


def _fmt(x: float) -> str:
    return f"{x:g}"
