"""Explainable priority: a level in words, the CAP triple, and the reasons why.

The rules are data: a versioned TOML table shipped in ``alerts/rules/`` (documented in
``docs/priority-rules.md``). Each factor (the hazard's severity class, people exposed,
people with disabilities, older and electricity-dependent people, people cut off from care,
facilities hit) maps its value to a level through a threshold table, in the manner of
USGS PAGER's ``[(1, 'yellow'), (1000, 'orange'), (10000, 'red')]``. The alert level is the
most severe factor level, then capped by the certainty (an unlikely forecast cannot raise
a red alert). Every factor that raised the level gives a plain-English reason, most
important first. Time is passed in (``now=``); nothing here reads the clock.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, TypeVar

from alerts.errors import AlertError, RuleTableError
from alerts.model import (
    Certainty,
    ExposureSummary,
    FacilityHit,
    HazardSummary,
    Level,
    Priority,
    Severity,
    Urgency,
)

DEFAULT_RULES_FILE = "priority-v1.toml"
"""The rule table used when the caller gives none (package data of ``alerts.rules``)."""

PEOPLE_FACTORS: tuple[str, ...] = (
    "population", "disability", "older", "electricity_dependent",
    "cut_off_population", "cut_off_disability",
)
"""People factors, most important first: attribute names of :class:`ExposureSummary`."""

FACILITY_TYPES: tuple[str, ...] = ("hospital", "care_home", "shelter", "school")
"""Facility types the table must rate (the values of :class:`geo.types.FacilityType`)."""

MAX_FACILITY_REASONS = 5
"""Facilities named one by one in the reasons; the rest are counted in one sentence."""

_SEVERITY_ORDER = (Severity.MINOR, Severity.MODERATE, Severity.SEVERE, Severity.EXTREME)
# Importance order within a level: people factors (0..5), facilities (6..), the hazard class.
_HAZARD_FINDING_ORDER = 100

T = TypeVar("T")
Thresholds = tuple[tuple[float, Level], ...]
"""``((threshold, level), ...)``: thresholds and levels both strictly increasing."""


@dataclass(frozen=True, slots=True)
class RuleTable:
    """A validated priority rule table (see ``docs/priority-rules.md``).

    Attributes:
        version: version of the table, recorded in every :class:`Priority`.
        severity_level: level from the class share (highest class / number of classes).
        cap_severity: CAP severity from the class share.
        people: threshold table per people factor (:data:`PEOPLE_FACTORS`).
        facilities: threshold table on the class share per facility type.
        facility_cut_off: level of any facility cut off from the roads.
        immediate_within_h: onsets up to this many hours ahead are Immediate.
        expected_within_h: onsets up to this many hours ahead are Expected (later: Future).
        likely_from_share: ensemble exceedance share from which a forecast is Likely.
        possible_from_share: share from which it is Possible (below: Unlikely).
        max_level: the most severe level each certainty allows.
    """

    version: str
    severity_level: Thresholds
    cap_severity: tuple[tuple[float, Severity], ...]
    people: Mapping[str, Thresholds]
    facilities: Mapping[str, Thresholds]
    facility_cut_off: Level
    immediate_within_h: float
    expected_within_h: float
    likely_from_share: float
    possible_from_share: float
    max_level: Mapping[Certainty, Level]


def level_for(value: float, table: Thresholds) -> Level:
    """The level of ``value``: that of the highest threshold at or below it, else green."""
    return _step(value, table, Level.GREEN)


def _step(value: float, table: tuple[tuple[float, T], ...], below: T) -> T:
    out = below
    for threshold, result in table:
        if value >= threshold:
            out = result
    return out


# --- Loading and validating the table ---------------------------------------------------


def load_rules(text: str | None = None) -> RuleTable:
    """Parse and validate a priority rule table.

    Args:
        text: the TOML text; ``None`` loads the shipped default (:data:`DEFAULT_RULES_FILE`).

    Returns:
        The validated table.

    Raises:
        RuleTableError: invalid TOML, a missing or unknown key, an unknown level, severity
            or certainty, thresholds or levels not strictly increasing (the message names
            the key).
    """
    if text is None:
        return _default_rules()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleTableError(f"priority rules are not valid TOML: {exc}") from exc
    return _parse_rules(raw)


@lru_cache(maxsize=1)
def _default_rules() -> RuleTable:
    text = resources.files("alerts.rules").joinpath(DEFAULT_RULES_FILE).read_text("utf-8")
    return load_rules(text)


def _parse_rules(raw: dict[str, Any]) -> RuleTable:
    _keys(raw, "", {"version", "severity", "people", "facilities", "urgency", "certainty"})
    version = raw["version"]
    if not isinstance(version, str) or not version.strip():
        raise RuleTableError(f"priority rules, version: expected a non-empty string, got "
                             f"{version!r}")
    severity = _table(raw, "severity", {"level", "cap_severity"})
    people = _table(raw, "people", set(PEOPLE_FACTORS))
    facilities = _table(raw, "facilities", {*FACILITY_TYPES, "cut_off"})
    urgency = _table(raw, "urgency", {"immediate_within_h", "expected_within_h"})
    certainty = _table(raw, "certainty",
                       {"likely_from_share", "possible_from_share", "max_level"})
    immediate_h = _number(urgency, "urgency.immediate_within_h", low=0.0)
    expected_h = _number(urgency, "urgency.expected_within_h", low=0.0)
    if expected_h <= immediate_h:
        raise RuleTableError(
            f"priority rules, urgency.expected_within_h: must exceed immediate_within_h "
            f"({immediate_h:g}), got {expected_h:g}")
    possible = _number(certainty, "certainty.possible_from_share", low=0.0, high=1.0)
    likely = _number(certainty, "certainty.likely_from_share", low=0.0, high=1.0)
    if likely <= possible:
        raise RuleTableError(
            f"priority rules, certainty.likely_from_share: must exceed possible_from_share "
            f"({possible:g}), got {likely:g}")
    return RuleTable(
        version=version.strip(),
        severity_level=_levels(severity, "severity.level"),
        cap_severity=_thresholds(severity, "severity.cap_severity", _vocab(_SEVERITY_ORDER),
                                 _SEVERITY_ORDER.index),
        people=MappingProxyType({f: _levels(people, f"people.{f}") for f in PEOPLE_FACTORS}),
        facilities=MappingProxyType(
            {f: _levels(facilities, f"facilities.{f}") for f in FACILITY_TYPES}),
        facility_cut_off=_level(facilities["cut_off"], "facilities.cut_off"),
        immediate_within_h=immediate_h,
        expected_within_h=expected_h,
        likely_from_share=likely,
        possible_from_share=possible,
        max_level=_max_levels(certainty["max_level"]),
    )


def _keys(raw: Mapping[str, Any], where: str, expected: set[str]) -> None:
    prefix = f"{where}." if where else ""
    missing = [prefix + k for k in sorted(expected - set(raw))]
    unknown = [prefix + k for k in sorted(set(raw) - expected)]
    problems = []
    if missing:
        problems.append(f"missing key {', '.join(missing)} (every factor must be present)")
    if unknown:
        problems.append(f"unknown key {', '.join(unknown)} (expected {sorted(expected)})")
    if problems:
        raise RuleTableError("priority rules: " + "; ".join(problems))


def _table(raw: Mapping[str, Any], key: str, expected: set[str]) -> Mapping[str, Any]:
    value = raw[key]
    if not isinstance(value, dict):
        raise RuleTableError(f"priority rules, {key}: expected a table, got {value!r}")
    _keys(value, key, expected)
    return value


def _number(raw: Mapping[str, Any], key: str, *, low: float,
            high: float = math.inf) -> float:
    value = raw[key.rsplit(".", 1)[1]]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleTableError(f"priority rules, {key}: expected a finite number, got {value!r}")
    if not low <= value <= high:
        raise RuleTableError(f"priority rules, {key}: must be between {low:g} and {high:g}, "
                             f"got {value!r}")
    return float(value)


def _vocab(values: tuple[T, ...]) -> dict[str, T]:
    return {str(v): v for v in values}


def _level(value: Any, key: str) -> Level:
    known = [level.value for level in Level]
    if value not in known:
        raise RuleTableError(f"priority rules, {key}: unknown level {value!r}; expected one "
                             f"of {known}")
    return Level(value)


def _levels(raw: Mapping[str, Any], key: str) -> Thresholds:
    return _thresholds(raw, key, _vocab(tuple(Level)), lambda level: level.rank)


def _thresholds(
    raw: Mapping[str, Any], key: str, vocab: Mapping[str, T], rank: Callable[[T], int]
) -> tuple[tuple[float, T], ...]:
    pairs = raw[key.rsplit(".", 1)[1]]
    if not isinstance(pairs, list) or not pairs:
        raise RuleTableError(f"priority rules, {key}: expected a non-empty list of "
                             f"[threshold, level] pairs, got {pairs!r}")
    out: list[tuple[float, T]] = []
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool)
                or not isinstance(pair[0], int | float) or not math.isfinite(pair[0])):
            raise RuleTableError(f"priority rules, {key}: each entry must be [finite number, "
                                 f"name], got {pair!r}")
        if pair[1] not in vocab:
            raise RuleTableError(f"priority rules, {key}: unknown value {pair[1]!r}; expected "
                                 f"one of {list(vocab)}")
        out.append((float(pair[0]), vocab[pair[1]]))
    for (t0, v0), (t1, v1) in zip(out, out[1:], strict=False):
        if t1 <= t0:
            raise RuleTableError(f"priority rules, {key}: thresholds must be strictly "
                                 f"increasing, got {[t for t, _ in out]}")
        if rank(v1) <= rank(v0):
            raise RuleTableError(f"priority rules, {key}: levels must rise with the "
                                 f"thresholds, got {[str(v) for _, v in out]}")
    return tuple(out)


def _max_levels(raw: Any) -> Mapping[Certainty, Level]:
    if not isinstance(raw, dict):
        raise RuleTableError(f"priority rules, certainty.max_level: expected a table, got "
                             f"{raw!r}")
    known = [c.value for c in Certainty if c is not Certainty.UNKNOWN]
    out = {}
    for name, level in raw.items():
        if name not in known:
            raise RuleTableError(f"priority rules: unknown key certainty.max_level.{name}; "
                                 f"expected certainties {known}")
        out[Certainty(name)] = _level(level, f"certainty.max_level.{name}")
    return MappingProxyType(out)


# --- Deciding -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Finding:
    """One factor's verdict: its level, a reason, and its place in the importance order."""

    level: Level
    reason: str
    order: int


