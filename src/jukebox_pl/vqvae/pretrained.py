"""A VQ-VAE level in the Hub layout: its config.json holds the `vqvae` section, the level and the sample rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from jukebox_pl.config.levels import level_name
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.hub.folder import check_keys, config_int
from jukebox_pl.hub.mixin import PretrainedMixin

MIN_RATE, MAX_RATE = 4000, 768000  # the sample rates `prep` accepts


class VQVAELevelPretrained(PretrainedMixin):
    """`save_pretrained` / `from_pretrained` of `VQVAELevelModel` (see `jukebox_pl.hub.mixin`)."""

    pretrained_kind: ClassVar[str] = "vqvae-level"
    sample_rate: int | None = None  # set when known (loaded, or assembled into a VQVAE): needed to sample

    def pretrained_config(self) -> dict[str, Any]:
        rate = int(self.sample_rate) if self.sample_rate is not None else None
        return {"level": self.level, "sample_rate": rate, "vqvae": plain(self.cfg)}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], path: Path) -> VQVAELevelPretrained:
        check_keys(config, ("level", "sample_rate", "vqvae"), path)
        if not isinstance(config.get("vqvae"), dict):
            raise ConfigError(f"{path}: vqvae must be an object holding the VQ-VAE's settings")
        cfg = vqvae_config(config["vqvae"])
        level = config_int(config, "level", path, 0, cfg.levels - 1)
        model = cls(cfg, level)
        if config.get("sample_rate") is not None:
            model.sample_rate = config_int(config, "sample_rate", path, MIN_RATE, MAX_RATE)
        return model

    def card_title(self) -> str:
        return f"jukebox-pl VQ-VAE, {level_name(self.level, self.cfg.levels)} level (hop {self.hop_length})"
