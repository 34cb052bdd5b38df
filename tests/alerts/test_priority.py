"""The priority rule table (data) and the explainable priority it gives.

Unless a test says otherwise, the hazard is OBSERVED (no certainty cap, urgency Immediate)
and reaches class 1 of 3 (class share 1/3: green for the severity factor, CAP Moderate), and
nobody is exposed: every level then comes from the one factor the test sets.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.errors import AlertError, RuleTableError
from alerts.model import (
    Certainty,
    ClassExposure,
    ExposureSummary,
    FacilityHit,
    HazardSummary,
    Level,
    Severity,
    Urgency,
)
from alerts.priority import (
    FACILITY_TYPES,
    PEOPLE_FACTORS,
    format_count,
    format_duration,
    format_percent,
    level_for,
    load_rules,
    prioritize,
)

NOW = datetime(2024, 5, 14, 12, 0, tzinfo=UTC)
RULES = load_rules()
DEFAULT_TEXT = resources.files("alerts.rules").joinpath("priority-v1.toml").read_text("utf-8")
LABELS = ("0.15 to 0.5 m", "0.5 to 1.5 m", "1.5 m and above")


def _hazard(max_class: int = 1, n_classes: int = 3, **changes: object) -> HazardSummary:
    label = LABELS[max_class - 1] if n_classes == 3 and max_class else f"class {max_class}"
    base = HazardSummary(
        kind="flood_depth", nature="observed", units="m", n_classes=n_classes,
        max_class=max_class, max_class_label="below" if max_class == 0 else label,
        issued_at=NOW, onset=NOW, exceedance_share=None, source="flood.tif",
        checksum="sha256:ab",
    )
    return replace(base, **changes)


def _forecast(share: float | None, onset: datetime = NOW + timedelta(hours=6),
              **changes: object) -> HazardSummary:
    return _hazard(nature="forecast", exceedance_share=share, onset=onset, **changes)


def _level(hazard: HazardSummary, exposure: ExposureSummary) -> Level:
    return prioritize(hazard, exposure, now=NOW).level


NOBODY = ExposureSummary(population=0.0)


# --- The shipped table ----------------------------------------------------------------------


def test_the_shipped_table_is_version_1_with_the_documented_people_thresholds() -> None:
    assert RULES.version == "1"
    assert RULES.people["population"] == ((1, Level.YELLOW), (1000, Level.ORANGE),
                                          (10000, Level.RED))
    assert RULES.people["disability"] == ((1, Level.YELLOW), (100, Level.ORANGE),
                                          (1000, Level.RED))
    assert RULES.people["electricity_dependent"] == ((1, Level.YELLOW), (10, Level.ORANGE),
                                                     (100, Level.RED))
    assert RULES.max_level == {Certainty.UNLIKELY: Level.YELLOW, Certainty.POSSIBLE: Level.ORANGE}


def test_a_value_takes_the_level_of_the_highest_threshold_at_or_below_it() -> None:
    table = ((1.0, Level.YELLOW), (1000.0, Level.ORANGE))
    assert level_for(0.999, table) is Level.GREEN
    assert level_for(1.0, table) is Level.YELLOW
    assert level_for(999.0, table) is Level.YELLOW
    assert level_for(1e9, table) is Level.ORANGE


# --- Bad tables are refused, naming the key ----------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('older = [[1, "yellow"], [300, "orange"], [3000, "red"]]\n', "", "people.older"),
        ('school = [[0.6, "yellow"]]', 'school = [[0.6, "purple"]]', "facilities.school"),
        ('population = [[1, "yellow"], [1000, "orange"], [10000, "red"]]',
         'population = [[1, "yellow"], [1000, "orange"], [900, "red"]]', "people.population"),
        ('[[1, "yellow"], [100, "orange"], [1000, "red"]]',
         '[[1, "yellow"], [100, "red"], [1000, "orange"]]', "people.disability"),
        ("cut_off = \"orange\"", "cut_off = \"amber\"", "facilities.cut_off"),
        ("expected_within_h = 24.0", "expected_within_h = 0.5", "urgency.expected_within_h"),
        ("likely_from_share = 0.5", "likely_from_share = 0.1", "certainty.likely_from_share"),
        ("possible_from_share = 0.2", "possible_from_share = 1.5",
         "certainty.possible_from_share"),
        ('Unlikely = "yellow"', 'Doubtful = "yellow"', "certainty.max_level.Doubtful"),
        ('version = "1"', "version = 1", "version"),
        ("[urgency]", "[urgencies]", "urgencies"),
        ('level = [[0.5, "yellow"], [1.0, "orange"]]', 'level = [[true, "yellow"]]',
         "severity.level"),
        ('"Moderate"]', '"Grave"]', "severity.cap_severity"),
    ],
    ids=["missing-factor", "unknown-level", "thresholds-not-increasing", "levels-not-rising",
         "unknown-cut-off-level", "expected-before-immediate", "likely-below-possible",
         "share-above-one", "unknown-certainty", "version-not-text", "unknown-section",
         "boolean-threshold", "unknown-cap-severity"],
)
def test_a_malformed_rule_table_is_refused_with_the_key_named(old: str, new: str,
                                                               key: str) -> None:
    assert old in DEFAULT_TEXT
    with pytest.raises(RuleTableError, match=key.replace(".", r"\.")):
        load_rules(DEFAULT_TEXT.replace(old, new, 1))


def test_text_that_is_not_toml_is_refused_as_a_rule_table_error() -> None:
    with pytest.raises(RuleTableError, match="not valid TOML"):
        load_rules("version = ")


def test_a_valid_edited_table_is_used_and_its_version_recorded() -> None:
    text = DEFAULT_TEXT.replace('version = "1"', 'version = "1-test"').replace(
        "[[1, \"yellow\"], [1000, \"orange\"], [10000, \"red\"]]",
        "[[5, \"yellow\"], [50, \"orange\"], [500, \"red\"]]")
    rules = load_rules(text)
    priority = prioritize(_hazard(), ExposureSummary(population=60.0), now=NOW, rules=rules)
    assert (priority.level, priority.rules_version) == (Level.ORANGE, "1-test")


# --- Every boundary of the people tables --------------------------------------------------


def _boundaries() -> list[tuple[str, float, Level, Level]]:
    out = []
    for factor in PEOPLE_FACTORS:
        previous = Level.GREEN
        for threshold, level in RULES.people[factor]:
            out.append((factor, threshold, level, previous))
            previous = level
    return out


@pytest.mark.parametrize(("factor", "threshold", "level", "below"), _boundaries(),
                         ids=lambda v: str(v))
def test_a_count_at_a_threshold_takes_its_level_and_just_below_keeps_the_previous_one(
    factor: str, threshold: float, level: Level, below: Level
) -> None:
    at = replace(NOBODY, **{factor: threshold})
    just_below = replace(NOBODY, **{factor: math.nextafter(threshold, 0.0)})
    assert _level(_hazard(), at) is level
    assert _level(_hazard(), just_below) is below


@given(factor=st.sampled_from(PEOPLE_FACTORS),
       value=st.floats(min_value=0, max_value=1e7, allow_nan=False))
def test_any_count_gets_the_level_of_the_interval_it_falls_in(factor: str, value: float) -> None:
    thresholds = [t for t, _ in RULES.people[factor]]
    reached = [lv for t, lv in RULES.people[factor] if t <= value]
    expected = reached[-1] if reached else Level.GREEN
    assert _level(_hazard(), replace(NOBODY, **{factor: value})) is expected
    assert all(t > value for t in thresholds[len(reached):])


_counts = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_exposures = st.fixed_dictionaries({f: _counts for f in PEOPLE_FACTORS})


@given(before=_exposures, extra=_exposures, max_class=st.integers(0, 3),
       more_classes=st.integers(0, 3))
def test_more_people_or_a_higher_class_never_lowers_the_level(
    before: dict[str, float], extra: dict[str, float], max_class: int, more_classes: int
) -> None:
    after = {f: before[f] + extra[f] for f in PEOPLE_FACTORS}
    higher = min(3, max_class + more_classes)
    low = _level(_hazard(max_class), ExposureSummary(**before))
    high = _level(_hazard(higher), ExposureSummary(**after))
    assert high.rank >= low.rank


@given(share=st.floats(0, 1), more=st.floats(0, 1), people=_counts)
def test_a_higher_ensemble_share_never_lowers_the_level(share: float, more: float,
                                                        people: float) -> None:
    exposure = ExposureSummary(population=people)
    low = _level(_forecast(share), exposure)
    high = _level(_forecast(min(1.0, share + more)), exposure)
    assert high.rank >= low.rank


# --- Severity class, facilities ------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_class", "level", "severity"),
    # Ten classes (MMI-like): share k/10. Severity level: yellow from 0.5, orange at 1.0;
    # CAP: Moderate from 0.3, Severe from 0.6, Extreme at 1.0.
    [(0, Level.GREEN, Severity.MINOR), (2, Level.GREEN, Severity.MINOR),
     (3, Level.GREEN, Severity.MODERATE), (4, Level.GREEN, Severity.MODERATE),
     (5, Level.YELLOW, Severity.MODERATE), (6, Level.YELLOW, Severity.SEVERE),
     (9, Level.YELLOW, Severity.SEVERE), (10, Level.ORANGE, Severity.EXTREME)],
)
def test_the_class_reached_sets_a_base_level_and_the_cap_severity(
    max_class: int, level: Level, severity: Severity
) -> None:
    priority = prioritize(_hazard(max_class, n_classes=10), NOBODY, now=NOW)
    assert (priority.level, priority.severity) == (level, severity)


@pytest.mark.parametrize(
    ("ftype", "k", "level"),
    # Ten classes; the hazard reaches class 3 (share 0.3: severity green) unless the facility
    # is higher. Hospitals and care homes: yellow from 0.3, orange from 0.6 (the severity
    # factor alone gives at most yellow below class 10). Shelters, schools: yellow from 0.6.
    [("hospital", 2, Level.GREEN), ("hospital", 3, Level.YELLOW),
     ("hospital", 6, Level.ORANGE), ("care_home", 3, Level.YELLOW),
     ("care_home", 6, Level.ORANGE), ("shelter", 3, Level.GREEN),
     ("shelter", 6, Level.YELLOW), ("school", 6, Level.YELLOW)],
)
def test_facilities_raise_the_level_by_the_class_they_stand_in(ftype: str, k: int,
                                                               level: Level) -> None:
    hit = FacilityHit(name="Site", type=ftype, class_label=f"class {k}")
    by_class = tuple(ClassExposure(k=i, label=f"class {i}", population=0.0) for i in range(1, 11))
    exposure = ExposureSummary(population=0.0, facilities_hit=(hit,), by_class=by_class)
    hazard = _hazard(max(k, 3), n_classes=10)
    assert _level(hazard, exposure) is level


def test_every_facility_type_of_the_region_packs_is_rated() -> None:
    assert set(RULES.facilities) == set(FACILITY_TYPES)


def test_a_hospital_in_the_top_class_is_named_in_the_reasons_and_makes_it_orange() -> None:
    exposure = ExposureSummary(population=0.0, facilities_hit=(
        FacilityHit(name="St Mary", type="hospital", class_label="1.5 m and above"),
        FacilityHit(name="Oak care home", type="care_home", class_label="1.5 m and above"),
        FacilityHit(name="Bridge hospital", type="hospital", class_label="", cut_off=True),
    ))
    priority = prioritize(_hazard(3), exposure, now=NOW)
    assert priority.level is Level.ORANGE
    assert "St Mary hospital in the '1.5 m and above' class" in priority.reasons
    assert "Oak care home in the '1.5 m and above' class" in priority.reasons
    assert "Bridge hospital cut off" in priority.reasons


def test_a_facility_in_a_class_the_exposure_does_not_know_is_refused() -> None:
    exposure = ExposureSummary(population=0.0, facilities_hit=(
        FacilityHit(name="St Mary", type="hospital", class_label="knee deep"),))
    with pytest.raises(AlertError, match="knee deep"):
        prioritize(_hazard(3), exposure, now=NOW)


def test_many_facilities_are_named_up_to_five_and_the_rest_counted() -> None:
    hits = tuple(FacilityHit(name=f"School {i}", type="school", class_label="1.5 m and above")
                 for i in range(8))
    priority = prioritize(_hazard(3), ExposureSummary(0.0, facilities_hit=hits), now=NOW)
    named = [r for r in priority.reasons if r.startswith("School ")]
    assert len(named) == 5
    assert "3 more facilities in the hazard area" in priority.reasons


# --- Certainty, urgency, caps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "certainty"),
    [(None, Certainty.LIKELY), (1.0, Certainty.LIKELY), (0.5, Certainty.LIKELY),
     (math.nextafter(0.5, 0), Certainty.POSSIBLE), (0.2, Certainty.POSSIBLE),
     (math.nextafter(0.2, 0), Certainty.UNLIKELY), (0.0, Certainty.UNLIKELY)],
)
def test_forecast_certainty_follows_the_ensemble_share(share: float | None,
                                                       certainty: Certainty) -> None:
    assert prioritize(_forecast(share), NOBODY, now=NOW).certainty is certainty


def test_an_observed_hazard_is_observed_and_immediate_even_if_it_began_days_ago() -> None:
    priority = prioritize(_hazard(onset=NOW - timedelta(days=3)), NOBODY, now=NOW)
    assert (priority.certainty, priority.urgency) == (Certainty.OBSERVED, Urgency.IMMEDIATE)


@pytest.mark.parametrize(
    ("lead", "urgency"),
    [(timedelta(0), Urgency.IMMEDIATE), (timedelta(hours=1), Urgency.IMMEDIATE),
     (timedelta(hours=1, seconds=1), Urgency.EXPECTED), (timedelta(hours=24), Urgency.EXPECTED),
     (timedelta(hours=24, seconds=1), Urgency.FUTURE), (timedelta(seconds=-1), Urgency.PAST)],
)
def test_forecast_urgency_follows_the_lead_time_to_onset(lead: timedelta,
                                                         urgency: Urgency) -> None:
    assert prioritize(_forecast(0.9, onset=NOW + lead), NOBODY, now=NOW).urgency is urgency


def test_a_forecast_without_onset_has_unknown_urgency() -> None:
    priority = prioritize(_forecast(None, onset=None), NOBODY, now=NOW)
    assert priority.urgency is Urgency.UNKNOWN
    assert "Onset time unknown" in priority.reasons


def test_onset_is_compared_across_time_zones() -> None:
    plus_two = timezone(timedelta(hours=2))
    onset = (NOW + timedelta(minutes=30)).astimezone(plus_two)  # 14:30+02:00 = 12:30Z
    assert prioritize(_forecast(0.9, onset=onset), NOBODY, now=NOW).urgency is Urgency.IMMEDIATE


@pytest.mark.parametrize(
    ("share", "level"),
    # 20,000 people alone give red; Unlikely (< 0.2) caps at yellow, Possible at orange.
    [(0.1, Level.YELLOW), (0.3, Level.ORANGE), (0.7, Level.RED), (None, Level.RED)],
)
def test_an_uncertain_forecast_caps_the_level(share: float | None, level: Level) -> None:
    assert _level(_forecast(share), ExposureSummary(population=20_000.0)) is level


def test_a_cap_is_the_first_reason_and_says_why() -> None:
    priority = prioritize(_forecast(0.15), ExposureSummary(population=20_000.0), now=NOW)
    assert priority.reasons[0] == (
        "Level capped at yellow: the forecast is unlikely (15% of ensemble members exceed the "
        "threshold); the other factors alone give red")


def test_an_ensemble_forecast_states_its_share_in_words() -> None:
    priority = prioritize(_forecast(0.7), ExposureSummary(population=5.0), now=NOW)
    assert "Forecast: 70% of ensemble members exceed the threshold (likely)" in priority.reasons
    assert "Onset in about 6 hours" in priority.reasons


# --- Reasons -------------------------------------------------------------------------------


def test_reasons_put_the_factor_that_set_the_level_first_with_rounded_numbers() -> None:
    # 3,120 people with disabilities (red from 1,000) outrank 512 people (yellow).
    by_class = (ClassExposure(1, LABELS[0], 200.0, disability=0.0),
                ClassExposure(2, LABELS[1], 12.0, disability=0.0),
                ClassExposure(3, LABELS[2], 300.0, disability=3120.0))
    exposure = ExposureSummary(population=512.0, disability=3120.0, by_class=by_class)
    priority = prioritize(_hazard(3), exposure, now=NOW)
    assert priority.level is Level.RED
    assert priority.reasons[0] == ("3,100 people with disabilities in the hazard area, all in "
                                   "the most severe class ('1.5 m and above')")
    assert priority.reasons[1] == ("Highest class reached: '1.5 m and above' (class 3 of 3, "
                                   "the most severe)")
    assert priority.reasons[2] == ("510 people in the hazard area, 300 of them in the most "
                                   "severe class ('1.5 m and above')")


def test_nobody_exposed_is_said_in_words() -> None:
    priority = prioritize(_hazard(), NOBODY, now=NOW)
    assert priority.level is Level.GREEN
    assert "Nobody and no facility counted in the hazard area" in priority.reasons


def test_people_cut_off_from_care_are_a_reason_of_their_own() -> None:
    priority = prioritize(_hazard(), ExposureSummary(0.0, cut_off_population=1.0), now=NOW)
    assert priority.level is Level.YELLOW
    assert priority.reasons[0] == "1 person cut off from hospital care by the hazard"


def test_the_score_sorts_by_level_first_then_by_breadth() -> None:
    narrow = prioritize(_hazard(), ExposureSummary(population=1500.0), now=NOW)
    broad = prioritize(_hazard(), ExposureSummary(population=1500.0, disability=150.0,
                                                  older=400.0), now=NOW)
    red = prioritize(_hazard(), ExposureSummary(population=10_000.0), now=NOW)
    assert narrow.level is broad.level is Level.ORANGE
    assert 2 <= narrow.score < broad.score < 3 <= red.score


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.4, "fewer than 1"), (1, "1"), (87.5, "88"), (99.6, "100"), (987, "990"),
     (995, "1,000"), (3120, "3,100"), (12_345, "12,000"), (1_250_000, "1,300,000")],
)
def test_counts_are_rounded_for_reading(value: float, text: str) -> None:
    assert format_count(value) == text


def test_shares_and_lead_times_are_rounded_for_reading() -> None:
    assert format_percent(0.695) == "70%"
    assert format_duration(timedelta(minutes=20)) == "less than an hour"
    assert format_duration(timedelta(minutes=80)) == "about 1 hour"
    assert format_duration(timedelta(hours=30)) == "about 30 hours"
    assert format_duration(timedelta(hours=80)) == "about 3 days"


# --- Bad input -----------------------------------------------------------------------------


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(AlertError, match="timezone-aware"):
        prioritize(_hazard(), NOBODY, now=datetime(2024, 5, 14, 12))


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_a_negative_or_missing_count_is_refused_rather_than_rated(value: float) -> None:
    with pytest.raises(AlertError, match="exposure.older"):
        prioritize(_hazard(), ExposureSummary(0.0, older=value), now=NOW)


def test_a_class_beyond_the_scale_is_refused() -> None:
    with pytest.raises(AlertError, match="max_class 4"):
        prioritize(replace(_hazard(3), max_class=4), NOBODY, now=NOW)


def test_an_ensemble_share_outside_0_1_is_refused() -> None:
    with pytest.raises(AlertError, match="exceedance_share"):
        prioritize(_forecast(70.0), NOBODY, now=NOW)
