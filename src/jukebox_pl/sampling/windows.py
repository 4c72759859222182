"""Where the windows of a long song start at one level, and which codes each window keeps from before it."""

from __future__ import annotations

from jukebox_pl.errors import UserValueError


def window_starts(total: int, n_ctx: int, hop_fraction: float, align: int = 1) -> list[int]:
    """Starts of the windows covering `total` tokens: every hop_fraction * n_ctx tokens (rounded down to a
    multiple of `align`, the upper level's ratio for upsamplers), the last one ending exactly at `total`."""
    if total <= n_ctx:
        return [0]
    if not 0.0 < hop_fraction <= 1.0:
        raise UserValueError(f"hop fraction {hop_fraction} must be in (0, 1]")
    step = max(align, int(n_ctx * hop_fraction) // align * align)
    starts = list(range(0, total - n_ctx, step))
    last = (total - n_ctx) // align * align
    if not starts or starts[-1] != last:
        starts.append(last)
    return starts


def next_window(total: int, filled: int, n_ctx: int, hop_fraction: float, align: int = 1) -> tuple[int, int] | None:
    """(start, end) of the first window that still has codes to sample, given `filled` codes already known
    (earlier windows, a prompt, or saved codes being continued); None when the level is complete."""
    if filled >= total:
        return None
    for start in window_starts(total, n_ctx, hop_fraction, align):
        end = min(start + n_ctx, total)
        if end > filled:
            return start, end
    raise AssertionError("the last window always ends at the total")
