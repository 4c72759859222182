"""Lyrics as characters: cleaning, the reference's fixed character vocabularies, and per-crop windows.

The reference assumes lyrics are spread evenly over a song, so the characters relevant to a crop are those
around the same relative position in the text; this module implements that linear alignment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from jukebox_pl.errors import UserValueError
from jukebox_pl.text import fold_to_ascii

_BASE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-"
# v2: the 5B models' 80 ids; v3: the 1B model's 79 ids (no '+'). Id 0 is unknown / padding.
CHARSETS = {"v2": _BASE + "+'\"()[] \t\n", "v3": _BASE + "'\"()[] \t\n"}


@dataclass(frozen=True)
class LyricsTokenizer:
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
        """ASCII-fold, turn backslashes into line breaks, drop characters outside the vocabulary."""
        text = fold_to_ascii(text).replace("\\", "\n")
        allowed = re.escape(self.charset)
        return re.sub(f"[^{allowed}]+", "", text)

    def encode(self, text: str) -> np.ndarray:
        table = {c: i + 1 for i, c in enumerate(self.charset)}
        return np.fromiter((table.get(c, 0) for c in self.clean(text)), dtype=np.int64)

    def decode(self, ids) -> str:
        chars = self.charset
        return "".join(chars[i - 1] if 0 < i <= len(chars) else "" for i in np.asarray(ids).tolist())


def lyric_window(
    tokens: np.ndarray, n_tokens: int, total_length: int, offset: int, duration: int
) -> tuple[np.ndarray, int]:
    """The `n_tokens` characters centred on the crop's relative position in the song.

    Returns (window, start) where start is the index of window[0] in `tokens` (negative when the lyrics are
    shorter than the window and the window is left-padded with 0).
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
    centre = int(n * (offset + duration / 2.0) / total_length)
    start = min(max(centre - n_tokens // 2, 0), n - n_tokens)
    return tokens[start : start + n_tokens].copy(), start
