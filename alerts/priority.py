"""Explainable priority: a level in words, the CAP triple, and the reasons why.

The rules are data: a versioned TOML table shipped in ``alerts/rules/`` (documented in
``docs/priority-rules.md``). Each factor (the hazard's severity class, people exposed,
people with disabilities, older and electricity-dependent people, people cut off from care,
facilities hit) maps its value to a level through a threshold table, in the manner of
USGS PAGER's ``[(1, 'yellow'), (1000, 'orange'), (10000, 'red')]``. The alert level is the
most severe factor level, then capped by the certainty (an unlikely forecast cannot raise
a red alert). Every factor that raised the level gives a plain-English reason, most
important first. Time is passed in (``now=``); nothing here reads the clock.

The table's loading and validation live in :mod:`alerts.priority_rules` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TypeVar

from alerts.errors import AlertError
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
from alerts.priority_rules import DEFAULT_RULES_FILE as DEFAULT_RULES_FILE  # re-exported
from alerts.priority_rules import FACILITY_TYPES as FACILITY_TYPES  # re-exported
from alerts.priority_rules import PEOPLE_FACTORS, RuleTable, Thresholds, load_rules
from geo.privacy import is_small_count

MAX_FACILITY_REASONS = 5
"""Facilities named one by one in the reasons; the rest are counted in one sentence."""

# Importance order within a level: people factors (0..5), facilities (6..), the hazard class.
_HAZARD_FINDING_ORDER = 100

T = TypeVar("T")


def level_for(value: float, table: Thresholds) -> Level:
    """The level of ``value``: that of the highest threshold at or below it, else green."""
    return _step(value, table, Level.GREEN)


def _step(value: float, table: tuple[tuple[float, T], ...], below: T) -> T:
    out = below
    for threshold, result in table:
        if value >= threshold:
            out = result
    return out

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
    private_groups: Collection[str] = (),
    min_public_count: int = 5,
) -> Priority:
    """Decide the level, CAP severity/urgency/certainty and the reasons of one alert.

    The level uses the exact figures; the reasons, which are published, write counts of
    ``private_groups`` (groups known from individual registries) between 1 and
    ``min_public_count - 1`` as "fewer than N", so no small group can be singled out.

    Args:
        hazard: what the hazard is (classes reached, nature, onset, ensemble share).
        exposure: who and what it reaches (whole event or one subscriber's area).
        now: the decision time (timezone-aware), for the urgency.
        rules: the rule table; ``None`` takes the shipped default.
        private_groups: groups known from individual registries (their small counts are
            hidden in the reasons).
        min_public_count: counts of those groups below this are hidden.

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
        *_people_findings(hazard, exposure, rules, private_groups, min_public_count),
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


def _public_count(value: float, private: bool, min_public_count: int) -> str:
    """A count for a published reason; small counts of a registry group are hidden."""
    if private and is_small_count(value, min_public_count):
        return f"fewer than {min_public_count}"
    return format_count(value)


def _people_findings(
    hazard: HazardSummary,
    exposure: ExposureSummary,
    rules: RuleTable,
    private_groups: Collection[str] = (),
    min_public_count: int = 5,
) -> list[_Finding]:
    out = []
    for order, name in enumerate(PEOPLE_FACTORS):
        value = float(getattr(exposure, name))
        private = name in private_groups or (
            name == "cut_off_disability" and "disability" in private_groups)
        count = _public_count(value, private, min_public_count)
        noun = _NOUNS[name][0 if count in ("1", "fewer than 1") else 1]
        if name.startswith("cut_off_"):
            reason = f"{count} {noun} cut off from hospital care by the hazard"
        else:
            reason = f"{count} {noun} in the hazard area" + _top_clause(
                hazard, exposure, name, private, min_public_count)
        out.append(_Finding(level_for(value, rules.people[name]), reason, order))
    return out


def _top_clause(hazard: HazardSummary, exposure: ExposureSummary, name: str,
                private: bool = False, min_public_count: int = 5) -> str:
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
    part = _public_count(in_top, private, min_public_count)
    return f", {part} of them in {which} ('{top[0].label}')"


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
