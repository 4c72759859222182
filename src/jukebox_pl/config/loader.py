"""Load a preset by name, apply `key=value` overrides, validate against the schema, save what was used."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from jukebox_pl.config.schema import RunConfig
from jukebox_pl.errors import UserValueError

PRESETS = ("tiny", "small", "jukebox")

# Keys that used to exist under `data` but were read per stage: say where the setting lives now.
MOVED_KEYS = {
    "data.batch_size": "vqvae.batch_size / prior.<level>.batch_size",
    "data.val_batch_size": "vqvae.batch_size / prior.<level>.batch_size",
    "data.sample_length": "vqvae.sample_length (a prior's crop is its n_ctx x hop)",
    "data.channels": "vqvae.channels (priors read mono)",
    "data.n_lyric_tokens": "prior.top.n_tokens",
    "data.lyrics_vocab": "prior.top.lyrics_vocab",
    "data.seed": "seed",
}


class ConfigError(UserValueError):
    """A config problem, with the dotted key and the offending value in the message."""


def configs_dir() -> Path:
    """The folder of YAML presets: $JUKEBOX_PL_CONFIGS, else the package's `jukebox_pl/configs` (an installed
    wheel), else `configs/` of the source checkout this module runs from (editable install, PYTHONPATH=src)."""
    env = os.environ.get("JUKEBOX_PL_CONFIGS")
    if env:
        return Path(env)
    packaged = Path(str(resources.files("jukebox_pl") / "configs"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    return packaged  # absent: preset_path and prior_arch_path report that no preset was found


def preset_path(preset: str) -> Path:
    """A preset name (`tiny`, `small`, `jukebox`) or a path to a YAML file."""
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"config file {candidate} does not exist")
        return candidate
    path = configs_dir() / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known) or '(none found)'}")
    return path


def _known_keys(node: DictConfig, dotted: str) -> list[str]:
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    try:
        sub = OmegaConf.select(node, parent) if parent else node
    except OmegaConfBaseException:
        return []
    return list(sub.keys()) if isinstance(sub, DictConfig) else []


def _explain(err: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    if isinstance(err, ConfigKeyError) and str(key) in MOVED_KEYS:
        return ConfigError(
            f"config key {key!r} (from {source}) no longer exists: it is set per stage, as {MOVED_KEYS[str(key)]}"
        )
    if isinstance(err, ConfigKeyError):
        leaf = str(key).rsplit(".", 1)[-1]
        known = _known_keys(schema, str(key))
        close = difflib.get_close_matches(leaf, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys here: {', '.join(known)}"
        return ConfigError(f"unknown config key {key!r} (from {source}){hint}")
    if isinstance(err, ValidationError):
        return ConfigError(f"bad value for config key {key!r} (from {source}): {str(err.msg).splitlines()[0]}")
    return ConfigError(f"config error at {key!r} (from {source}): {err}")


def load_config(preset: str = "tiny", overrides: Sequence[str] = (), schema: type = RunConfig) -> DictConfig:
    """Merge schema <- preset YAML <- `key=value` overrides; raise ConfigError naming any bad key or value."""
    base = OmegaConf.structured(schema)
    merged = base
    path = preset_path(preset)
    sources = [(str(path), OmegaConf.load(path))]
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    if overrides:
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    merged = _merge(base, sources)
    arch_layers = _prior_arch_layers(merged)
    if arch_layers:
        merged = _merge(base, arch_layers + sources)
    merged.preset = path.stem
    try:
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _explain(err, base, "interpolation") from None
    return merged


def _merge(base: DictConfig, sources: list[tuple[str, DictConfig]]) -> DictConfig:
    merged = base
    for source, cfg in sources:
        try:
            merged = OmegaConf.merge(merged, cfg)
        except OmegaConfBaseException as err:
            raise _explain(err, base, source) from None
    return merged


def prior_arch_path(arch: str) -> Path:
    """`configs/priors/<arch>.yaml`: a named prior architecture (prior_5b_lyrics, small_prior, tiny_prior, ...)."""
    folder = configs_dir() / "priors"
    path = folder / f"{arch}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown prior arch {arch!r}; {hint}known: {', '.join(known)}")
    return path


def _prior_arch_layers(merged: DictConfig) -> list[tuple[str, DictConfig]]:
    """The architecture files named by `prior.<level>.arch`, to merge beneath the preset and the overrides."""
    layers = []
    if "prior" not in merged:
        return layers
    for level, section in merged.prior.items():
        arch = section.get("arch")
        if arch:
            path = prior_arch_path(arch)
            layers.append((str(path), OmegaConf.create({"prior": {level: OmegaConf.load(path)}})))
    return layers


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML text (what runs print and save)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write the resolved config next to a run so that it can be resumed or reproduced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))
    return path
