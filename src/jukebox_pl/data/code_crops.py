"""Code shards (`jukebox-pl encode-shards`) as a `ShardFormat`: windows of `n_ctx` codes of one level, plus the
aligned codes of the level above for upsamplers. No audio is decoded and no VQ-VAE runs.

Crop starts are multiples of the upper level's hop (of the level's own hop for a top prior), so an upsampler's
conditioning codes line up exactly with its targets.
"""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import dataclass

import numpy as np

from jukebox_pl.data.code_shards import codes_ext
from jukebox_pl.data.pipeline import SkipTrack, train_offsets, val_offsets


def _load_codes(data: bytes, where: str) -> np.ndarray:
    codes = np.load(io.BytesIO(data), allow_pickle=False)
    if codes.ndim != 1 or codes.dtype.kind not in "iu":
        raise SkipTrack(f"{where} holds {codes.dtype} {codes.shape}, not 1-D integer codes")
    return codes


def _window(codes: np.ndarray, start: int, n: int) -> np.ndarray:
    """codes[start:start+n] as int64, zero-padded at the end to n."""
    out = np.zeros(n, dtype=np.int64)
    piece = codes[start : start + n]
    out[: len(piece)] = piece
    return out


@dataclass
class CodeCrops:
    """Windows of `n_ctx` codes at `hop` (and `upper_hop` for the level above); picklable."""

    level: int
    n_ctx: int
    hop: int
    sample_rate: int
    upper_level: int | None = None
    upper_hop: int | None = None
    aug_shift: bool = True

    @property
    def sample_length(self) -> int:
        return self.n_ctx * self.hop

    @property
    def align(self) -> int:
        """Crop starts are multiples of this many samples, so every level's codes start on a token boundary."""
        return self.upper_hop or self.hop

    @property
    def n_upper(self) -> int:
        return self.sample_length // self.upper_hop if self.upper_hop else 0

    def parse(self, sample: dict) -> dict:
        info = json.loads(sample["json"])
        total = int(info["samples"])
        wanted = [(self.level, self.hop)] + ([(self.upper_level, self.upper_hop)] if self.upper_hop else [])
        codes = {}
        for level, hop in wanted:
            codes[level] = _load_codes(sample[codes_ext(level)], codes_ext(level))
            if len(codes[level]) != math.ceil(total / hop):
                raise SkipTrack(f"{len(codes[level])} level-{level} codes for {total} samples at hop {hop}")
        upper = codes.get(self.upper_level) if self.upper_hop else None
        return {"info": info, "samples": total, "codes": codes[self.level], "upper": upper}

    def offsets(self, track: dict, rng: random.Random | None, n_val: int) -> list[int]:
        """The audio pipeline's offsets computed in units of `align`."""
        units, length = track["samples"] // self.align, self.sample_length // self.align
        offsets = (
            val_offsets(units, length, n_val) if rng is None else train_offsets(units, length, rng, self.aug_shift)
        )
        return [o * self.align for o in offsets]

    def example(self, crop: dict, rng: random.Random | None) -> dict:
        offset = crop["offset"]
        example = {
            "codes": _window(crop["codes"], offset // self.hop, self.n_ctx),
            "length": max(0, min(self.sample_length, crop["samples"] - offset)),
        }
        if self.upper_hop:
            example["upper_codes"] = _window(crop["upper"], offset // self.upper_hop, self.n_upper)
        return example
