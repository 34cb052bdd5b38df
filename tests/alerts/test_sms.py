"""SMS arithmetic: encodings and segment counts at every boundary, counted by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.errors import AlertError
from alerts.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MessageTextError,
    SmsEncoding,
    fit_chars,
    fit_sms,
    gsm7_punctuation,
    is_gsm7,
    sms_segments,
)


def test_the_gsm7_tables_have_127_basic_characters_and_10_extension_characters() -> None:
    # 128 code points less the escape (0x1B); extension: form feed and ^{}\[~]|€.
    assert len(GSM7_BASIC) == 127
    assert GSM7_EXTENSION == frozenset("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Move to higher ground now.", True),
        ("é è ù ì ò à Ç É Ä Ö Ü ä ö ü ß ñ Ñ", True),  # all in the default alphabet
        ("ΔΦΓΛΩΠΨΣΘΞ @£$¥ ¿¡§¤", True),
        ("{€}", True),  # extension characters are GSM-7 too (two septets each)
        ("fenêtre", False),  # ê is not in GSM 03.38
        ("français", False),  # only capital Ç is; small ç is not
        ("l’eau", False),  # typographic apostrophe
        ("3\u202f100", False),  # narrow no-break space
        ("Ω", True),
        ("\u2126", False),  # the ohm sign, not the Greek capital omega
        ("😀", False),
    ],
)
def test_gsm7_membership_follows_the_default_alphabet_and_its_extension(
    text: str, expected: bool
) -> None:
    assert is_gsm7(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsEncoding("GSM-7", 0, 1)),  # an empty SMS is still one message
        ("a" * 160, SmsEncoding("GSM-7", 160, 1)),
        ("a" * 161, SmsEncoding("GSM-7", 161, 2)),
        ("é" * 160, SmsEncoding("GSM-7", 160, 1)),  # é stays GSM-7
        ("a" * 306, SmsEncoding("GSM-7", 306, 2)),  # 2 x 153
        ("a" * 307, SmsEncoding("GSM-7", 307, 3)),
        ("€" * 80, SmsEncoding("GSM-7", 160, 1)),  # 80 x 2 septets
        ("€" * 80 + "a", SmsEncoding("GSM-7", 161, 2)),
        ("a" * 159 + "^", SmsEncoding("GSM-7", 161, 2)),
        ("ê" * 70, SmsEncoding("UCS-2", 70, 1)),
        ("ê" * 71, SmsEncoding("UCS-2", 71, 2)),
        ("ê" * 134, SmsEncoding("UCS-2", 134, 2)),  # 2 x 67
        ("ê" * 135, SmsEncoding("UCS-2", 135, 3)),
        ("a" * 69 + "ê", SmsEncoding("UCS-2", 70, 1)),  # one ê turns it all to UCS-2
        ("a" * 70 + "ê", SmsEncoding("UCS-2", 71, 2)),
        ("😀" * 35, SmsEncoding("UCS-2", 70, 1)),  # an emoji is two UTF-16 units
        ("😀" * 35 + "a", SmsEncoding("UCS-2", 71, 2)),
    ],
)
def test_segments_follow_the_single_and_concatenated_limits(
    text: str, expected: SmsEncoding
) -> None:
    assert sms_segments(text) == expected


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets would fill 2 x 153, but the € cannot start in the last
    # septet of part 1: part 1 = 152, part 2 = € + 151 = 153, part 3 = 1.
    text = "a" * 152 + "€" + "a" * 152
    assert sms_segments(text) == SmsEncoding("GSM-7", 306, 3)
    assert sms_segments("a" * 151 + "€" + "a" * 153).segments == 2  # 153 | 153


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    # 66 + 2 + 66 = 134 units would fill 2 x 67; the emoji cannot straddle: 66 | 67 | 1.
    text = "ê" * 66 + "😀" + "ê" * 66
    assert sms_segments(text) == SmsEncoding("UCS-2", 134, 3)


def test_typographic_punctuation_is_replaced_by_its_gsm7_equivalent() -> None:
    text = "« l’eau — 3\u202f100\u00a0personnes… »"
    assert gsm7_punctuation(text) == "\" l'eau - 3 100 personnes... \""
    assert is_gsm7(gsm7_punctuation(text))
    assert gsm7_punctuation("fenêtre") == "fenêtre"  # letters are never changed


def test_a_text_that_fits_is_returned_unchanged() -> None:
    text = "a" * 160
    assert fit_sms(text, 1) is text


def test_a_long_gsm7_text_is_cut_at_a_word_with_three_dots() -> None:
    # k words of "word" joined by spaces take 5k - 1 septets; with "..." 5k + 2 <= 160.
    text = " ".join(["word"] * 40)
    assert fit_sms(text, 1) == " ".join(["word"] * 31) + "..."
    assert len(fit_sms(text, 1)) == 157


def test_a_long_ucs2_text_is_cut_at_a_word_with_one_ellipsis_character() -> None:
    # "mêlée" is 5 units; k words take 6k - 1, plus "…" is 6k <= 70 -> k = 11.
    text = " ".join(["mêlée"] * 20)
    assert fit_sms(text, 1) == " ".join(["mêlée"] * 11) + "…"
    assert sms_segments(fit_sms(text, 1)) == SmsEncoding("UCS-2", 66, 1)


def test_cutting_off_the_only_non_gsm_letter_goes_back_to_gsm7() -> None:
    # The ê at the end forces UCS-2 (70 units); without it the text is GSM-7 and 79 "a"
    # words (157 septets) plus "..." fit in 160.
    text = "a " * 100 + "ê"
    fitted = fit_sms(text, 1)
    assert fitted == " ".join(["a"] * 79) + "..."
    assert sms_segments(fitted) == SmsEncoding("GSM-7", 160, 1)


def test_a_single_overlong_word_is_cut_inside_it() -> None:
    assert fit_sms("x" * 200, 1) == "x" * 157 + "..."


def test_two_segments_allow_twice_153_septets() -> None:
    text = " ".join(["word"] * 80)  # 399 septets
    fitted = fit_sms(text, 2)
    assert fitted == " ".join(["word"] * 60) + "..."  # 5 x 60 + 2 = 302 <= 306
    assert sms_segments(fitted).segments == 2


def test_fewer_than_one_segment_is_refused_with_a_clear_error() -> None:
    with pytest.raises(MessageTextError, match="max_segments must be 1 or more, got 0"):
        fit_sms("text", 0)
    assert issubclass(MessageTextError, AlertError)
    assert issubclass(MessageTextError, ValueError)


def test_fit_chars_cuts_at_a_word_and_refuses_a_limit_without_room() -> None:
    assert fit_chars("Red alert: Flood in Riverside", 20) == "Red alert: Flood in…"
    assert fit_chars("short", 90) == "short"
    with pytest.raises(MessageTextError, match="at least 2"):
        fit_chars("text", 1)


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=700), max_segments=st.integers(1, 3))
def test_a_fitted_text_always_fits_and_is_a_prefix_of_the_original(
    text: str, max_segments: int
) -> None:
    fitted = fit_sms(text, max_segments)
    assert sms_segments(fitted).segments <= max_segments
    if fitted != text:
        kept = fitted.removesuffix("...").removesuffix("…")
        assert kept and text.startswith(kept)
