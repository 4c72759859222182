"""Build one config section (a VQ-VAE, a prior) from whatever a user has at hand: a schema dataclass, a plain
dict, an OmegaConf node or keyword arguments; the result is the schema dataclass (`VQVAEConfig`, `PriorConfig`),
checked. Unknown keys and wrong types are errors naming the key; a prior's `arch` (a file in `configs/priors/`)
is honoured wherever it is given, beneath the values given with it. A section that was checked already (it came
from the loader or from here, unchanged since) is returned as it is."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jukebox_pl.config.loader import (
    RETIRED_STEP_KEY,
    ConfigError,
    _escape_literals,
    _explain,
    check_values,
    prior_arch_path,
    read_config_file,
    refuse_resolvers,
)
from jukebox_pl.config.schema import DataConfig, PriorConfig, VQVAEConfig
from jukebox_pl.config.typed import is_checked, mark_checked


def _as_node(cfg: Any) -> DictConfig | dict:
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):  # its strings are literal (no `${...}`)
        return OmegaConf.create(_escape_literals(dataclasses.asdict(cfg)))
    return cfg


# The pattern of each section's keys in the rules of jukebox_pl.config.checks (a prior's level is not known here).
SECTION_PATTERNS = {"vqvae": "vqvae", "prior": "prior.*"}


def _given(layers: tuple) -> list:
    return [layer for layer in layers if layer is not None and not (isinstance(layer, dict) and not layer)]


def build_section(schema: type, section: str, *layers: Any) -> Any:
    """schema defaults <- each layer in turn -> a checked `schema` instance; a ConfigError names `<section>.<key>`
    for a bad key or value (unknown, mistyped, out of its range, or a resolver call such as `${oc.env:...}` in a
    checkpoint's hparams)."""
    given = _given(layers)
    if len(given) == 1 and isinstance(given[0], schema) and is_checked(given[0]):
        return given[0]
    base = OmegaConf.structured(schema)
    merged = base
    for layer in layers:
        node = _as_node(layer)
        if isinstance(node, dict | DictConfig) and RETIRED_STEP_KEY in node:  # an older checkpoint's hparams
            node = {k: v for k, v in node.items() if k != RETIRED_STEP_KEY}
        refuse_resolvers(node, "arguments", prefix=section)
        try:
            merged = OmegaConf.merge(merged, node)
        except OmegaConfBaseException as err:
            raised = _explain(err, base, "arguments")
            raise type(raised)(str(raised).replace("'", f"'{section}.", 1)) from None
    check_values(merged, at=SECTION_PATTERNS.get(section, section), shown=section)
    return mark_checked(OmegaConf.to_object(merged))


# Old names still found in saved checkpoints and configs -> today's (the reference's loss was called "jukebox").
RENAMED_SPECTRAL_MODES = {"jukebox": "reference"}


def vqvae_config(cfg: VQVAEConfig | DictConfig | dict | None = None, **overrides: Any) -> VQVAEConfig:
    """A checked `VQVAEConfig`: `vqvae_config(levels=2, l_bins=512)` or `vqvae_config(VQVAEConfig(...))`.
    A checkpoint saved with `spectral_mode: jukebox` loads as `reference` (the same loss, renamed)."""
    section = build_section(VQVAEConfig, "vqvae", cfg, overrides)
    if section.spectral_mode in RENAMED_SPECTRAL_MODES:
        section.spectral_mode = RENAMED_SPECTRAL_MODES[section.spectral_mode]
        mark_checked(section)
    return section


def prior_config(cfg: PriorConfig | DictConfig | dict | None = None, **overrides: Any) -> PriorConfig:
    """A checked `PriorConfig`; `arch` (given in `cfg` or as a keyword) loads `configs/priors/<arch>.yaml`
    first, so `prior_config({"arch": "tiny_prior"})` is the tiny prior, and `width=...` still wins."""
    if isinstance(cfg, PriorConfig) and not overrides and is_checked(cfg):
        return cfg
    layers = [_as_node(cfg), overrides]
    arch = None
    for layer in layers:
        if isinstance(layer, dict | DictConfig) and layer.get("arch"):
            arch = layer.get("arch")
    if arch:
        layers.insert(0, read_config_file(prior_arch_path(str(arch))))
    return build_section(PriorConfig, "prior", *layers)


def data_config(cfg: DataConfig | DictConfig | dict | None = None, **overrides: Any) -> DataConfig:
    """A checked `DataConfig`; unknown keys or wrong types raise ConfigError naming `data.<key>`. One checked
    already (from the loader or from here, unchanged since) is returned as it is."""
    if isinstance(cfg, DataConfig) and not overrides and is_checked(cfg):
        return cfg
    merged = OmegaConf.structured(DataConfig)
    try:
        for layer in (cfg, overrides or None):
            if layer is not None:
                if dataclasses.is_dataclass(layer):  # its strings are literal (no `${...}`)
                    layer = OmegaConf.create(_escape_literals(dataclasses.asdict(layer)))
                refuse_resolvers(layer, "arguments", prefix="data")
                merged = OmegaConf.merge(merged, layer)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", "?")
        raise ConfigError(f"data.{key}: {str(getattr(err, 'msg', err)).splitlines()[0]}") from None
    check_values(merged, at="data", shown="data")
    return mark_checked(OmegaConf.to_object(merged))
