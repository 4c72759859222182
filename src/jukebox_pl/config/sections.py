"""Build one config section (a VQ-VAE, a prior) from whatever a user has at hand: a schema dataclass, a plain
dict, an OmegaConf node or keyword arguments. Unknown keys and wrong types are errors naming the key; a prior's
`arch` (a file in `configs/priors/`) is honoured wherever it is given, beneath the values given with it."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jukebox_pl.config.loader import _explain, check_values, prior_arch_path, read_config_file, refuse_resolvers
from jukebox_pl.config.schema import PriorConfig, VQVAEConfig


def _as_node(cfg: Any) -> DictConfig | dict:
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return OmegaConf.structured(cfg)
    return cfg


# The pattern of each section's keys in the rules of jukebox_pl.config.checks (a prior's level is not known here).
SECTION_PATTERNS = {"vqvae": "vqvae", "prior": "prior.*"}


def build_section(schema: type, section: str, *layers: Any) -> DictConfig:
    """schema defaults <- each layer in turn; a ConfigError names `<section>.<key>` for a bad key or value
    (unknown, mistyped, out of its range, or a resolver call such as `${oc.env:...}` in a checkpoint's hparams)."""
    base = OmegaConf.structured(schema)
    merged = base
    for layer in layers:
        node = _as_node(layer)
        refuse_resolvers(node, "arguments", prefix=section)
        try:
            merged = OmegaConf.merge(merged, node)
        except OmegaConfBaseException as err:
            raised = _explain(err, base, "arguments")
            raise type(raised)(str(raised).replace("'", f"'{section}.", 1)) from None
    check_values(merged, at=SECTION_PATTERNS.get(section, section), shown=section)
    return merged


# Old names still found in saved checkpoints and configs -> today's (the reference's loss was called "jukebox").
RENAMED_SPECTRAL_MODES = {"jukebox": "reference"}


def vqvae_config(cfg: VQVAEConfig | DictConfig | dict | None = None, **overrides: Any) -> DictConfig:
    """A validated `vqvae` section: `vqvae_config(levels=2, l_bins=512)` or `vqvae_config(VQVAEConfig(...))`.
    A checkpoint saved with `spectral_mode: jukebox` loads as `reference` (the same loss, renamed)."""
    merged = build_section(VQVAEConfig, "vqvae", cfg, overrides)
    merged.spectral_mode = RENAMED_SPECTRAL_MODES.get(merged.spectral_mode, merged.spectral_mode)
    return merged


def prior_config(cfg: PriorConfig | DictConfig | dict | None = None, **overrides: Any) -> DictConfig:
    """A validated prior section; `arch` (given in `cfg` or as a keyword) loads `configs/priors/<arch>.yaml`
    first, so `prior_config({"arch": "tiny_prior"})` is the tiny prior, and `width=...` still wins."""
    layers = [_as_node(cfg), overrides]
    arch = None
    for layer in layers:
        if isinstance(layer, dict | DictConfig) and layer.get("arch"):
            arch = layer.get("arch")
    if arch:
        layers.insert(0, read_config_file(prior_arch_path(str(arch))))
    return build_section(PriorConfig, "prior", *layers)
