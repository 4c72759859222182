"""Typed configuration: dataclass schemas, YAML presets under `configs/`, `key=value` overrides.

Exports are lazy, so `import jukebox_pl.config` does not load OmegaConf until a loader function is used.
"""

from jukebox_pl.lazy import lazy_exports

_EXPORTS = {
    "Levels": "jukebox_pl.config.levels",
    "PRESETS": "jukebox_pl.config.loader",
    "ConfigError": "jukebox_pl.config.loader",
    "load_config": "jukebox_pl.config.loader",
    "save_config": "jukebox_pl.config.loader",
    "to_yaml": "jukebox_pl.config.loader",
    "DataConfig": "jukebox_pl.config.schema",
    "PriorConfig": "jukebox_pl.config.schema",
    "RunConfig": "jukebox_pl.config.schema",
    "TrainerConfig": "jukebox_pl.config.schema",
    "VQVAEConfig": "jukebox_pl.config.schema",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
