r"""SMS length arithmetic: GSM-7 / UCS-2 encoding choice, segment counts, fitting.

An SMS carries 140 bytes. Text that uses only the GSM 03.38 default alphabet (plus its
extension table) is packed in 7-bit septets: 160 in a single message, 153 per part when
the message is concatenated (the user-data header takes 7). Anything else goes as UCS-2
(in practice UTF-16): 70 code units single, 67 per part; a character outside the Basic
Multilingual Plane (an emoji) takes two units. Extension characters (``^{}\\[~]|€`` and
form feed) are an escape plus a septet, so they count two. Handsets never split an escape
pair or a surrogate pair across parts, so parts are packed greedily under that rule.

Pure functions, no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from alerts.errors import AlertError

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x1B (escape) is not a character of its own
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The 127 printable characters of the GSM 03.38 default alphabet (one septet each)."""

GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
"""The GSM 03.38 extension table: escape + septet, so two septets each."""

GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153  # 160 less the 7 septets of the concatenation header
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67  # 70 less the 6-byte concatenation header, in 16-bit units

SmsCoding = Literal["GSM-7", "UCS-2"]

# Typographic characters with a faithful GSM-7 stand-in. Letters are never replaced: "ê"
# written as "e" is a spelling mistake, so text that needs it goes as UCS-2 instead.
_GSM7_PUNCTUATION = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2007": " ",
    "\u2026": "...",
})


class MessageTextError(AlertError, ValueError):
    """Alert text cannot be produced: bad figures, time zone, template or length limit."""


@dataclass(frozen=True, slots=True)
class SmsEncoding:
    """How a text travels by SMS.

    Attributes:
        encoding: ``"GSM-7"`` or ``"UCS-2"``.
        units: septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2).
        segments: messages the network bills: 1 up to the single limit, else parts.
    """

    encoding: SmsCoding
    units: int
    segments: int


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM 03.38 default alphabet or its extension.

    Args:
        text: the message text.

    Returns:
        Whether the text can be sent in 7-bit GSM encoding (``é`` can, ``ê`` cannot).
    """
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def gsm7_punctuation(text: str) -> str:
    """Replace typographic punctuation and special spaces by their GSM-7 equivalents.

    Curly quotes, guillemets, dashes, the ellipsis and no-break spaces have no GSM-7 code
    and would push a whole SMS into UCS-2 (70 characters instead of 160) for no gain in
    meaning. Letters are left alone.

    Args:
        text: any text.

    Returns:
        The text with those characters replaced (``…`` becomes ``...``).
    """
    return text.translate(_GSM7_PUNCTUATION)


def sms_segments(text: str) -> SmsEncoding:
    """Encoding, length and segment count of a text sent as one (concatenated) SMS.

    An empty text is one (empty) message.

    Args:
        text: the message text.

    Returns:
        The :class:`SmsEncoding`: GSM-7 when :func:`is_gsm7`, else UCS-2.
    """
    if is_gsm7(text):
        sizes = [2 if c in GSM7_EXTENSION else 1 for c in text]
        coding: SmsCoding = "GSM-7"
        single, part = GSM7_SINGLE_SEPTETS, GSM7_PART_SEPTETS
    else:
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
        coding = "UCS-2"
        single, part = UCS2_SINGLE_UNITS, UCS2_PART_UNITS
    units = sum(sizes)
    return SmsEncoding(coding, units, 1 if units <= single else _parts(sizes, part))


def _parts(sizes: list[int], capacity: int) -> int:
    """Greedy packing of characters into parts, never splitting one character."""
    parts, used = 1, 0
    for size in sizes:
        if used + size > capacity:
            parts, used = parts + 1, 0
        used += size
    return parts


def fit_sms(text: str, max_segments: int = 1) -> str:
    """Shorten a text at a word boundary, with an ellipsis, so it fits ``max_segments``.

    The ellipsis is ``...`` when the kept text is GSM-7 (``…`` has no GSM-7 code) and
    ``…`` otherwise. A text that already fits is returned unchanged. A text whose first
    word alone does not fit is cut inside that word.

    Args:
        text: the message text.
        max_segments: at most this many SMS parts (1 or more).

    Returns:
        ``text`` itself, or its longest fitting word-boundary prefix plus an ellipsis.

    Raises:
        MessageTextError: ``max_segments`` is below 1.
    """
    if max_segments < 1:
        raise MessageTextError(f"max_segments must be 1 or more, got {max_segments}")
    return shorten_to_fit(
        text,
        lambda candidate: sms_segments(candidate).segments <= max_segments,
        lambda kept: "..." if is_gsm7(kept) else "\u2026",
    )


def fit_chars(text: str, max_chars: int, ellipsis: str = "\u2026") -> str:
    """Shorten a text at a word boundary so it is at most ``max_chars`` characters.

    Characters are Unicode code points (what cell-broadcast and headline limits count).

    Args:
        text: the text.
        max_chars: the limit, at least ``len(ellipsis) + 1``.
        ellipsis: appended when the text is cut.

    Returns:
        ``text`` itself when short enough, else its longest fitting prefix plus ellipsis.

    Raises:
        MessageTextError: ``max_chars`` leaves no room for one character and the ellipsis.
    """
    if max_chars < len(ellipsis) + 1:
        raise MessageTextError(
            f"max_chars must be at least {len(ellipsis) + 1} to hold a character and "
            f"{ellipsis!r}, got {max_chars}"
        )
    return shorten_to_fit(text, lambda candidate: len(candidate) <= max_chars, ellipsis)


_TRAILING = " \t\n\r,;:-\u2013\u2014(/"


def shorten_to_fit(
    text: str, fits: Callable[[str], bool], ellipsis: str | Callable[[str], str]
) -> str:
    """Longest word-boundary prefix of ``text`` that, with its ellipsis, passes ``fits``.

    ``fits`` must be monotone (a shorter text never fits worse); the search is a
    bisection over the cut points, so long texts stay cheap.

    Args:
        text: the text.
        fits: the length test a candidate must pass.
        ellipsis: the ellipsis, or a function of the kept prefix that chooses it.

    Returns:
        ``text`` when it fits, else the shortened text (always at least one character of
        ``text`` when ``text`` is not empty and one character plus ellipsis fits).
    """
    if fits(text):
        return text

    def candidate(cut: int) -> str:
        kept = text[:cut].rstrip(_TRAILING)
        return kept + (ellipsis(kept) if callable(ellipsis) else ellipsis)

    word_cuts = [i for i in range(1, len(text)) if text[i].isspace() and not text[i - 1].isspace()]
    word_cuts = [i for i in word_cuts if text[:i].rstrip(_TRAILING)]
    best = _last_fitting(word_cuts, candidate, fits)
    if best is None:
        best = _last_fitting(list(range(1, len(text))), candidate, fits)
    return candidate(best) if best is not None else ""


def _last_fitting(
    cuts: list[int], candidate: Callable[[int], str], fits: Callable[[str], bool]
) -> int | None:
    """The largest cut whose candidate fits, by bisection (fits is monotone in the cut)."""
    n_fitting = bisect.bisect_left(cuts, True, key=lambda cut: not fits(candidate(cut)))
    return cuts[n_fitting - 1] if n_fitting else None
