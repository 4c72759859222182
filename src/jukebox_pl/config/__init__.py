"""Typed configuration: dataclass schemas, YAML presets under `configs/`, `key=value` overrides."""

from jukebox_pl.config.loader import PRESETS, ConfigError, load_config, save_config, to_yaml
from jukebox_pl.config.schema import DataConfig, RunConfig, TrainerConfig

__all__ = [
    "PRESETS",
    "ConfigError",
    "DataConfig",
    "RunConfig",
    "TrainerConfig",
    "load_config",
    "save_config",
    "to_yaml",
]
