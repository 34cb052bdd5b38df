"""Alert message text per language, with length variants per channel.

Text comes from TOML templates shipped in ``alerts/templates/`` (one file per language,
read with :mod:`importlib.resources`, never from a path), filled with ``str.format``. Every
message says its level in words ("Red alert", "Alerte rouge", "Warnstufe Rot"), never by a
colour code alone, and gives figures rounded for reading in the language's own number
style. The variants respect hard limits: the CAP headline at most 160 characters, the SMS
one GSM-7 segment where the language allows (UCS-2 otherwise), mobile alerts 90 and 360
characters; the full text (email, web) has every figure and reason. The rules are written
down in docs/message-text.md.

Pure: the time zone and all times are passed in; nothing reads the clock.

Number, label and time style per language (:class:`Phrasebook`) live in
:mod:`alerts.text_locale` (re-exported here).
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from alerts.model import ExposureSummary, HazardSummary, Level, MsgType, Priority
from alerts.sms import MessageTextError, fit_chars, fit_sms, gsm7_punctuation, sms_segments
from alerts.text_locale import Phrasebook, _check_figure, _zone
from alerts.text_locale import round_for_reading as round_for_reading  # re-exported

DEFAULT_LANGUAGE = "en"
HEADLINE_MAX_CHARS = 160  # CAP headline: "less than 160 characters" advised by the spec
SHORT_90_MAX_CHARS = 90  # WEA / cell-broadcast short message
SHORT_360_MAX_CHARS = 360  # WEA 360-character message
DESCRIPTION_MAX_FACILITIES = 5  # the full text lists them all
_TEMPLATE_PACKAGE = "alerts.templates"
_MSG_KEYS = {MsgType.ALERT: "alert", MsgType.UPDATE: "update", MsgType.CANCEL: "cancel"}


@dataclass(frozen=True, slots=True)
class MessageText:
    """The text of one alert in one language, in every length a channel needs.

    Attributes:
        language: the language used (``"en"`` when the one asked for is not shipped).
        requested_language: the language asked for, as given.
        kind: the template section used: the hazard kind, or ``"generic"``.
        msg_type: Alert, Update or Cancel.
        level_text: the level in words (``"Red alert"``); present in headline, sms, short_90.
        event: the event in a few words (CAP ``event``).
        headline: CAP ``headline``, at most 160 characters.
        description: CAP ``description``: the hazard, the people and places affected.
        instruction: CAP ``instruction``: what to do, for this hazard kind and level.
        sms: one SMS (``sms_segments`` parts at most as asked), typographic punctuation
            replaced so that GSM-7 is used whenever the letters allow.
        sms_encoding: ``"GSM-7"`` or ``"UCS-2"``.
        sms_segments: the SMS parts ``sms`` takes.
        short_90: at most 90 characters (cell broadcast / WEA short).
        short_360: at most 360 characters (WEA long).
        full: email and web: headline, description, all figures, reasons, instruction.
    """

    language: str
    requested_language: str
    kind: str
    msg_type: MsgType
    level_text: str
    event: str
    headline: str
    description: str
    instruction: str
    sms: str
    sms_encoding: str
    sms_segments: int
    short_90: str
    short_360: str
    full: str

    @property
    def fell_back(self) -> bool:
        """True when the requested language is not shipped and English was used."""
        return _base_language(self.requested_language) != self.language


# --- templates ---------------------------------------------------------------------------

_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "meta": ("language", "thousands_separator", "decimal_separator", "unit_space",
             "percent_suffix", "months", "months_short", "datetime", "datetime_short",
             "list_and"),
    "numbers": ("fewer_than", "about", "area", "area_less_than", "percent"),
    "levels": tuple(level.value for level in Level),
    "labels": ("range", "at_least"),
    "units": (),
    "facility_types": ("hospital", "care_home", "shelter", "school"),
    "phrases": ("onset", "people_affected", "no_one_affected", "exposed", "no_one_exposed",
                "groups", "group_disability", "group_older", "group_electricity_dependent",
                "cut_off", "cut_off_disability", "facilities", "facilities_more",
                "facility_in_class", "facility_cut_off", "ensemble", "no_class", "update",
                "cancelled", "valid_until", "until_short", "level_scale", "heading_by_class",
                "by_class_line", "heading_reasons", "reasons_note", "heading_instruction"),
}
_VARIANTS = ("sms", "short_90", "short_360")
_INSTRUCTION_KEYS = (*(level.value for level in Level), "cancel")


def available_languages() -> tuple[str, ...]:
    """Languages with a template file shipped in ``alerts/templates/``, sorted."""
    return _available_languages()


@functools.cache
def _available_languages() -> tuple[str, ...]:
    names = (entry.name for entry in resources.files(_TEMPLATE_PACKAGE).iterdir())
    return tuple(sorted(n.removesuffix(".toml") for n in names if n.endswith(".toml")))


@functools.cache
def _templates(language: str) -> Mapping[str, Any]:
    """Load and check one language's templates (cached: package data does not change)."""
    text = (resources.files(_TEMPLATE_PACKAGE) / f"{language}.toml").read_text("utf-8")
    return parse_templates(text, where=f"alerts/templates/{language}.toml")


