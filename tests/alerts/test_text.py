"""Alert text: every template in every language, length limits, rounding, levels in words."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

import alerts.text as text_module
from alerts.model import (
    Certainty,
    ClassExposure,
    ExposureSummary,
    FacilityHit,
    HazardSummary,
    Level,
    MsgType,
    Priority,
    Severity,
    Urgency,
)
from alerts.sms import is_gsm7, sms_segments
from alerts.text import (
    MessageTextError,
    available_languages,
    parse_templates,
    phrasebook,
    render_text,
    round_for_reading,
)

LANGUAGES = ("en", "fr", "de")
MSG_TYPES = (MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL)
# One realistic top-class label per kind, as geo.classes writes them; "heat" has no
# template of its own and must use the generic one.
KIND_LABELS = {
    "flood_depth": "1.5 m and above",
    "rainfall": "100 to 200 mm",
    "wind_gust": "25 to 33 m s-1",
    "shaking_mmi": "VIII",
    "probability": "50% and above",
    "heat": "313 K and above",
}
EXPIRES = datetime(2026, 5, 13, 6, 0, tzinfo=UTC)
LEVEL_WORDS = {
    "en": {Level.GREEN: "Green alert", Level.YELLOW: "Yellow alert",
           Level.ORANGE: "Orange alert", Level.RED: "Red alert"},
    "fr": {Level.GREEN: "Alerte verte", Level.YELLOW: "Alerte jaune",
           Level.ORANGE: "Alerte orange", Level.RED: "Alerte rouge"},
    "de": {Level.GREEN: "Warnstufe Grün", Level.YELLOW: "Warnstufe Gelb",
           Level.ORANGE: "Warnstufe Orange", Level.RED: "Warnstufe Rot"},
}


def _hazard(kind: str = "flood_depth", **changes: Any) -> HazardSummary:
    base = HazardSummary(
        kind=kind, nature="forecast", units="", n_classes=3, max_class=3,
        max_class_label=KIND_LABELS.get(kind, "1.5 m and above"),
        issued_at=datetime(2026, 5, 12, 6, tzinfo=UTC),
        onset=datetime(2026, 5, 12, 18, tzinfo=UTC), exceedance_share=None,
        source="sample.tif", checksum="sha256:00",
    )
    return replace(base, **changes)


def _exposure(**changes: Any) -> ExposureSummary:
    base = ExposureSummary(
        population=3_123.4, disability=312.2, older=604.0, electricity_dependent=21.0,
        cut_off_population=412.0, cut_off_disability=48.0, area_km2=12.4,
        facilities_hit=(FacilityHit("St Mary", "hospital", "1.5 m and above", cut_off=True),
                        FacilityHit("Oak House", "care_home", "0.5 to 1.5 m")),
        by_class=(ClassExposure(1, "0.15 to 0.5 m", 1_000.0, area_km2=6.0),
                  ClassExposure(3, "1.5 m and above", 1_500.4, area_km2=2.3)),
    )
    return replace(base, **changes)


def _priority(level: Level = Level.RED, reasons: tuple[str, ...] = ()) -> Priority:
    return Priority(level, 90.0, Severity.EXTREME, Urgency.EXPECTED, Certainty.LIKELY,
                    reasons or ("3,100 people in the most severe class",
                                "St Mary hospital cut off"), "1")


def _render(language: str = "en", msg_type: MsgType = MsgType.ALERT, **kw: Any):
    return render_text(
        kw.pop("hazard", _hazard()), kw.pop("exposure", _exposure()),
        kw.pop("priority", _priority()), language=language,
        area_name=kw.pop("area_name", "Riverside"), msg_type=msg_type,
        expires=kw.pop("expires", EXPIRES), **kw,
    )


def _template_file(language: str) -> dict[str, Any]:
    raw = (resources.files("alerts.templates") / f"{language}.toml").read_text("utf-8")
    return tomllib.loads(raw)


def test_english_french_and_german_are_shipped() -> None:
    assert set(LANGUAGES) <= set(available_languages())


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_defines_the_same_keys_as_english(language: str) -> None:
    # A key missing in one language would silently fall back to the generic template.
    def keys(node: Any, prefix: str = "") -> set[str]:
        if not isinstance(node, dict):
            return {prefix}
        return {k for name, sub in node.items() for k in keys(sub, f"{prefix}.{name}")}

    assert keys(_template_file(language)) == keys(_template_file("en"))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("msg_type", MSG_TYPES, ids=lambda m: m.value)
@pytest.mark.parametrize("kind", sorted(KIND_LABELS))
@pytest.mark.parametrize("level", list(Level), ids=lambda x: x.value)
def test_every_template_renders_for_every_kind_message_type_level_and_language(
    language: str, msg_type: MsgType, kind: str, level: Level
) -> None:
    result = _render(language, msg_type, hazard=_hazard(kind), priority=_priority(level))
    variants = {name: getattr(result, name) for name in
                ("headline", "description", "instruction", "sms", "short_90", "short_360",
                 "full")}
    for name, value in variants.items():
        assert value.strip(), name
        assert not re.search(r"[{}]", value), f"{name} has a leftover field: {value}"
        assert all("  " not in line and line == line.strip() for line in value.splitlines())
    assert result.language == language
    assert result.kind == (kind if kind != "heat" else "generic")
    assert len(result.headline) <= 160
    assert len(result.short_90) <= 90
    assert len(result.short_360) <= 360
    assert result.sms_segments == sms_segments(result.sms).segments == 1
    assert result.sms_encoding == "GSM-7"  # a plain area name: every language allows it
    level_text = LEVEL_WORDS[language][level]
    assert result.level_text == level_text
    for name in ("headline", "sms", "short_90", "short_360", "full"):
        assert level_text in variants[name], name


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_level_is_always_a_word_and_a_colour_never_alone(language: str) -> None:
    words = {"en": "alert", "fr": "Alerte", "de": "Warnstufe"}[language]
    for level in Level:
        level_text = _render(language, priority=_priority(level)).level_text
        assert words.lower() in level_text.lower()
    full = _render(language).full
    # The full text also explains the scale, lowest to highest, in words.
    scale = [LEVEL_WORDS[language][level] for level in Level]
    assert ", ".join(scale) in full


def test_flood_red_instruction_is_plain_and_its_first_sentence_is_the_short_one() -> None:
    result = _render("en")
    assert result.instruction == (
        "Move to higher ground now. Do not walk or drive through flood water. "
        "Check on neighbours who need help to leave."
    )
    assert result.sms == (
        "Red alert: Flood in Riverside. About 3,100 people affected. "
        "Move to higher ground now. Until 13 May 06:00 UTC."
    )
    assert result.short_90 == "Red alert: Flood in Riverside. Move to higher ground now."


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", sorted(set(KIND_LABELS) - {"heat"}))
def test_each_kind_has_its_own_instruction_for_each_level(language: str, kind: str) -> None:
    instructions = {level: _render(language, hazard=_hazard(kind),
                                   priority=_priority(level)).instruction
                    for level in (Level.YELLOW, Level.ORANGE, Level.RED)}
    assert len(set(instructions.values())) == 3
    generic = _render(language, hazard=_hazard("heat"), priority=_priority(Level.RED))
    assert instructions[Level.RED] != generic.instruction


@pytest.mark.parametrize(
    ("language", "words", "english_words"),
    [
        ("fr", ("personnes", "vivent", "zone touchée", "Que faire", "Pourquoi ce niveau"),
         (" people", " live ", "What to do")),
        ("de", ("Menschen", "leben", "betroffenen Gebiet", "Was zu tun ist", "Warum"),
         (" people", " live ", "What to do")),
    ],
)
def test_french_and_german_text_is_written_in_those_languages(
    language: str, words: tuple[str, ...], english_words: tuple[str, ...]
) -> None:
    result = _render(language)
    for word in words:
        assert word in result.full
    # The priority reasons come in English from the rule table and are labelled as such;
    # everything before them is in the language.
    before_reasons = result.full.split("\n- 3,100 people")[0]
    for word in english_words:
        assert word not in before_reasons
        assert word not in result.sms and word not in result.short_360


def test_an_unknown_language_falls_back_to_english_and_says_so() -> None:
    result = _render("pt-BR")
    assert (result.language, result.requested_language, result.fell_back) == (
        "en", "pt-BR", True)
    assert result.level_text == "Red alert"
    regional = _render("fr_CA")
    assert (regional.language, regional.fell_back) == ("fr", False)
    assert regional.level_text == "Alerte rouge"


@pytest.mark.parametrize(
    ("value", "en", "fr", "de"),
    [
        (0, "fewer than 10", "moins de 10", "weniger als 10"),
        (9.99, "fewer than 10", "moins de 10", "weniger als 10"),
        (10, "about 10", "environ 10", "etwa 10"),
        (14.9, "about 10", "environ 10", "etwa 10"),
        (15, "about 20", "environ 20", "etwa 20"),  # halves round up
        (994, "about 990", "environ 990", "etwa 990"),
        (995, "about 1,000", "environ 1\u202f000", "etwa 1.000"),
        (1_000, "about 1,000", "environ 1\u202f000", "etwa 1.000"),
        (3_149, "about 3,100", "environ 3\u202f100", "etwa 3.100"),
        (3_150, "about 3,200", "environ 3\u202f200", "etwa 3.200"),
        (9_949, "about 9,900", "environ 9\u202f900", "etwa 9.900"),
        (9_950, "about 10,000", "environ 10\u202f000", "etwa 10.000"),
        (12_345, "about 12,000", "environ 12\u202f000", "etwa 12.000"),
        (1_234_567, "about 1,235,000", "environ 1\u202f235\u202f000", "etwa 1.235.000"),
    ],
)
def test_counts_are_rounded_for_reading_with_each_languages_separators(
    value: float, en: str, fr: str, de: str
) -> None:
    assert phrasebook("en").count(value) == en
    assert phrasebook("fr").count(value) == fr
    assert phrasebook("de").count(value) == de


def test_rounding_bands_are_the_documented_ones() -> None:
    assert round_for_reading(9.4) == ("fewer_than", 10)
    assert round_for_reading(999.4) == ("about", 1_000)  # band from the unrounded value
    assert round_for_reading(1_049) == ("about", 1_000)
    assert round_for_reading(10_499) == ("about", 10_000)
    assert round_for_reading(10_500) == ("about", 11_000)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_figure_is_refused(bad: float) -> None:
    with pytest.raises(MessageTextError, match="non-negative finite"):
        phrasebook("en").count(bad)
    with pytest.raises(MessageTextError, match="exposure.disability"):
        _render(exposure=_exposure(disability=bad))


@pytest.mark.parametrize(
    ("area_km2", "en", "de"),
    [(0.4, "less than 1 km²", "weniger als 1 km²"), (7.4, "about 7 km²", "etwa 7 km²"),
     (12.4, "about 12 km²", "etwa 12 km²"), (1_234.0, "about 1,200 km²", "etwa 1.200 km²")],
)
def test_areas_are_rounded_for_reading(area_km2: float, en: str, de: str) -> None:
    assert phrasebook("en").area(area_km2) == en
    assert phrasebook("de").area(area_km2) == de


@pytest.mark.parametrize(
    ("label", "language", "expected"),
    [
        ("0.5 to 1.5 m", "en", "0.5 to 1.5 m"),
        ("0.5 to 1.5 m", "fr", "0,5 à 1,5 m"),
        ("0.5 to 1.5 m", "de", "0,5 bis 1,5 m"),
        ("1.5 m and above", "fr", "1,5 m et plus"),
        ("1.5 m and above", "de", "1,5 m und mehr"),
        ("25 to 33 m s-1", "en", "25 to 33 m/s"),
        ("50% and above", "en", "50% and above"),
        ("50% and above", "fr", "50\u202f% et plus"),
        ("50% and above", "de", "50 % und mehr"),
        ("1 to 2 and above", "de", "1 to 2 and above"),  # not a geo label: kept as is
        ("VIII", "fr", "VIII"),
    ],
)
def test_class_labels_are_written_in_the_language(label: str, language: str, expected: str) -> None:
    assert phrasebook(language).class_label(label) == expected


def test_description_gives_rounded_figures_groups_cut_off_and_facilities() -> None:
    assert _render("en").description == (
        "Flood water is expected to reach depths of 1.5 m and above from 12 May 2026 at "
        "18:00 UTC. About 3,100 people live in the affected area (about 12 km²). Among them: "
        "about 310 people with disabilities, about 600 older people and about 20 people who "
        "depend on electrically powered medical equipment. About 410 people, about 50 of them "
        "with disabilities, can no longer reach care in time. Facilities affected: St Mary "
        "(hospital, cut off) and Oak House (care home, 0.5 to 1.5 m)."
    )


def test_groups_with_nobody_are_left_out_and_no_exposure_is_said_plainly() -> None:
    result = _render(exposure=_exposure(disability=0.0, older=0.0, electricity_dependent=0.0,
                                        cut_off_population=0.0, facilities_hit=()))
    assert "Among them" not in result.description
    assert "care in time" not in result.description
    nobody = _render(exposure=ExposureSummary(population=0.0, area_km2=0.3))
    assert "No one is known to live in the affected area (less than 1 km²)." in nobody.description
    assert "No one known to be affected." in nobody.sms


def test_description_names_five_facilities_and_the_full_text_names_all() -> None:
    hits = tuple(FacilityHit(f"School {i}", "school", "1.5 m and above") for i in range(7))
    result = _render(exposure=_exposure(facilities_hit=hits))
    assert "School 4 (school, 1.5 m and above) and 2 more." in result.description
    assert "School 5" not in result.description
    assert "School 5 (school, 1.5 m and above) and School 6" in result.full


def test_full_text_has_every_class_reason_instruction_and_expiry() -> None:
    full = _render("en").full
    assert "- 1.5 m and above: about 1,500 people, about 2 km²" in full
    assert "- 0.15 to 0.5 m: about 1,000 people, about 6 km²" in full
    assert full.index("1.5 m and above: about") < full.index("0.15 to 0.5 m: about")
    assert "Why this level:\n- 3,100 people in the most severe class\n- St Mary hospital" in full
    assert "What to do:\nMove to higher ground now." in full
    assert full.endswith("Valid until 13 May 2026 at 06:00 UTC.")


@pytest.mark.parametrize(
    ("language", "over", "headline_start"),
    [("en", "the danger is over", "All clear, Red alert withdrawn: Flood in Riverside"),
     ("fr", "le danger est écarté", "Fin d'alerte, Alerte rouge levée : Inondation"),
     ("de", "Die Gefahr ist vorüber", "Entwarnung, Warnstufe Rot aufgehoben: Hochwasser")],
)
def test_a_cancel_says_the_alert_is_withdrawn_and_the_danger_is_over(
    language: str, over: str, headline_start: str
) -> None:
    result = _render(language, MsgType.CANCEL)
    assert result.headline.startswith(headline_start)
    assert over in result.description
    assert over in result.short_360
    assert "3,100" not in result.full and "3.100" not in result.full


def test_an_update_says_it_updates_earlier_messages() -> None:
    result = _render("en", MsgType.UPDATE)
    assert result.headline == "Red alert, update: Flood in Riverside"
    assert "This message updates earlier messages about this event." in result.description


def test_observed_hazards_and_ensembles_are_worded_as_such() -> None:
    observed = _render(hazard=_hazard(nature="observed", onset=None))
    assert observed.description.startswith("Flood water has reached depths of 1.5 m and above.")
    ensemble = _render("fr", hazard=_hazard("probability", exceedance_share=0.834))
    assert ensemble.description.startswith(
        "Probabilité de conditions dangereuses : 50\u202f% et plus à partir du 12 mai 2026 à "
        "18:00 UTC. 83\u202f% des membres de la prévision d'ensemble dépassent le seuil.")
    nothing = _render(hazard=_hazard(max_class=0, max_class_label="below"))
    assert nothing.description.startswith("No place has reached the lowest warning class.")


def test_times_are_written_in_the_time_zone_asked_for() -> None:
    assert _render("de", tz="Europe/Berlin").full.endswith(
        "Gültig bis 13. Mai 2026 um 08:00 CEST.")
    assert "Jusqu'au 13/05 08:00 CEST." in _render("fr", tz="Europe/Paris").sms


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"expires": datetime(2026, 5, 13, 6)}, "expires 2026-05-13T06:00:00 has no time zone"),
        ({"tz": "Mars/Olympus"}, "'Mars/Olympus' is not a known IANA time zone"),
        ({"area_name": "  \n "}, "area_name is blank"),
        ({"msg_type": MsgType.ACK}, "no alert text for msgType Ack"),
        ({"hazard": _hazard(nature="guessed")}, "neither 'observed' nor 'forecast'"),
        ({"hazard": _hazard(exceedance_share=1.5)}, "exceedance_share must be in 0..1"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(MessageTextError, match=re.escape(message)):
        _render(**changes)


def test_a_broken_template_is_reported_with_its_file_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = _template_file("fr")
    broken["phrases"]["exposed"] = "{peeple} personnes vivent ici."
    monkeypatch.setattr(text_module, "_templates", lambda language: broken)
    with pytest.raises(MessageTextError, match=r"fr\.toml: template phrases\.exposed"):
        _render("fr")


def test_a_long_area_name_is_cut_but_the_level_stays() -> None:
    area = "Lower Riverside and the eastern floodplain villages " * 6
    result = _render("en", area_name=area)
    assert result.headline.startswith("Red alert: Flood in Lower Riverside")
    assert result.headline.endswith("…") and len(result.headline) <= 160
    assert result.sms.startswith("Red alert: Flood in Lower") and result.sms.endswith("...")


def test_a_letter_outside_gsm7_falls_back_to_one_ucs2_segment() -> None:
    result = _render("fr", area_name="Genêts-sur-Mer")
    assert result.sms_encoding == "UCS-2"
    assert result.sms_segments == 1
    assert len(result.sms) <= 70
    assert result.sms.startswith("Alerte rouge : Inondation - Genêts-sur-Mer.")
    two = _render("fr", area_name="Genêts-sur-Mer", sms_max_segments=2)
    assert two.sms_segments == 2 and "Montez immédiatement en hauteur." in two.sms


_AREA_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ -'"
_FIGURE = st.floats(min_value=0, max_value=5e7, allow_nan=False)


@settings(max_examples=120, deadline=None)
@given(
    language=st.sampled_from(LANGUAGES),
    msg_type=st.sampled_from(MSG_TYPES),
    kind=st.sampled_from(sorted(KIND_LABELS)),
    level=st.sampled_from(list(Level)),
    population=_FIGURE, disability=_FIGURE, cut_off=_FIGURE,
    area_km2=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    area_name=st.text(_AREA_ALPHABET, min_size=1, max_size=400).filter(str.strip),
    expires=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                         timezones=st.just(UTC)),
    tz=st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]),
)
def test_length_variants_respect_their_limits_for_any_figures_and_area_names(
    language: str, msg_type: MsgType, kind: str, level: Level, population: float,
    disability: float, cut_off: float, area_km2: float, area_name: str, expires: datetime,
    tz: str,
) -> None:
    exposure = ExposureSummary(population=population, disability=disability,
                               cut_off_population=cut_off, area_km2=area_km2)
    result = _render(language, msg_type, hazard=_hazard(kind), exposure=exposure,
                     priority=_priority(level), area_name=area_name, expires=expires, tz=tz)
    assert len(result.headline) <= 160
    assert len(result.short_90) <= 90
    assert len(result.short_360) <= 360
    assert sms_segments(result.sms).segments == 1
    assert is_gsm7(result.sms)  # names in the GSM-7 alphabet never force UCS-2
    for variant in (result.headline, result.sms, result.short_90):
        assert result.level_text in variant


@settings(max_examples=60, deadline=None)
@given(area_name=st.text(min_size=1, max_size=300).filter(str.strip),
       language=st.sampled_from(LANGUAGES))
def test_any_unicode_area_name_still_fits_one_sms_segment(area_name: str, language: str) -> None:
    result = _render(language, area_name=area_name)
    assert sms_segments(result.sms).segments == 1 == result.sms_segments
    assert result.level_text in result.sms
    assert len(result.short_90) <= 90


def _without(data: dict[str, Any], *path: str) -> str:
    """A template file as TOML text with one key removed."""
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return tomli_w.dumps(data)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("phrases", "exposed"), "[phrases] lacks ['exposed']"),
        (("levels", "red"), "[levels] lacks ['red']"),
        (("messages", "alert", "sms"), "[messages.alert] lacks ['sms']"),
        (("messages", "cancel", "title"), "[messages.cancel] lacks 'title'"),
        (("kinds", "generic", "instruction", "cancel"),
         "[kinds.generic] lacks ['instruction.cancel']"),
    ],
)
def test_a_template_file_missing_a_required_key_is_refused_naming_it(
    path: tuple[str, ...], message: str
) -> None:
    with pytest.raises(MessageTextError, match=re.escape(f"xx.toml: {message}")):
        parse_templates(_without(_template_file("en"), *path), where="xx.toml")


def test_a_template_file_that_is_not_toml_or_lacks_months_is_refused() -> None:
    with pytest.raises(MessageTextError, match=r"xx\.toml: not valid TOML"):
        parse_templates("[meta\nlanguage = ", where="xx.toml")
    data = _template_file("en")
    data["meta"]["months"] = data["meta"]["months"][:11]
    with pytest.raises(MessageTextError, match="meta.months must list 12 months"):
        parse_templates(tomli_w.dumps(data), where="xx.toml")
    assert parse_templates(tomli_w.dumps(_template_file("de")))["levels"]["red"] == (
        "Warnstufe Rot")
