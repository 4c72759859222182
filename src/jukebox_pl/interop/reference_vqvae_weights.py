"""Map the reference's VQ-VAE state dict (all levels in one model) onto our per-level modules.

The reference keeps `encoders.L.*`, `decoders.L.*` and `bottleneck.level_blocks.L.k` for every level L in one
state dict; our level L owns `encoder.*`, `decoder.*`, `bottleneck.k` plus the EMA statistics the reference
held as plain attributes (restarted from the codebook on import, like the reference's `restore_k`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jukebox_pl.errors import UserKeyError


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released files may carry DataParallel's `module.` prefix; accept both."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def unwrap_checkpoint(obj) -> dict[str, torch.Tensor]:
    """A reference checkpoint file holds {'hps', 'model', 'opt', 'step'}; a bare state dict is accepted too."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    return strip_module_prefix(obj)


def reference_levels(state: Mapping[str, torch.Tensor]) -> int:
    return len({k.split(".")[1] for k in state if k.startswith("encoders.")})


def level_state_from_reference(state: Mapping[str, torch.Tensor], level: int) -> dict[str, torch.Tensor]:
    """Our `VQVAELevelModel` state dict (weights + codebook `k`) for one level of a reference VQ-VAE."""
    state = unwrap_checkpoint(state)
    if f"bottleneck.level_blocks.{level}.k" not in state:
        raise UserKeyError(f"the reference state dict has no level {level} (it has {reference_levels(state)} levels)")
    out: dict[str, torch.Tensor] = {}
    for prefix, ours in ((f"encoders.{level}.", "encoder."), (f"decoders.{level}.", "decoder.")):
        for key, value in state.items():
            if key.startswith(prefix):
                out[ours + key[len(prefix) :]] = value.float()
    out["bottleneck.k"] = state[f"bottleneck.level_blocks.{level}.k"].float()
    return out


def load_reference_level(model, state: Mapping[str, torch.Tensor], num_tokens: int | None = None) -> None:
    """Load a reference level into `model` (a VQVAELevelModel) and restart its EMA statistics from `k`."""
    mapped = level_state_from_reference(state, model.level)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("bottleneck.") and not k.startswith("spectral.")]
    if missing or unexpected:
        raise UserKeyError(
            f"reference level {model.level} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.bottleneck.restore_ema(num_tokens)
