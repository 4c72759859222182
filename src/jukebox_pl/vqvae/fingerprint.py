"""Which VQ-VAE a set of codes belongs to: hashes of the weights that decide what a code means.

A prior learns the codes of one VQ-VAE; paired with another one's codebook it samples garbage (same shape) or
crashes (another codebook size). So a prior records `codes_fingerprint` of the VQ-VAE it was trained on (the
codebook, hop and codebook size of each level it reads: its own and, for upsamplers, the level above), and
sampling, `evaluate` and a resumed prior compare it with the VQ-VAE they are given (`check_pairing`).
`encode-shards` decides whether a code-shard folder may be resumed with `encoder_sha1` from here as well.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping

import torch

from jukebox_pl.config.levels import level_name
from jukebox_pl.errors import RefusedError

CODEBOOK = "bottleneck.k"
_warned: set[str] = set()  # priors already warned about (no recorded fingerprint), once per process


class VQVAEMismatch(RefusedError):
    """A prior and a VQ-VAE whose codes differ."""


def weights_sha1(state: Mapping[str, torch.Tensor], wanted) -> str:
    """sha1 (16 hex digits) of the tensors of `state` whose names `wanted(name)` accepts: names, dtypes, shapes
    and bytes, so a moved or re-exported file hashes the same and weights trained further do not."""
    h = hashlib.sha1()
    for name in sorted(state):
        if wanted(name):
            t = state[name].detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def encoder_sha1(state: Mapping[str, torch.Tensor]) -> str:
    """What decides the codes a level gives audio: its encoder and codebook (not the decoder, not EMA sums)."""
    return weights_sha1(state, lambda name: name.startswith("encoder.") or name == CODEBOOK)


def codebook_sha1(state: Mapping[str, torch.Tensor]) -> str:
    """What a level's codes mean to its decoder: the codebook."""
    return weights_sha1(state, lambda name: name == CODEBOOK)


def level_print(state: Mapping[str, torch.Tensor], hop: int) -> dict:
    """One level's entry of a fingerprint, from its state dict (without a `model.` prefix) and hop length."""
    return {"codebook": codebook_sha1(state), "hop": int(hop), "l_bins": int(state[CODEBOOK].shape[0])}


def codes_fingerprint(vqvae, level: int) -> dict:
    """{level name: {codebook, hop, l_bins}} of the levels a prior of `level` reads (its own and the one above)
    among those `vqvae` (a `jukebox_pl.vqvae.vqvae.VQVAE`) holds."""
    n = vqvae.n_levels
    out = {}
    for idx in (level, level + 1):
        if idx < n and idx in vqvae.available():
            out[level_name(idx, n)] = level_print(vqvae.level(idx).state_dict(), vqvae.hop_length(idx))
    return out


def mismatch(recorded: dict, actual: dict) -> str | None:
    """What differs between two fingerprints (levels present in both), e.g. `top codebook 1a2b... vs 3c4d...`;
    None when they agree."""
    parts = []
    for name in sorted(set(recorded) & set(actual)):
        for key in ("l_bins", "hop", "codebook"):
            if recorded[name].get(key) != actual[name].get(key):
                parts.append(f"{name} {key} {recorded[name].get(key)} vs {actual[name].get(key)}")
    return ", ".join(parts) or None


def check_pairing(
    recorded: dict | None, vqvae, level: int, prior: str, vqvae_what: str, allow: bool = False, hint: str = ""
) -> None:
    """Refuse (VQVAEMismatch, one line naming both files and what differs) a prior whose recorded fingerprint
    differs from `vqvae`'s; `allow` turns the refusal into a warning. A prior that records none (older files)
    is used with a warning, once per process."""
    if not recorded:
        if prior not in _warned:
            _warned.add(prior)
            warnings.warn(
                f"the prior {prior} does not record which VQ-VAE it was trained on: it is used with {vqvae_what} "
                "unchecked (retrain or re-import it to record one)",
                stacklevel=2,
            )
        return
    diff = mismatch(recorded, codes_fingerprint(vqvae, level))
    if diff is None:
        return
    message = (
        f"the prior {prior} was trained on the codes of another VQ-VAE than {vqvae_what} (prior vs VQ-VAE: {diff})"
    )
    if allow:
        warnings.warn(message + "; used anyway (--allow-mismatch)", stacklevel=2)
        return
    raise VQVAEMismatch(message + "; pair it with the VQ-VAE it was trained with" + hint)
