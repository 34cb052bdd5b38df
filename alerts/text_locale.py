"""One language's style: numbers, class labels and times as the alert text writes them.

:class:`Phrasebook` holds one language's parsed templates (``alerts/templates/<lang>.toml``)
and fills them, writing counts rounded for reading (:func:`round_for_reading`) with the
language's thousands separator, areas, :mod:`geo.classes` labels with its decimal
separator and unit spacing, and local dates and times with the zone's abbreviation.
Loading and checking the template files, and rendering whole messages, stay in
:mod:`alerts.text`; this part lives apart to keep that module small, and
:mod:`alerts.text` re-exports :class:`Phrasebook` and :func:`round_for_reading`.

Pure: the time zone and all times are passed in; nothing reads the clock.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.sms import MessageTextError

_NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
# A unit is "%" or one word, optionally with a second word carrying an exponent ("m s-1").
_UNIT = r"(%|\s(?!to\s)\S+(?:\s\S*\d)?)?"
_RANGE_LABEL = re.compile(rf"^({_NUMBER}) to ({_NUMBER}){_UNIT}$")
_AT_LEAST_LABEL = re.compile(rf"^({_NUMBER}){_UNIT} and above$")


class Phrasebook:
    """One language's templates, with the number, label and time style of that language.

    Made by :func:`alerts.text.phrasebook`, which loads and checks the templates.

    Attributes:
        code: the language code of the template file (``"fr"``).
        t: the parsed templates.
    """

    def __init__(self, language: str, templates: Mapping[str, Any]) -> None:
        self.code = language
        self.t = templates

    def fmt(self, template: str, where: str, **fields: Any) -> str:
        """Fill a template, turning a wrong field name into an error naming file and key."""
        try:
            return template.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise MessageTextError(
                f"alerts/templates/{self.code}.toml: template {where} ({template!r}) "
                f"cannot be filled: {type(exc).__name__} {exc}"
            ) from exc

    def phrase(self, key: str, **fields: Any) -> str:
        """A ``[phrases]`` entry filled with ``fields``."""
        return self.fmt(self.t["phrases"][key], f"phrases.{key}", **fields)

    def kind_value(self, kind: str, key: str) -> str:
        """A value of ``[kinds.<kind>]``, falling back to ``[kinds.generic]``."""
        section = self.t["kinds"].get(kind, {})
        return section[key] if key in section else self.t["kinds"]["generic"][key]

    def instruction(self, kind: str, key: str) -> str:
        """Instruction for a level (or ``cancel``), falling back to the generic one."""
        section = self.t["kinds"].get(kind, {}).get("instruction", {})
        return section.get(key) or self.t["kinds"]["generic"]["instruction"][key]

    def message(self, msg_key: str, key: str) -> Any:
        """A ``[messages.<type>]`` entry; Update and Cancel inherit what they omit."""
        messages = self.t["messages"]
        return messages[msg_key].get(key, messages["alert"][key])

    def number(self, n: int) -> str:
        """An integer with the language's thousands separator."""
        return f"{n:,}".replace(",", self.t["meta"]["thousands_separator"])

    def join(self, items: Sequence[str]) -> str:
        """``a, b and c`` in the language."""
        if len(items) <= 1:
            return "".join(items)
        return f"{', '.join(items[:-1])} {self.t['meta']['list_and']} {items[-1]}"

    def count(self, value: float) -> str:
        """A count rounded by :func:`round_for_reading`: "about 3,100", "etwa 3.100"."""
        qualifier, rounded = round_for_reading(value)
        return self.fmt(self.t["numbers"][qualifier], f"numbers.{qualifier}",
                        value=self.number(rounded))

    def area(self, area_km2: float) -> str:
        """An area for reading: "less than 1 km²", whole km² under 100, then count bands."""
        _check_figure("area_km2", area_km2)
        numbers = self.t["numbers"]
        if area_km2 < 1:
            return self.fmt(numbers["area_less_than"], "numbers.area_less_than", value=1)
        if area_km2 < 100:
            # Whole km² up to 100: "about 10 km²" for 14.7 km² would understate by a third.
            value = self.fmt(numbers["about"], "numbers.about", value=math.floor(area_km2 + 0.5))
        else:
            value = self.count(area_km2)
        return self.fmt(numbers["area"], "numbers.area", value=value)

    def class_label(self, label: str) -> str:
        """A :mod:`geo.classes` label in the language: "0.5 to 1.5 m" -> "0,5 à 1,5 m".

        Other labels (Roman MMI numerals, custom ones) are kept as they are.
        """
        decimal = self.t["meta"]["decimal_separator"]
        if match := _RANGE_LABEL.match(label):
            lo, hi, unit = match.groups()
            return self.fmt(self.t["labels"]["range"], "labels.range", unit=self._unit(unit),
                            lo=lo.replace(".", decimal), hi=hi.replace(".", decimal))
        if match := _AT_LEAST_LABEL.match(label):
            lo, unit = match.groups()
            return self.fmt(self.t["labels"]["at_least"], "labels.at_least",
                            lo=lo.replace(".", decimal), unit=self._unit(unit))
        return label

    def _unit(self, suffix: str | None) -> str:
        unit = (suffix or "").strip()
        if not unit:
            return ""
        if unit == "%":
            return str(self.t["meta"]["percent_suffix"])
        return self.t["meta"]["unit_space"] + self.t["units"].get(unit, unit)

    def time(self, when: datetime, zone: ZoneInfo, *, short: bool = False) -> str:
        """A local date and time with the zone's abbreviation ("13 May 2026 at 08:00 CEST")."""
        local = when.astimezone(zone)
        meta = self.t["meta"]
        key = "datetime_short" if short else "datetime"
        return self.fmt(
            meta[key], f"meta.{key}", day=local.day, month=meta["months"][local.month - 1],
            month_short=meta["months_short"][local.month - 1], month_num=local.month,
            year=local.year, time=f"{local.hour:02d}:{local.minute:02d}",
            tz=local.tzname() or "",
        )


def round_for_reading(value: float) -> tuple[Literal["fewer_than", "about"], int]:
    """Round a count the way the text says it.

    Under 10 -> ("fewer_than", 10); 10 to 999 -> nearest 10; 1,000 to 9,999 -> nearest
    100; 10,000 and above -> nearest 1,000. The band is chosen from the unrounded value and
    halves round up (15 -> 20), so 995 reads "about 1,000".

    Args:
        value: a non-negative finite count (people are fractional in rasters).

    Returns:
        ``(qualifier, rounded)``.

    Raises:
        MessageTextError: the value is negative, NaN or infinite.
    """
    _check_figure("value", value)
    if value < 10:
        return "fewer_than", 10
    step = 10 if value < 1_000 else 100 if value < 10_000 else 1_000
    return "about", int(math.floor(value / step + 0.5)) * step


def _check_figure(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise MessageTextError(f"{name} must be a non-negative finite number, got {value!r}")


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise MessageTextError(f"tz {tz!r} is not a known IANA time zone") from exc
