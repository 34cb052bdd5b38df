"""Small-count suppression for outputs that leave the owning agency.

Counts of people from a registry (or small estimated counts) can identify individuals:
"2 people on home oxygen in zone Z014" is close to a name. Public outputs therefore show
such cells as suppressed (``NaN``) rather than the number; zero stays zero, because "nobody"
identifies no one.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd

Counts = TypeVar("Counts", np.ndarray, pd.Series)


def is_small_count(value: float, min_count: int) -> bool:
    """True when one count must be hidden from the public: ``0 < value < min_count``.

    The scalar form of :func:`suppress_small_counts`, for text, tables and messages.
    """
    return 0 < value < min_count


def suppress_small_counts(values: Counts, min_count: int) -> Counts:
    """Replace counts that are above zero but below ``min_count`` with ``NaN`` ("suppressed").

    Integral counts ``1 .. min_count - 1`` are suppressed. Fractional counts (expected
    numbers from rates) are treated the same way: any ``0 < value < min_count`` is
    suppressed, since rounding 0.6 gives 1 person. ``0`` and ``NaN`` are kept as they are.

    Args:
        values: counts, as an array (masked arrays keep their mask) or a Series (index and
            name kept).
        min_count: the smallest count that may be shown; ``0`` or ``1`` suppresses nothing.

    Returns:
        A float copy of ``values`` of the same type, small counts set to ``NaN``.

    Raises:
        ValueError: ``min_count`` is negative or not an integer, or a count is negative.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int | np.integer):
        raise ValueError(f"min_count must be an integer, got {min_count!r}")
    if min_count < 0:
        raise ValueError(f"min_count must be 0 or more, got {min_count}")
    if isinstance(values, pd.Series):
        out = values.astype("float64")
        data = out.to_numpy(copy=True)
        return pd.Series(_suppress(data, min_count), index=out.index, name=out.name)
    if isinstance(values, np.ma.MaskedArray):
        data = np.ma.getdata(values).astype("float64", copy=True)
        return np.ma.MaskedArray(_suppress(data, min_count, np.ma.getmaskarray(values)),
                                 mask=np.ma.getmaskarray(values).copy())
    return _suppress(np.asarray(values, dtype="float64").copy(), min_count)


def _suppress(data: np.ndarray, min_count: int, ignore: np.ndarray | None = None) -> np.ndarray:
    """Suppress in place (``data`` is already a private float copy) and return it."""
    checked = data if ignore is None else np.where(ignore, 0.0, data)
    if np.any(checked < 0):
        raise ValueError(
            f"counts must not be negative; found {int(np.sum(checked < 0))} negative value(s), "
            f"the lowest {float(np.nanmin(checked))}"
        )
    data[(data > 0) & (data < min_count)] = np.nan
    return data
