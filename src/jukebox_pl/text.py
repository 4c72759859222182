"""Text folding shared by label names and lyrics: Unicode -> closest ASCII, stable across runs.

Two foldings live here. `fold_to_ascii` (accents stripped, a few typographic characters mapped) keys jukebox-pl's
own label vocabularies. `transliterate` and `reference_norm` are the reference's (OpenAI Jukebox): its lyrics and
its v2 artist/genre names go through `unidecode`, so token and label ids of the released models depend on it.
"""

from __future__ import annotations

import re
import unicodedata

from unidecode import unidecode

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


def transliterate(text: str) -> str:
    """Unicode -> ASCII with `unidecode`, as the reference's lyric cleaning does (Greek, Cyrillic, CJK, ... are
    spelled out rather than dropped). Its tables change between releases; the reference pins 1.1.1, and so do we,
    because the released models' lyric token ids depend on it."""
    return unidecode(text)


_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_UNDERSCORES = re.compile(r"_+")


def reference_norm(name: str) -> str:
    """The reference's v2 label key (`artist_genre_processor.norm`): lower case, every character that is not an
    ASCII letter or digit becomes '_', runs of '_' collapse, and '_' is stripped from both ends. No
    transliteration: 'Beyoncé' -> 'beyonc'."""
    folded = "".join(c if c in _ALNUM else "_" for c in name.lower())
    return _UNDERSCORES.sub("_", folded).strip("_")
