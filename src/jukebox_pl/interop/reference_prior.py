"""Map the reference's prior state dict (`prior.*`, Conv1D weights stored (n_in, n_out)) onto our modules."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from jukebox_pl.interop.reference_vqvae import unwrap_checkpoint


def transformer_state_from_reference(state: Mapping[str, torch.Tensor], prefix: str = "prior.") -> dict:
    """Our AutoregressiveTransformer state dict from the reference's `prior.*` keys (fp16 weights -> fp32)."""
    state = unwrap_checkpoint(state)
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.endswith(".w"):  # the reference's Conv1D: (n_in, n_out) -> nn.Linear (n_out, n_in)
            out[name[:-2] + ".weight"] = value.float().t().contiguous()
        elif name.endswith(".b"):
            out[name[:-2] + ".bias"] = value.float()
        else:
            out[name] = value.float()
    return out


def load_reference_transformer(model, state: Mapping[str, torch.Tensor], prefix: str = "prior.") -> None:
    mapped = transformer_state_from_reference(state, prefix)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise KeyError(f"reference prior does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
