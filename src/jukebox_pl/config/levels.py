"""A run's levels: their names, hops, the level above each, sample rate and codebook size, in one place.

Built once from a run's config (`Levels.from_config(cfg)`) or its `vqvae` section and sample rate
(`Levels.from_vqvae(...)`); the models, stages, import and benches ask it instead of recomputing. Plain Python
(no OmegaConf, no torch): every package may import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jukebox_pl.errors import UserValueError

LEVEL_NAMES = {1: ("top",), 2: ("bottom", "top"), 3: ("bottom", "middle", "top")}


def level_names(levels: int) -> tuple[str, ...]:
    """The names of `levels` levels, bottom first; sets without names count "0", "1", ..."""
    return LEVEL_NAMES.get(levels, tuple(str(i) for i in range(levels)))


def level_index(name: str | int, levels: int) -> int:
    """'bottom' / 'middle' / 'top' (or an index) -> level index; a clear error for names the set lacks."""
    names = level_names(levels)
    if isinstance(name, int) or str(name).isdigit():
        idx = int(name)
        if not 0 <= idx < levels:
            raise UserValueError(f"level {idx} out of range: this VQ-VAE has {levels} levels ({', '.join(names)})")
        return idx
    if name not in names:
        raise UserValueError(f"unknown level {name!r}: this VQ-VAE has {levels} levels: {', '.join(names)}")
    return names.index(name)


def level_name(idx: int, levels: int) -> str:
    return level_names(levels)[idx]


def hop_lengths(downs_t, strides_t) -> list[int]:
    hops, hop = [], 1
    for d, s in zip(downs_t, strides_t):
        hop *= s**d
        hops.append(hop)
    return hops


def _get(section: Any, key: str) -> Any:
    """A key of a config section given as a mapping (dict, DictConfig) or an object (dataclass)."""
    return section[key] if hasattr(section, "keys") else getattr(section, key)


def vqvae_section(cfg: Any) -> Any:
    """The `vqvae` section of a run config, or `cfg` itself when it is already one (it has no `vqvae` key)."""
    if dataclasses.is_dataclass(cfg) and hasattr(cfg, "vqvae"):
        return cfg.vqvae
    if hasattr(cfg, "keys") and "vqvae" in cfg:
        return cfg["vqvae"]
    return cfg


@dataclass(frozen=True)
class Levels:
    """The levels of one run, bottom first. `downs_t[i]` / `strides_t[i]`: the downsampling level i adds on top
    of level i-1, so `hops[i]` (audio samples per code) is the product of the strides up to i."""

    downs_t: tuple[int, ...]
    strides_t: tuple[int, ...]
    sample_rate: int
    codebook_size: int  # the VQ-VAE's `l_bins`: codes per level
    names: tuple[str, ...] = field(init=False)
    hops: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        downs, strides = tuple(int(d) for d in self.downs_t), tuple(int(s) for s in self.strides_t)
        if len(downs) != len(strides):
            raise UserValueError(f"downs_t {list(downs)} and strides_t {list(strides)} differ in length")
        object.__setattr__(self, "downs_t", downs)
        object.__setattr__(self, "strides_t", strides)
        object.__setattr__(self, "names", level_names(len(downs)))
        object.__setattr__(self, "hops", tuple(hop_lengths(downs, strides)))

    @classmethod
    def from_vqvae(cls, vqvae: Any, sample_rate: int) -> Levels:
        """From a `vqvae` section (DictConfig, VQVAEConfig or plain dict) and the run's sample rate."""
        levels = int(_get(vqvae, "levels"))
        downs, strides = list(_get(vqvae, "downs_t")), list(_get(vqvae, "strides_t"))
        if not len(downs) == len(strides) == levels:
            raise UserValueError(
                f"vqvae.levels is {levels} but downs_t {downs} and strides_t {strides} have "
                f"{len(downs)} and {len(strides)} entries; give one per level"
            )
        return cls(tuple(downs), tuple(strides), sample_rate, _get(vqvae, "l_bins"))

    @classmethod
    def from_config(cls, cfg: Any) -> Levels:
        """From a whole run config (its `vqvae` section and `data.sample_rate`)."""
        return cls.from_vqvae(_get(cfg, "vqvae"), _get(_get(cfg, "data"), "sample_rate"))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, level: str | int) -> int:
        """A level's index from its name or index; the error names the levels there are."""
        return level_index(level, len(self))

    def name(self, idx: int) -> str:
        return self.names[idx]

    def hop(self, idx: int) -> int:
        """Audio samples per code at level `idx`."""
        return self.hops[idx]

    @property
    def top(self) -> int:
        return len(self) - 1

    def above(self, idx: int) -> int | None:
        """The level whose codes condition level `idx` (its upsampler's input); None for the top."""
        return idx + 1 if idx < self.top else None

    def upsampling(self, idx: int) -> tuple[int, int] | None:
        """(down_t, stride_t) from level `idx` to the level above (a prior's `upper`); None for the top."""
        up = self.above(idx)
        return None if up is None else (self.downs_t[up], self.strides_t[up])

    def tokens_per_second(self, idx: int) -> float:
        """Codes per second of audio at level `idx`."""
        return self.sample_rate / self.hops[idx]
