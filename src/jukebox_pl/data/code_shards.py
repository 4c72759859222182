"""Code shards (written by `jukebox-pl encode-shards`): the on-disk format, readable without any model.

Each shard mirrors one audio shard (same split, name, tracks and order) and holds per track `<key>.json` (the
audio shard's track info, byte for byte) and `<key>.codes<level>.npy` (int16, 1-D, ceil(samples / hop) codes
of the whole mono track). The folder's manifest has `kind: codes` plus levels, hops and codebook sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

from jukebox_pl.data.prep import MANIFEST_FILE

CODES_KIND = "codes"
CODES_FORMAT = 1
INT16_CODES = 32768  # codes are stored as int16: codebooks up to this size fit


def codes_ext(level: int) -> str:
    """Member extension of a level's codes (`<key>.codes0.npy`); WebDataset exposes it as sample key `codes0.npy`."""
    return f"codes{level}.npy"


def is_code_shards(folder: str | Path) -> bool:
    """True when `folder` holds a manifest written by `encode-shards` (not `prep`'s audio shards)."""
    try:
        return json.loads((Path(folder) / MANIFEST_FILE).read_text()).get("kind") == CODES_KIND
    except (OSError, ValueError, AttributeError):
        return False
