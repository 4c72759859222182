"""A prior in the Hub layout: its config.json holds the `prior` section, what the constructor needs (level,
levels, codebook size, hop, sample rate, the level above, label bins), the VQ-VAE fingerprint it learned and its
label vocabulary. Extra conditioners it names are imported only when allowed (`read_config` refuses others)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from jukebox_pl.config.levels import level_name
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.typed import plain
from jukebox_pl.hub.folder import check_keys, config_int, config_pair
from jukebox_pl.hub.mixin import PretrainedMixin

KEYS = ("prior", "level", "levels", "bins", "hop_length", "sample_rate", "upper", "y_bins", "vqvae_fingerprint",
        "vocab")  # fmt: skip
MAX_LEVELS, MAX_BINS, MAX_HOP, MAX_LABELS = 8, 1 << 20, 1 << 24, 1 << 24


def _check_fingerprint(value: Any, path: Path) -> None:
    """null, or {level name: {codebook: hex, hop: int, l_bins: int}} (see `jukebox_pl.vqvae.fingerprint`)."""
    if value is None:
        return
    ok = isinstance(value, Mapping) and all(
        isinstance(entry, Mapping) and isinstance(entry.get("codebook"), str)
        and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) for k in ("hop", "l_bins"))
        for entry in value.values()
    )  # fmt: skip
    if not ok:
        raise ConfigError(f"{path}: vqvae_fingerprint must be null or {{level: {{codebook, hop, l_bins}}}}")


def _check_vocab(value: Any, path: Path) -> None:
    """null, or {style, artists: {name: id}, genres: {name: id}} (checked in full by `LabelVocab.from_dict`)."""
    if value is None:
        return
    if not (isinstance(value, Mapping) and all(isinstance(value.get(k), Mapping) for k in ("artists", "genres"))):
        raise ConfigError(f"{path}: vocab must be null or an object with 'artists' and 'genres' tables")


class PriorPretrained(PretrainedMixin):
    """`save_pretrained` / `from_pretrained` of `JukeboxPrior` (see `jukebox_pl.hub.mixin`)."""

    pretrained_kind: ClassVar[str] = "prior"
    build_on_meta: ClassVar[bool] = True  # a 5B prior is built without memory, then adopts the file's tensors
    vqvae_fingerprint: dict | None = None  # which VQ-VAE's codes it learned (set by loaders)
    vocab: dict | None = None  # the artist and genre names behind its label ids (set by loaders)

    def pretrained_config(self) -> dict[str, Any]:
        return {
            "level": self.level, "levels": self.levels, "bins": self.bins, "hop_length": self.hop_length,
            "sample_rate": self.sample_rate, "upper": list(self.upper) if self.upper else None,
            "y_bins": list(self.y_bins) if self.y_bins else None, "vqvae_fingerprint": self.vqvae_fingerprint,
            "vocab": self.vocab, "prior": plain(self.cfg),
        }  # fmt: skip

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], path: Path) -> PriorPretrained:
        check_keys(config, KEYS, path)
        if not isinstance(config.get("prior"), dict):
            raise ConfigError(f"{path}: prior must be an object holding the prior's settings")
        levels = config_int(config, "levels", path, 1, MAX_LEVELS)
        level = config_int(config, "level", path, 0, levels - 1)
        bins = config_int(config, "bins", path, 1, MAX_BINS)
        hop = config_int(config, "hop_length", path, 1, MAX_HOP)
        rate = config_int(config, "sample_rate", path, 4000, 768000)
        upper, y_bins = config_pair(config, "upper", path, 64), config_pair(config, "y_bins", path, MAX_LABELS)
        _check_fingerprint(config.get("vqvae_fingerprint"), path)
        _check_vocab(config.get("vocab"), path)
        return cls(config["prior"], level, levels, bins, hop, rate, upper, y_bins)

    def adopt_pretrained_config(self, config: dict[str, Any]) -> None:
        self.vqvae_fingerprint, self.vocab = config.get("vqvae_fingerprint"), config.get("vocab")

    def card_title(self) -> str:
        name = level_name(self.level, self.levels)
        return f"jukebox-pl prior, {name} level ({self.bins} codes, hop {self.hop_length})"
