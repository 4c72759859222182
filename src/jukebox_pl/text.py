"""Text folding shared by label names and lyrics: Unicode -> closest ASCII, stable across runs."""

from __future__ import annotations

import re
import unicodedata

# Letters that NFKD does not decompose into ASCII base + accent.
_SPECIAL = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "Th",
        "ð": "d",
        "Ð": "D",
        "ı": "i",
        "‘": "'",
        "’": "'",
        "‚": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "–": "-",
        "—": "-",
        "…": "...",
        "\u00a0": " ",
    }
)


def fold_to_ascii(text: str) -> str:
    """Transliterate accents and common typographic characters to ASCII; drop what has no ASCII form."""
    text = unicodedata.normalize("NFKD", text.translate(_SPECIAL))
    return text.encode("ascii", "ignore").decode("ascii")


_SPACES = re.compile(r"\s+")


def normalize_label(name: str) -> str:
    """The key under which an artist or genre is stored: ASCII, lower case, single spaces."""
    return _SPACES.sub(" ", fold_to_ascii(str(name)).strip().lower())
