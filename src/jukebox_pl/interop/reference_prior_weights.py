"""Map the reference's prior state dicts (Conv1D weights stored (n_in, n_out), fp16 weights) onto our modules."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jukebox_pl.errors import UserKeyError
from jukebox_pl.interop.reference_vqvae_weights import unwrap_checkpoint


def reference_key(key: str) -> tuple[str, bool]:
    """A reference key -> (our key, whether the tensor is a transposed Conv1D weight)."""
    if key.startswith("conditioner_blocks."):
        # the reference's checkpointed Resnet1D keeps its blocks in `.blocks`, ours always in `.model`
        key = key.replace(".blocks.", ".model.")
    if key.endswith(".w"):
        return key[:-2] + ".weight", True
    if key.endswith(".b"):
        return key[:-2] + ".bias", False
    return key, False


def prior_state_from_reference(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
    """Our state dict from a reference prior's (`prior.*`, `y_emb.*`, `prime_prior.*`, ...), in fp32.

    With `prefix` (e.g. "prior."), only keys under it are taken and the prefix is dropped."""
    out = {}
    for key, value in unwrap_checkpoint(state).items():
        if not key.startswith(prefix):
            continue
        name, transposed = reference_key(key[len(prefix) :])
        value = value.float()
        out[name] = value.t().contiguous() if transposed else value
    return out


def transformer_state_from_reference(state: Mapping[str, torch.Tensor], prefix: str = "prior.") -> dict:
    """Our AutoregressiveTransformer state dict from the reference's `prior.*` keys."""
    return prior_state_from_reference(state, prefix)


def load_reference_transformer(model, state: Mapping[str, torch.Tensor], prefix: str = "prior.") -> None:
    load_reference_prior(model, state, prefix)


def load_reference_prior(model, state: Mapping[str, torch.Tensor], prefix: str = "") -> None:
    """Load a reference prior state dict into `model`; any key that does not fit is named."""
    mapped = prior_state_from_reference(state, prefix)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise UserKeyError(f"reference prior does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
