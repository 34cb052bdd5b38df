"""Suppression of small counts in public outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo.privacy import suppress_small_counts


def test_counts_from_one_to_min_minus_one_become_nan_and_zero_stays_zero() -> None:
    values = np.array([0, 1, 2, 4, 5, 6, 100])
    out = suppress_small_counts(values, 5)
    np.testing.assert_array_equal(out, [0, np.nan, np.nan, np.nan, 5, 6, 100])
    assert out.dtype == np.float64
    assert values.tolist() == [0, 1, 2, 4, 5, 6, 100]  # the input is not modified


def test_fractional_estimates_below_the_minimum_are_suppressed_too() -> None:
    out = suppress_small_counts(np.array([0.0, 0.4, 4.99, 5.0, np.nan]), 5)
    np.testing.assert_array_equal(out, [0.0, np.nan, np.nan, 5.0, np.nan])


def test_a_series_keeps_its_index_and_name() -> None:
    counts = pd.Series([3, 0, 12], index=pd.Index(["Z1", "Z2", "Z3"], name="zone_id"),
                       name="older")
    out = suppress_small_counts(counts, 5)
    assert out.index.tolist() == ["Z1", "Z2", "Z3"] and out.index.name == "zone_id"
    assert out.name == "older"
    assert np.isnan(out["Z1"]) and out["Z2"] == 0 and out["Z3"] == 12


def test_a_masked_array_keeps_its_mask() -> None:
    values = np.ma.MaskedArray([2.0, 7.0, -3.0], mask=[False, False, True])
    out = suppress_small_counts(values, 5)
    assert out.mask.tolist() == [False, False, True]
    assert np.isnan(out.data[0]) and out.data[1] == 7.0


@pytest.mark.parametrize("min_count", [0, 1])
def test_a_minimum_of_zero_or_one_suppresses_nothing(min_count: int) -> None:
    np.testing.assert_array_equal(suppress_small_counts(np.array([0, 1, 2]), min_count),
                                  [0.0, 1.0, 2.0])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="min_count must be 0 or more"):
        suppress_small_counts(np.array([1]), -1)
    with pytest.raises(ValueError, match="must be an integer"):
        suppress_small_counts(np.array([1]), 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be negative"):
        suppress_small_counts(np.array([3, -1]), 5)


@given(st.lists(st.integers(0, 50), max_size=30), st.integers(0, 20))
def test_every_value_is_either_kept_or_suppressed_when_small(values, min_count) -> None:
    out = suppress_small_counts(np.array(values, dtype=float), min_count)
    for before, after in zip(values, out, strict=True):
        if 0 < before < min_count:
            assert np.isnan(after)
        else:
            assert after == before
