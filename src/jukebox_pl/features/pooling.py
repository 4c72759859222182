"""How a track's activations (positions x width) become what is stored: `mean` over time (the literature's
choice: one vector per track), `none` (every position), or fixed windows of N seconds (one mean per window; the
last window holds what is left of the clip)."""

from __future__ import annotations

import math

import torch

from jukebox_pl.errors import UserValueError

POOLS = ("mean", "none")


def parse_pool(text: str | float) -> str | float:
    """`mean`, `none`, or a window length in seconds (`2.5`)."""
    if isinstance(text, str) and text in POOLS:
        return text
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        raise UserValueError(f"--pool {text!r}: choose mean, none or a window length in seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserValueError(f"--pool {text!r}: a window length must be a positive number of seconds")
    return seconds


def pool(acts: torch.Tensor, how: str | float, codes_per_second: float) -> torch.Tensor:
    """(T, width) -> (width,) for mean, (T, width) for none, (ceil(T / window), width) for windows of seconds."""
    if how == "none":
        return acts
    if how == "mean":
        return acts.mean(dim=0)
    size = max(1, round(float(how) * codes_per_second))
    return torch.stack([chunk.mean(dim=0) for chunk in acts.split(size, dim=0)])