def prioritize(
    hazard: HazardSummary,
    exposure: ExposureSummary,
    *,
    now: datetime,
    rules: RuleTable | None = None,
) -> Priority:
    """Decide the level, CAP severity/urgency/certainty and the reasons of one alert.

    Args:
        hazard: what the hazard is (classes reached, nature, onset, ensemble share).
        exposure: who and what it reaches (whole event or one subscriber's area).
        now: the decision time (timezone-aware), for the urgency.
        rules: the rule table; ``None`` takes the shipped default.

    Returns:
        The priority. ``score`` is the level's rank (green 0 ... red 3) plus the breadth of
        the impact in ``[0, 1)`` (the mean factor rank), so sorting by score sorts by level
        first. Reasons: a certainty cap first (when it lowered the level), then every
        factor above green from the most severe level down (people before facilities
        before the hazard class within a level), then the certainty and the onset.

    Raises:
        AlertError: naive times, classes out of range, negative or NaN figures, or a
            facility whose class label is not among the exposure's classes.
    """
    rules = rules or load_rules()
    _check_inputs(hazard, exposure, now)
    share = hazard.max_class / hazard.n_classes
    findings = [
        *_people_findings(hazard, exposure, rules),
        *_facility_findings(hazard, exposure, rules),
        _severity_finding(hazard, share, rules),
    ]
    raised = max((f.level for f in findings), key=lambda lv: lv.rank, default=Level.GREEN)
    certainty, certainty_reason = _certainty(hazard, rules)
    level = raised
    cap = rules.max_level.get(certainty)
    reasons: list[str] = []
    if cap is not None and raised.rank > cap.rank:
        level = cap
        reasons.append(_cap_reason(cap, raised, certainty, hazard.exceedance_share))
    shown = [f for f in findings if f.level is not Level.GREEN]
    shown.sort(key=lambda f: (-f.level.rank, f.order))
    reasons += [f.reason for f in shown]
    if not any(f.order < _HAZARD_FINDING_ORDER for f in shown):
        reasons.append("Nobody and no facility counted in the hazard area")
    if cap is None or raised.rank <= cap.rank:
        reasons.append(certainty_reason)
    urgency, urgency_reason = _urgency(hazard, now, rules)
    if urgency_reason:
        reasons.append(urgency_reason)
    ranks = [f.level.rank for f in findings]
    breadth = sum(ranks) / (3 * len(ranks) + 1)
    return Priority(
        level=level,
        score=round(level.rank + breadth, 4),
        severity=_step(share, rules.cap_severity, Severity.MINOR),
        urgency=urgency,
        certainty=certainty,
        reasons=tuple(reasons),
        rules_version=rules.version,
    )


