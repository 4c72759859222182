"""Lyrics as characters: cleaning, the reference's fixed character vocabularies, and per-crop windows.

Everything here reproduces the reference (`jukebox/data/text_processor.py` `TextProcessor`,
`jukebox/data/labels.py` `get_relevant_lyric_tokens`) exactly, so the released models read the same token ids.
The reference assumes lyrics are spread evenly over a song, so the characters relevant to a crop are those
around the same relative position in the text; this module implements that linear alignment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from jukebox_pl.errors import UserValueError
from jukebox_pl.text import transliterate

_BASE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-"
# v2: the 5B models' 80 ids; v3: the 1B model's 79 ids (no '+'). Id 0 is unknown / padding.
CHARSETS = {"v2": _BASE + "+'\"()[] \t\n", "v3": _BASE + "'\"()[] \t\n"}
_NOT_IN = {version: re.compile(f"[^{re.escape(chars)}]+") for version, chars in CHARSETS.items()}


@dataclass(frozen=True)
class LyricsTokenizer:
    """Characters of lyrics <-> token ids of the reference's lyrics vocabulary (`v2` or `v3`).

    `encode(text)` -> (L,) int64 ids in [0, n_vocab): 0 for a character outside the vocabulary (after `clean`
    transliterates and drops it), 1.. for the characters of `charset`; `decode(ids)` is the inverse (0 decodes to
    nothing)."""

    version: str = "v2"

    def __post_init__(self) -> None:
        if self.version not in CHARSETS:
            raise UserValueError(f"unknown lyrics vocabulary {self.version!r}; choose one of {sorted(CHARSETS)}")

    @property
    def charset(self) -> str:
        return CHARSETS[self.version]

    @property
    def n_vocab(self) -> int:
        return len(self.charset) + 1

    def clean(self, text: str) -> str:
        """The reference's order: transliterate with unidecode ('—' -> '--', 'Привет' -> 'Privet'), then turn
        backslashes into line breaks (including those unidecode wrote, e.g. for '＼'), then drop every character
        outside this vocabulary."""
        text = transliterate(text).replace("\\", "\n")
        return _NOT_IN[self.version].sub("", text)

    def encode(self, text: str) -> np.ndarray:
        table = {c: i + 1 for i, c in enumerate(self.charset)}
        return np.fromiter((table.get(c, 0) for c in self.clean(text)), dtype=np.int64)

    def decode(self, ids) -> str:
        chars = self.charset
        return "".join(chars[i - 1] if 0 < i <= len(chars) else "" for i in np.asarray(ids).tolist())


def lyric_window(
    tokens: np.ndarray, n_tokens: int, total_length: int, offset: int, duration: int, float32: bool = False
) -> tuple[np.ndarray, int]:
    """The `n_tokens` characters centred on the crop's relative position in the song (the reference's
    `get_relevant_lyric_tokens`).

    Returns (window, start) where start is the index of window[0] in `tokens` (negative when the lyrics are
    shorter than the window and the window is left-padded with 0). The centre is
    int(len * (offset + duration / 2) / total_length), kept n_tokens // 2 away from both ends. The reference
    computes it in float64 when it builds training labels and in float32 when it samples (its labels are int64
    tensors there); `float32=True` reproduces the latter, which picks another character near exact ties.
    An odd `n_tokens` (which the reference refuses) gets the window starting n_tokens // 2 before the centre.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if n_tokens <= 0:
        return np.zeros(0, dtype=np.int64), 0
    n = len(tokens)
    if n <= n_tokens:
        pad = n_tokens - n
        return np.concatenate([np.zeros(pad, dtype=np.int64), tokens]), -pad
    if total_length <= 0:
        raise UserValueError(f"total_length must be positive, got {total_length}")
    centre = (_centre_float32 if float32 else _centre_float64)(n, total_length, offset, duration)
    start = min(max(centre - n_tokens // 2, 0), n - n_tokens)
    return tokens[start : start + n_tokens].copy(), start


def _centre_float64(n: int, total_length: int, offset: int, duration: int) -> int:
    """The reference's training-time centre: Python/NumPy numbers, double precision, truncated."""
    return int(n * (float(offset) + float(duration) / 2.0) / float(total_length))


def _centre_float32(n: int, total_length: int, offset: int, duration: int) -> int:
    """The reference's sampling-time centre: every operand rounded to float32 and every step rounded, as torch
    does for 0-dim int64 tensors mixed with Python numbers; truncated."""
    f = np.float32
    position = f(offset) + f(duration) / f(2.0)
    return int(f(n) * position / f(total_length))


# Whole songs' lyrics are a few kB; a megabyte is far beyond any song, and bounds what a wrong path can cost.
MAX_LYRICS_BYTES = 1 << 20


def read_lyrics(path: str) -> str:
    """A lyrics text file (UTF-8, at most MAX_LYRICS_BYTES); a missing, non-UTF-8, oversized or special file
    (a FIFO, /dev/zero) is one error line naming it."""
    from jukebox_pl.user_files import read_input_text

    return read_input_text(path, "--lyrics file", MAX_LYRICS_BYTES)
