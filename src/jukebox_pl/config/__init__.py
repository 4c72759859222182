"""Typed configuration: dataclass schemas, YAML presets under `configs/`, `key=value` overrides.

Exports are lazy, so `import jukebox_pl.config` does not load OmegaConf until a loader function is used.
"""

from importlib import import_module

_EXPORTS = {
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


def __getattr__(name: str):
    """Import the module that defines `name` on first access (then cache it here)."""
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jukebox_pl.config' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