def _cap_reason(cap: Level, raised: Level, certainty: Certainty, share: float | None) -> str:
    spread = ("" if share is None
              else f" ({format_percent(share)} of ensemble members exceed the threshold)")
    return (f"Level capped at {cap.value}: the forecast is {certainty.value.lower()}{spread}; "
            f"the other factors alone give {raised.value}")


def _check_inputs(hazard: HazardSummary, exposure: ExposureSummary, now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise AlertError(f"now must be timezone-aware, got {now.isoformat()}")
    if hazard.onset is not None and hazard.onset.utcoffset() is None:
        raise AlertError(f"hazard onset must be timezone-aware, got {hazard.onset.isoformat()}"
                         f" (from {hazard.source})")
    if hazard.n_classes < 1 or not 0 <= hazard.max_class <= hazard.n_classes:
        raise AlertError(f"hazard from {hazard.source}: max_class {hazard.max_class} is not in"
                         f" 0..{hazard.n_classes} (n_classes must be at least 1)")
    for name in PEOPLE_FACTORS:
        value = getattr(exposure, name)
        if not math.isfinite(value) or value < 0:
            raise AlertError(f"exposure.{name} must be a finite count >= 0, got {value!r}")
    share = hazard.exceedance_share
    if share is not None and not 0.0 <= share <= 1.0:
        raise AlertError(f"exceedance_share must be between 0 and 1, got {share!r} "
                         f"(from {hazard.source})")


_NOUNS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "population": ("person", "people"),
    "disability": ("person with disabilities", "people with disabilities"),
    "older": ("older person", "older people"),
    "electricity_dependent": ("person who depends on electricity for care",
                              "people who depend on electricity for care"),
    "cut_off_population": ("person", "people"),
    "cut_off_disability": ("person with disabilities", "people with disabilities"),
})


