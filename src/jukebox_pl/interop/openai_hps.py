"""The reference's hyperparameters -> our configs: the released sets by name, or a reference `hps` dict.

The reference keeps one flat dict for a model (VQ-VAE and prior keys side by side: `width` is the VQ-VAE's,
`prior_width` the prior's). The released sets are our named presets (configs/jukebox.yaml and
configs/priors/*.yaml, checked against the released key lists); a dict from a model someone trained with the
reference code is translated key by key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jukebox_pl.config.levels import LEVEL_NAMES, Levels
from jukebox_pl.config.loader import load_config
from jukebox_pl.config.typed import plain, run_config
from jukebox_pl.errors import MissingInputError, UserKeyError, UserValueError

# released set name -> (our prior architecture, level name); "vqvae" is the VQ-VAE
RELEASED_PRIORS = {
    "5b": ("prior_5b", "top"),
    "5b_lyrics": ("prior_5b_lyrics", "top"),
    "1b_lyrics": ("prior_1b_lyrics", "top"),
    "upsampler_level_1": ("upsampler_level_1", "middle"),
    "upsampler_level_0": ("upsampler_level_0", "bottom"),
}
RELEASED = ("vqvae", *RELEASED_PRIORS)
RELEASED_SAMPLE_RATE = 44100

# reference key -> our VQ-VAE key (values copied as they are)
VQVAE_KEYS = {
    "levels": "levels",
    "downs_t": "downs_t",
    "strides_t": "strides_t",
    "emb_width": "emb_width",
    "l_bins": "l_bins",
    "l_mu": "mu",
    "commit": "commit",
    "revival_threshold": "revival_threshold",
    "width": "width",
    "depth": "depth",
    "m_conv": "m_conv",
    "dilation_growth_rate": "dilation_growth_rate",
    "dilation_cycle": "dilation_cycle",
    "hvqvae_multipliers": "multipliers",
    "vqvae_reverse_decoder_dilation": "reverse_decoder_dilation",
    "linf_k": "linf_k",
    "multispectral": "multispectral",
    "spectral": "spectral",
    "lmix_l1": "loss_l1",
    "lmix_linf": "loss_linf",
}
# reference key -> our prior key
PRIOR_KEYS = {
    "n_ctx": "n_ctx",
    "prior_width": "width",
    "prior_depth": "depth",
    "heads": "heads",
    "attn_order": "attn_order",
    "blocks": "blocks",
    "m_attn": "m_attn",
    "m_mlp": "m_mlp",
    "init_scale": "init_scale",
    "merged_decoder": "merged_decoder",
    "labels": "labels",
    "t_bins": "t_bins",
    "min_duration": "min_duration",
    "max_duration": "max_duration",
    "n_tokens": "n_tokens",
    "prime_loss_fraction": "prime_loss_fraction",
    "prime_width": "prime_width",
    "prime_depth": "prime_depth",
    "prime_heads": "prime_heads",
    "prime_attn_order": "prime_attn_order",
    "prime_blocks": "prime_blocks",
    "prime_m_attn": "prime_m_attn",
    "prime_m_mlp": "prime_m_mlp",
    "prime_init_scale": "prime_init_scale",
    "prime_zero_out": "prime_zero_out",
    "prime_res_scale": "prime_res_scale",
    "cond_width": "cond_width",
    "cond_depth": "cond_depth",
    "cond_m_conv": "cond_m_conv",
    "cond_dilation_growth_rate": "cond_dilation_growth_rate",
    "cond_dilation_cycle": "cond_dilation_cycle",
    "cond_zero_out": "cond_zero_out",
    "cond_res_scale": "cond_res_scale",
    "alignment_layer": "alignment_layer",
    "alignment_head": "alignment_head",
}


@dataclass
class ModelSpec:
    """What one reference file holds, in our terms."""

    kind: str  # "vqvae" or "prior"
    vqvae: dict[str, Any]  # our VQ-VAE config (a prior needs it too: hops, code bins)
    sample_rate: int
    prior: dict[str, Any] | None = None
    level: str | None = None  # a prior's level name
    source: str = ""  # the set name or the JSON file, for messages

    @property
    def levels(self) -> Levels:
        """The levels of the VQ-VAE this file belongs to (names, hops, the level above each)."""
        return Levels.from_vqvae(self.vqvae, self.sample_rate)


def read_hps(value: str | dict) -> dict | str:
    """`--hps`: a released set name, or a JSON file holding the reference's hparams dict."""
    if isinstance(value, dict):
        return value
    if value in RELEASED:
        return value
    path = Path(value)
    if path.suffix != ".json":
        raise UserKeyError(f"--hps {value!r} is neither a released set ({', '.join(RELEASED)}) nor a .json file")
    if not path.is_file():
        raise MissingInputError(f"--hps file {path} does not exist")
    try:
        hps = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserValueError(f"--hps file {path} is not valid JSON: {err}") from None
    if not isinstance(hps, dict):
        raise UserValueError(f"--hps file {path} holds a {type(hps).__name__}, not the reference's hparams dict")
    return hps


