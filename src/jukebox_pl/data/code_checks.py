"""What a codes file's codes must be before any model reads them: integers, shaped as `encode` and `sample`
write them, inside the level's codebook (a code out of range is otherwise an index error deep inside an
embedding, or garbage audio)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from jukebox_pl.errors import UserValueError


def check_codes(path: str | Path, codes, bins: Callable[[str], int | None] | None = None) -> None:
    """Codes a file holds, per level name: a non-empty integer tensor shaped (codes,) or (samples, codes), every
    value in [0, bins(level)) (`bins` gives a level's codebook size, None when unknown). Anything else is one
    error naming the file, the level and the bad value, instead of an index error deep inside a model."""
    if not isinstance(codes, dict) or not codes:
        raise UserValueError(f"{path} holds no codes (expected a mapping of level name -> integer tensor)")
    for name, c in codes.items():
        where = f"{path}, level {name!r}"
        if not torch.is_tensor(c):
            raise UserValueError(f"{where}: codes must be a tensor of integers, not {type(c).__name__}")
        if c.dtype == torch.bool or c.is_floating_point() or c.is_complex():
            raise UserValueError(f"{where}: codes must be integers, not {str(c.dtype).removeprefix('torch.')}")
        if c.dim() not in (1, 2):
            raise UserValueError(f"{where}: codes of shape {tuple(c.shape)}; expected (codes,) or (samples, codes)")
        if c.numel() == 0:
            raise UserValueError(f"{where}: holds no codes (shape {tuple(c.shape)})")
        low, high = int(c.min()), int(c.max())
        n = bins(name) if bins is not None else None
        if low < 0 or (n is not None and high >= n):
            bad = low if low < 0 else high
            limit = f"[0, {n})" if n is not None else ">= 0"
            raise UserValueError(f"{where}: code {bad} is out of range {limit} (this level's codebook size)")