def _people_findings(
    hazard: HazardSummary, exposure: ExposureSummary, rules: RuleTable
) -> list[_Finding]:
    out = []
    for order, name in enumerate(PEOPLE_FACTORS):
        value = float(getattr(exposure, name))
        count = format_count(value)
        noun = _NOUNS[name][0 if count in ("1", "fewer than 1") else 1]
        if name.startswith("cut_off_"):
            reason = f"{count} {noun} cut off from hospital care by the hazard"
        else:
            reason = f"{count} {noun} in the hazard area" + _top_clause(hazard, exposure, name)
        out.append(_Finding(level_for(value, rules.people[name]), reason, order))
    return out


def _top_clause(hazard: HazardSummary, exposure: ExposureSummary, name: str) -> str:
    """``", 1,200 of them in the most severe class ('...')"`` when by_class says so."""
    top = [c for c in exposure.by_class if c.k == hazard.max_class]
    if not top or hazard.max_class == 0:
        return ""
    in_top = float(getattr(top[0], name))
    total = float(getattr(exposure, name))
    which = ("the most severe class" if hazard.max_class == hazard.n_classes
             else "the highest class reached")
    if in_top <= 0:
        return ""
    if in_top >= total:
        return f", all in {which} ('{top[0].label}')"
    if format_count(in_top) == format_count(total):
        return f", nearly all in {which} ('{top[0].label}')"
    return f", {format_count(in_top)} of them in {which} ('{top[0].label}')"


def _facility_findings(
    hazard: HazardSummary, exposure: ExposureSummary, rules: RuleTable
) -> list[_Finding]:
    labels = {c.label: c.k for c in exposure.by_class}
    rated = []
    for hit in exposure.facilities_hit:
        share = _facility_class(hit, labels, hazard) / hazard.n_classes
        table = rules.facilities.get(hit.type)
        level = level_for(share, table) if table is not None else Level.GREEN
        if hit.cut_off and rules.facility_cut_off.rank > level.rank:
            level = rules.facility_cut_off
        where = "cut off" if hit.cut_off else f"in the '{hit.class_label}' class"
        rated.append((level, share, _facility_name(hit), where))
    rated.sort(key=lambda r: (-r[0].rank, -r[1], r[2]))
    shown = [r for r in rated if r[0] is not Level.GREEN]
    out = [_Finding(level, f"{name} {where}", len(PEOPLE_FACTORS) + i)
           for i, (level, _, name, where) in enumerate(shown[:MAX_FACILITY_REASONS])]
    rest = shown[MAX_FACILITY_REASONS:]
    if rest:
        out.append(_Finding(rest[0][0], f"{len(rest)} more facilities in the hazard area",
                            len(PEOPLE_FACTORS) + MAX_FACILITY_REASONS))
    return out


