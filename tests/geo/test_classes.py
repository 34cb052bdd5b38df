import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo.classes import SeverityClasses, classify, default_classes
from geo.errors import InvalidBreaksError
from geo.types import HazardKind


def test_values_equal_to_a_break_fall_in_the_class_that_break_opens() -> None:
    values = np.array([0.0, 0.1499, 0.15, 0.4999, 0.5, 1.5, 99.0, np.nan])
    assert classify(values, (0.15, 0.5, 1.5)).tolist() == [0, 0, 1, 1, 2, 3, 3, 0]


def test_no_data_is_class_zero_whatever_the_breaks() -> None:
    assert classify(np.array([np.nan, np.nan]), (-100.0,)).tolist() == [0, 0]


@given(
    breaks=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=12, unique=True
    ).map(sorted),
    value=st.floats(-2e6, 2e6, allow_nan=False),
)
def test_every_value_lies_in_the_closed_below_open_above_interval_of_its_class(
    breaks: list[float], value: float
) -> None:
    k = int(classify(np.array([value]), breaks)[0])
    classes = SeverityClasses(tuple(breaks))
    assert classes.lower(k) <= value < classes.upper(k)


def test_the_top_class_is_open_above_and_class_zero_open_below() -> None:
    classes = SeverityClasses((1.0, 2.0))
    assert classes.lower(0) == -math.inf
    assert classes.upper(2) == math.inf
    assert classes.labels == ("1 to 2", "2 and above")


@pytest.mark.parametrize("bad", [(), (1.0, 1.0), (2.0, 1.0), (0.0, math.inf), (math.nan,)])
def test_breaks_that_are_not_finite_and_strictly_increasing_are_refused(bad: tuple) -> None:
    with pytest.raises(InvalidBreaksError):
        SeverityClasses(bad)


def test_mmi_defaults_give_ten_roman_classes_with_x_open_above() -> None:
    mmi = default_classes(HazardKind.SHAKING_MMI)
    assert mmi.count == 10
    assert mmi.label(1) == "I" and mmi.label(10) == "X"
    assert classify(np.array([0.49, 0.5, 6.4, 6.5, 10.0]), mmi.breaks).tolist() == [0, 1, 6, 7, 10]


def test_flood_defaults_are_in_metres_with_readable_labels() -> None:
    flood = default_classes(HazardKind.FLOOD_DEPTH)
    assert flood.breaks == (0.15, 0.5, 1.5)
    assert flood.labels == ("0.15 to 0.5 m", "0.5 to 1.5 m", "1.5 m and above")


def test_a_kind_without_defaults_asks_for_breaks() -> None:
    with pytest.raises(InvalidBreaksError, match="give breaks explicitly"):
        default_classes(HazardKind.OTHER)