def parse_templates(text: str, *, where: str = "templates") -> Mapping[str, Any]:
    """Parse one language's TOML templates and check that every required key is there.

    Meant for the loader and for anyone writing a new language file.

    Args:
        text: the TOML text.
        where: the file's name, for messages.

    Returns:
        The templates as nested mappings.

    Raises:
        MessageTextError: the TOML is invalid or a required section or key is missing.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MessageTextError(f"{where}: not valid TOML: {exc}") from exc
    for section, keys in _REQUIRED.items():
        missing = [k for k in keys if k not in data.get(section, {})]
        if section not in data or missing:
            raise MessageTextError(f"{where}: [{section}] lacks {missing or 'the section'}")
    alert = data.get("messages", {}).get("alert", {})
    missing = [k for k in ("title", *_VARIANTS) if k not in alert]
    if missing:
        raise MessageTextError(f"{where}: [messages.alert] lacks {missing}")
    for msg in ("update", "cancel"):
        if "title" not in data["messages"].get(msg, {}):
            raise MessageTextError(f"{where}: [messages.{msg}] lacks 'title'")
    generic = data.get("kinds", {}).get("generic", {})
    lacking = [k for k in ("event", "observed", "forecast") if k not in generic]
    lacking += [f"instruction.{k}" for k in _INSTRUCTION_KEYS
                if k not in generic.get("instruction", {})]
    if lacking:
        raise MessageTextError(f"{where}: [kinds.generic] lacks {lacking}")
    for name in ("months", "months_short"):
        if len(data["meta"][name]) != 12:
            raise MessageTextError(f"{where}: meta.{name} must list 12 months")
    return data


def _base_language(language: str) -> str:
    """``"fr-CA"`` / ``"FR_ch"`` -> ``"fr"``."""
    return language.strip().replace("_", "-").split("-")[0].lower()


def phrasebook(language: str) -> Phrasebook:
    """The :class:`Phrasebook` of a language (``"fr-CA"`` -> French; unknown -> English)."""
    base = _base_language(language)
    code = base if base in available_languages() else DEFAULT_LANGUAGE
    return Phrasebook(code, _templates(code))


# --- rendering -------------------------------------------------------------------------------


def render_text(
    hazard: HazardSummary,
    exposure: ExposureSummary,
    priority: Priority,
    *,
    language: str,
    area_name: str,
    msg_type: MsgType,
    expires: datetime,
    tz: str = "UTC",
    sms_max_segments: int = 1,
) -> MessageText:
    """Write one alert's text in one language, in every length variant.

    Args:
        hazard: what the hazard is (kind, observed or forecast, top class reached).
        exposure: the people and places affected (in the subscriber's area or in total).
        priority: the level, in words in the text, and the reasons for it.
        language: language code (``"fr"``, ``"de-CH"``); one not shipped falls back to
            English, recorded in :attr:`MessageText.language`.
        area_name: the area in words (``areaDesc``).
        msg_type: Alert, Update or Cancel (a Cancel says the danger is over).
        expires: when the message expires (timezone-aware).
        tz: IANA time zone in which times are written.
        sms_max_segments: SMS parts the ``sms`` variant may take.

    Returns:
        The :class:`MessageText`.

    Raises:
        MessageTextError: a figure is negative or not finite, a time is naive, the time
            zone is unknown, the area name is blank, the msg_type has no text (Ack, Error),
            the nature is neither observed nor forecast, or a template is broken.
    """
    area = " ".join(area_name.split())
    if not area:
        raise MessageTextError("area_name is blank; an alert must say where")
    if msg_type not in _MSG_KEYS:
        raise MessageTextError(f"no alert text for msgType {msg_type.value}; "
                               f"expected {', '.join(m.value for m in _MSG_KEYS)}")
    if hazard.nature not in ("observed", "forecast"):
        raise MessageTextError(
            f"hazard nature {hazard.nature!r} is neither 'observed' nor 'forecast'")
    _check_exposure(exposure, hazard)
    for name, when in (("expires", expires), ("hazard.onset", hazard.onset)):
        if when is not None and when.utcoffset() is None:
            raise MessageTextError(f"{name} {when.isoformat()} has no time zone")
    lang = phrasebook(language)
    kind = hazard.kind if hazard.kind in lang.t["kinds"] else "generic"
    fields = _fields(lang, hazard, exposure, priority, kind, area, msg_type, expires, _zone(tz))
    msg_key = _MSG_KEYS[msg_type]
    variants = {v: [lang.fmt(t, f"messages.{msg_key}.{v}", **fields)
                    for t in lang.message(msg_key, v)] for v in _VARIANTS}
    sms = _pick_sms(variants["sms"], sms_max_segments)
    encoding = sms_segments(sms)
    description = _description(lang, hazard, exposure, msg_type, fields, all_facilities=False)
    return MessageText(
        language=lang.code, requested_language=language, kind=kind, msg_type=msg_type,
        level_text=fields["level"], event=fields["event"],
        headline=fit_chars(fields["title"], HEADLINE_MAX_CHARS),
        description=description, instruction=fields["instruction"],
        sms=sms, sms_encoding=encoding.encoding, sms_segments=encoding.segments,
        short_90=_pick_chars(variants["short_90"], SHORT_90_MAX_CHARS),
        short_360=_pick_chars(variants["short_360"], SHORT_360_MAX_CHARS),
        full=_full(lang, hazard, exposure, priority, msg_type, fields),
    )


def _check_exposure(exposure: ExposureSummary, hazard: HazardSummary) -> None:
    for name in ("population", "disability", "older", "electricity_dependent",
                 "cut_off_population", "cut_off_disability", "area_km2"):
        _check_figure(f"exposure.{name}", getattr(exposure, name))
    for row in exposure.by_class:
        for name in ("population", "area_km2"):
            _check_figure(f"exposure.by_class[{row.k}].{name}", getattr(row, name))
    share = hazard.exceedance_share
    if share is not None and not (isinstance(share, numbers.Real) and 0 <= share <= 1):
        raise MessageTextError(f"hazard.exceedance_share must be in 0..1, got {share!r}")


def _fields(
    lang: Phrasebook, hazard: HazardSummary, exposure: ExposureSummary, priority: Priority,
    kind: str, area: str, msg_type: MsgType, expires: datetime, zone: ZoneInfo,
) -> dict[str, str]:
    """Everything the message templates may name."""
    instruction = lang.instruction(
        kind, "cancel" if msg_type is MsgType.CANCEL else priority.level.value)
    fields = {
        "level": lang.t["levels"][priority.level.value],
        "event": lang.kind_value(kind, "event"),
        "area": area,
        "instruction": instruction,
        "instruction_short": _first_sentence(instruction),
        "hazard": _hazard_sentence(lang, hazard, kind, zone),
        "people_affected": _capitalised(
            lang.phrase("people_affected", people=lang.count(exposure.population))
            if exposure.population >= 0.5 else lang.phrase("no_one_affected")),
        "cancelled": lang.phrase("cancelled"),
        "until": lang.phrase("valid_until", time=lang.time(expires, zone, short=False)),
        "until_short": lang.phrase("until_short",
                                   time=lang.time(expires, zone, short=True)),
    }
    fields["title"] = lang.fmt(lang.message(_MSG_KEYS[msg_type], "title"),
                               f"messages.{_MSG_KEYS[msg_type]}.title", **fields)
    return fields


def _hazard_sentence(lang: Phrasebook, hazard: HazardSummary, kind: str, zone: ZoneInfo) -> str:
    if hazard.max_class <= 0:
        sentence = lang.phrase("no_class")
    else:
        onset = ""
        if hazard.nature == "forecast" and hazard.onset is not None:
            onset = lang.phrase("onset", time=lang.time(hazard.onset, zone, short=False))
        sentence = lang.fmt(lang.kind_value(kind, hazard.nature), f"kinds.{kind}.{hazard.nature}",
                            max_class=lang.class_label(hazard.max_class_label), onset=onset)
    if hazard.exceedance_share is not None:
        share = lang.fmt(lang.t["numbers"]["percent"], "numbers.percent",
                         value=math.floor(100 * hazard.exceedance_share + 0.5))
        sentence += " " + _capitalised(lang.phrase("ensemble", share=share))
    return sentence


def _description(
    lang: Phrasebook, hazard: HazardSummary, exposure: ExposureSummary, msg_type: MsgType,
    fields: Mapping[str, str], *, all_facilities: bool,
) -> str:
    """CAP description: the hazard, then the people and places affected."""
    if msg_type is MsgType.CANCEL:
        return fields["cancelled"]
    parts = [fields["hazard"]]
    if msg_type is MsgType.UPDATE:
        parts.append(lang.phrase("update"))
    area = lang.area(exposure.area_km2)
    if exposure.population >= 0.5:
        parts.append(_capitalised(lang.phrase(
            "exposed", people=lang.count(exposure.population), area=area)))
    else:
        parts.append(lang.phrase("no_one_exposed", area=area))
    groups = [lang.phrase(f"group_{name}", n=lang.count(value))
              for name, value in (("disability", exposure.disability), ("older", exposure.older),
                                  ("electricity_dependent", exposure.electricity_dependent))
              if value >= 0.5]
    if groups:
        parts.append(lang.phrase("groups", list=lang.join(groups)))
    parts.extend(_cut_off_sentence(lang, exposure))
    parts.extend(_facilities_sentence(lang, exposure, all_facilities))
    return " ".join(parts)


def _cut_off_sentence(lang: Phrasebook, exposure: ExposureSummary) -> list[str]:
    if exposure.cut_off_population < 0.5:
        return []
    people = lang.count(exposure.cut_off_population)
    if exposure.cut_off_disability >= 0.5:
        return [_capitalised(lang.phrase(
            "cut_off_disability", people=people,
            disability=lang.count(exposure.cut_off_disability)))]
    return [_capitalised(lang.phrase("cut_off", people=people))]


def _facilities_sentence(lang: Phrasebook, exposure: ExposureSummary, all_of_them: bool,
                         ) -> list[str]:
    hits = exposure.facilities_hit
    if not hits:
        return []
    shown = hits if all_of_them else hits[:DESCRIPTION_MAX_FACILITIES]
    items = [
        lang.phrase("facility_cut_off" if hit.cut_off else "facility_in_class", name=hit.name,
                    type=lang.t["facility_types"].get(hit.type, hit.type),
                    label=lang.class_label(hit.class_label))
        for hit in shown
    ]
    if len(shown) < len(hits):
        items.append(lang.phrase("facilities_more", n=lang.number(len(hits) - len(shown))))
    return [lang.phrase("facilities", list=lang.join(items))]


def _full(
    lang: Phrasebook, hazard: HazardSummary, exposure: ExposureSummary, priority: Priority,
    msg_type: MsgType, fields: Mapping[str, str],
) -> str:
    """Email / web text: every figure and reason, in paragraphs."""
    phrases = lang.t["phrases"]
    sections = [fields["title"],
                _description(lang, hazard, exposure, msg_type, fields, all_facilities=True)]
    if msg_type is not MsgType.CANCEL:
        if exposure.by_class:
            lines = [lang.phrase("by_class_line", label=lang.class_label(row.label),
                                 people=lang.count(row.population),
                                 area=lang.area(row.area_km2))
                     for row in sorted(exposure.by_class, key=lambda r: -r.k)]
            sections.append("\n".join([phrases["heading_by_class"]] + [f"- {x}" for x in lines]))
        if priority.reasons:
            note = phrases["reasons_note"]
            heading = f"{phrases['heading_reasons']} {note}".strip()
            sections.append("\n".join([heading] + [f"- {r}" for r in priority.reasons]))
    sections.append(f"{phrases['heading_instruction']}\n{fields['instruction']}")
    scale = ", ".join(lang.t["levels"][level.value] for level in Level)
    sections.append(lang.phrase("level_scale", scale=scale, level=fields["level"]))
    sections.append(fields["until"])
    return "\n\n".join(sections)


def _pick_sms(candidates: Sequence[str], max_segments: int) -> str:
    """The richest candidate that fits the SMS budget, else the leanest one shortened."""
    texts = [_tidy(gsm7_punctuation(c)) for c in candidates]
    for text in texts:
        if sms_segments(text).segments <= max_segments:
            return text
    return fit_sms(texts[-1], max_segments)


def _pick_chars(candidates: Sequence[str], max_chars: int) -> str:
    """The richest candidate within ``max_chars``, else the leanest one shortened."""
    texts = [_tidy(c) for c in candidates]
    for text in texts:
        if len(text) <= max_chars:
            return text
    return fit_chars(texts[-1], max_chars)


def _tidy(text: str) -> str:
    """One line, single spaces, no doubled full stop after a name ending in one."""
    text = " ".join(text.split())
    return re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)


def _first_sentence(text: str) -> str:
    match = re.search(r"[.!?](\s|$)", text)
    return text[: match.start() + 1] if match else text


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