def released_vqvae() -> dict[str, Any]:
    return plain(run_config(load_config("jukebox")).vqvae)


def released_spec(name: str) -> ModelSpec:
    vqvae = released_vqvae()
    if name == "vqvae":
        return ModelSpec("vqvae", vqvae, RELEASED_SAMPLE_RATE, source=name)
    arch, level = RELEASED_PRIORS[name]
    prior = plain(getattr(run_config(load_config("jukebox", [f"prior.{level}.arch={arch}"])).prior, level))
    return ModelSpec("prior", vqvae, RELEASED_SAMPLE_RATE, prior=prior, level=level, source=name)


def _require(hps: dict, key: str, where: str):
    if key not in hps:
        raise UserKeyError(f"{where} has no {key!r}: it is not a reference hparams dict")
    return hps[key]


def vqvae_from_hps(hps: dict, where: str) -> dict[str, Any]:
    """Our VQ-VAE config from the VQ-VAE keys of a reference hparams dict (the rest keeps our defaults)."""
    for key in ("levels", "downs_t", "strides_t", "l_bins", "emb_width"):
        _require(hps, key, where)
    out = {ours: hps[ref] for ref, ours in VQVAE_KEYS.items() if ref in hps and hps[ref] is not None}
    out["downs_t"], out["strides_t"] = list(out["downs_t"]), list(out["strides_t"])
    if out.get("multipliers") is not None:
        out["multipliers"] = list(out["multipliers"])
    top_hop = math.prod(s**d for s, d in zip(out["strides_t"], out["downs_t"], strict=False))
    out["sample_length"] = top_hop * max(1, 32768 // top_hop)  # training crops: any multiple of the top hop
    return out


def prior_from_hps(hps: dict, where: str) -> tuple[dict[str, Any], str]:
    """Our prior config and level name from a reference hparams dict (`level` counts from the bottom)."""
    levels, level = int(_require(hps, "levels", where)), int(_require(hps, "level", where))
    out = {ours: hps[ref] for ref, ours in PRIOR_KEYS.items() if ref in hps and hps[ref] is not None}
    use_tokens = bool(hps.get("use_tokens", False))
    out["lyrics"] = ("merged" if hps.get("single_enc_dec") else "encoder") if use_tokens else "none"
    if not use_tokens:
        out["n_tokens"] = 0
    out["lyrics_vocab"] = "v3" if hps.get("labels_v3") else "v2"
    y_bins = hps.get("y_bins")
    out["y_bins"] = list(y_bins) if isinstance(y_bins, list | tuple) and out.get("labels") else None
    out["checkpoint_res"] = bool(hps.get("c_res", 0))
    out["cond_checkpoint_res"] = bool(hps.get("cond_c_res", 0))
    out["prime_checkpoint_res"] = bool(hps.get("prime_c_res", 0))
    if levels not in LEVEL_NAMES or not 0 <= level < levels:
        raise UserValueError(f"{where}: level {level} of {levels} levels is not a level jukebox-pl knows")
    return out, LEVEL_NAMES[levels][level]


def spec_from_hps(hps: dict | str, kind: str, where: str) -> ModelSpec:
    """The spec of a file of `kind` ("vqvae" or "prior") from a released name or a reference hparams dict."""
    if isinstance(hps, str):
        spec = released_spec(hps)
        if spec.kind != kind:
            raise UserValueError(f"--hps {hps} describes a {spec.kind}, but {where} was given as a {kind}")
        return spec
    sample_rate = int(_require(hps, "sr", where))
    vqvae = vqvae_from_hps(hps, where)
    if kind == "vqvae":
        return ModelSpec("vqvae", vqvae, sample_rate, source=where)
    prior, level = prior_from_hps(hps, where)
    return ModelSpec("prior", vqvae, sample_rate, prior=prior, level=level, source=where)