def _facility_class(hit: FacilityHit, labels: Mapping[str, int], hazard: HazardSummary) -> int:
    if hit.class_label in labels:
        return labels[hit.class_label]
    if hit.class_label == hazard.max_class_label:
        return hazard.max_class
    if hit.cut_off:
        return 0  # cut off from the roads while standing outside every class
    raise AlertError(f"facility {hit.name!r} is in class {hit.class_label!r}, which is not "
                     f"among the exposure's classes {sorted(labels)}")


def _facility_name(hit: FacilityHit) -> str:
    """``"St Mary hospital"``: the type is added unless the name already says it."""
    words = hit.type.replace("_", " ")
    return hit.name if words.lower() in hit.name.lower() else f"{hit.name} {words}"


def _severity_finding(hazard: HazardSummary, share: float, rules: RuleTable) -> _Finding:
    if hazard.max_class == 0:
        reason = "No cell of the hazard reaches its first severity class"
    else:
        top = ", the most severe" if hazard.max_class == hazard.n_classes else ""
        reason = (f"Highest class reached: '{hazard.max_class_label}' (class "
                  f"{hazard.max_class} of {hazard.n_classes}{top})")
    return _Finding(level_for(share, rules.severity_level), reason, _HAZARD_FINDING_ORDER)


def _certainty(hazard: HazardSummary, rules: RuleTable) -> tuple[Certainty, str]:
    if hazard.nature == "observed":
        return Certainty.OBSERVED, "Observed by the source, not forecast"
    share = hazard.exceedance_share
    if share is None:
        return Certainty.LIKELY, "Forecast without ensemble spread, taken as likely"
    if share >= rules.likely_from_share:
        certainty = Certainty.LIKELY
    elif share >= rules.possible_from_share:
        certainty = Certainty.POSSIBLE
    else:
        certainty = Certainty.UNLIKELY
    return certainty, (f"Forecast: {format_percent(share)} of ensemble members exceed the "
                       f"threshold ({certainty.value.lower()})")


def _urgency(hazard: HazardSummary, now: datetime, rules: RuleTable) -> tuple[Urgency, str]:
    if hazard.nature == "observed":
        return Urgency.IMMEDIATE, ""
    if hazard.onset is None:
        return Urgency.UNKNOWN, "Onset time unknown"
    lead = hazard.onset - now
    if lead < timedelta(0):
        return Urgency.PAST, f"Onset was {format_duration(-lead)} ago"
    if lead <= timedelta(hours=rules.immediate_within_h):
        urgency = Urgency.IMMEDIATE
    elif lead <= timedelta(hours=rules.expected_within_h):
        urgency = Urgency.EXPECTED
    else:
        urgency = Urgency.FUTURE
    return urgency, f"Onset in {format_duration(lead)}"


# --- Numbers for reading ------------------------------------------------------------------


def format_count(value: float) -> str:
    """A count rounded for reading: exact below 100, to tens below 1,000, else 2 figures.

    ``0.4`` gives ``"fewer than 1"``, ``87.5`` gives ``"88"``, ``987`` gives ``"990"``,
    ``3,120`` gives ``"3,100"``, ``12,345`` gives ``"12,000"``. Halves round up.
    """
    if value <= 0:
        return "0"
    if value < 1:
        return "fewer than 1"
    n = math.floor(value + 0.5)
    if n >= 100:
        digits = len(str(n)) - 2 if n >= 1000 else 1
        step = 10**digits
        n = (n + step // 2) // step * step
    return f"{n:,}"


def format_percent(share: float) -> str:
    """A share in 0..1 as a whole percentage (``0.695`` -> ``"70%"``; halves round up)."""
    return f"{math.floor(share * 100 + 0.5)}%"


def format_duration(span: timedelta) -> str:
    """A lead time in words: ``"less than an hour"``, ``"about 5 hours"``, ``"about 3 days"``."""
    hours = span.total_seconds() / 3600
    if hours < 1:
        return "less than an hour"
    if hours < 47.5:
        n = math.floor(hours + 0.5)
        return "about 1 hour" if n == 1 else f"about {n} hours"
    return f"about {math.floor(hours / 24 + 0.5)} days"
