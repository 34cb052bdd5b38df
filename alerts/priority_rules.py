"""Loading and validating the priority rule table (the data behind :mod:`alerts.priority`).

The rules are a versioned TOML table shipped in ``alerts/rules/`` (documented in
``docs/priority-rules.md``). :func:`load_rules` parses one and refuses, naming the key, a
missing or unknown key, an unknown level, severity or certainty, and thresholds or levels
that do not strictly increase; the result is a frozen :class:`RuleTable`. This lives apart
from the decision itself to keep :mod:`alerts.priority` small; that module re-exports the
names callers import from it (``load_rules``, ``RuleTable``, ``PEOPLE_FACTORS``...).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, TypeVar

from alerts.errors import RuleTableError
from alerts.model import Certainty, Level, Severity

DEFAULT_RULES_FILE = "priority-v1.toml"
"""The rule table used when the caller gives none (package data of ``alerts.rules``)."""

PEOPLE_FACTORS: tuple[str, ...] = (
    "population", "disability", "older", "electricity_dependent",
    "cut_off_population", "cut_off_disability",
)
"""People factors, most important first: attribute names of :class:`ExposureSummary`."""

FACILITY_TYPES: tuple[str, ...] = ("hospital", "care_home", "shelter", "school")
"""Facility types the table must rate (the values of :class:`geo.types.FacilityType`)."""

_SEVERITY_ORDER = (Severity.MINOR, Severity.MODERATE, Severity.SEVERE, Severity.EXTREME)

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
