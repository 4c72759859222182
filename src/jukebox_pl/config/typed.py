"""The typed config below the loader: a run's `RunConfig` and its sections as schema dataclass instances.

The loader (`load_config`) merges YAML and `key=value` text into an OmegaConf tree and checks every value once,
naming the file or key. Everything below it (stages, models, DataModules, sampling) receives the dataclasses of
`jukebox_pl.config.schema`, so a setting can be followed by name from its YAML key (`vqvae.l_bins`) to the
attribute that uses it (`cfg.vqvae.l_bins`), and an editor or type checker knows its type.

A section built by the loader or by `jukebox_pl.config.sections` is remembered as checked (with its values at
that moment): handing it on to a model does not check it again; changing a value afterwards makes the next
builder check it again.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from jukebox_pl.config.schema import RunConfig

# id(instance) -> its values when they were checked (dataclass instances are unhashable, so no WeakSet)
_CHECKED: dict[int, dict] = {}


def plain(section: Any) -> Any:
    """A config (dataclass instance, DictConfig, dict) as plain dicts and lists: what checkpoints' hparams hold."""
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return dataclasses.asdict(section)
    if isinstance(section, DictConfig | ListConfig):
        return OmegaConf.to_container(section, resolve=True)
    return section


def mark_checked(instance: Any) -> Any:
    """Remember that `instance`'s values (and those of its nested sections) passed the checks."""
    for item in _nested(instance):
        key = id(item)
        if key not in _CHECKED:
            weakref.finalize(item, _CHECKED.pop, key, None)
        _CHECKED[key] = dataclasses.asdict(item)
    return instance


def is_checked(instance: Any) -> bool:
    """True when `instance` was checked and none of its values changed since."""
    seen = _CHECKED.get(id(instance))
    return seen is not None and seen == dataclasses.asdict(instance)


def _nested(instance: Any):
    yield instance
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _nested(value)


def run_config(cfg: DictConfig | RunConfig) -> RunConfig:
    """The typed form of a config returned by `load_config` (already checked there): a `RunConfig` whose
    sections are `DataConfig`, `TrainerConfig`, `VQVAEConfig`, `PriorConfig` ... instances. The shard URLs typed
    on that command line (`command_line_urls`) stay allowed for the typed form."""
    from jukebox_pl.config.loader import command_line_urls, remember_urls

    if isinstance(cfg, RunConfig):
        return cfg
    typed = OmegaConf.to_object(cfg)
    remember_urls(typed, command_line_urls(cfg))
    return mark_checked(typed)
