"""Low-rank adapters (LoRA) for the prior's attention and MLP projections, and merging them back.

Fine-tuning a 1-5 B parameter prior on a few songs of a new artist should train a few million numbers, not all
of them: each projection W keeps its weights frozen and learns W + (alpha / rank) * B @ A, with A (rank x in)
random and B (out x rank) zero at the start, so the adapted model starts exactly as the base. Our own small
module rather than `peft`: the prior's projections are plain `nn.Linear`s reached by name inside our blocks,
and the sampler's fast path (`linear_rows`) needs to tell an adapted projection from a plain one; `peft`'s
module wrapping and its PeftModel indirection would add nothing here but a dependency.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PROJECTIONS = ("c_attn", "c_enc_kv", "c_proj", "c_fc")  # attention and MLP projections of a block


class LoRALinear(nn.Module):
    """`base(x) + scale * (x @ A^T) @ B^T` with `base` frozen; `merged()` folds the adapter into one Linear."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank = rank
        # saved with the adapters, so a checkpoint's adapters merge without knowing how they were made
        self.register_buffer("lora_scale", torch.tensor((alpha if alpha is not None else rank) / rank))
        weight = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.lora_scale.to(x.dtype)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """One Linear computing the same function (what `export --merge` writes)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None)
        out = out.to(device=self.base.weight.device, dtype=self.base.weight.dtype)
        out.weight.copy_(self.base.weight + self.lora_scale * (self.lora_b @ self.lora_a))
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out.requires_grad_(False)


def _projections(model: nn.Module):
    """(parent module, attribute name, module) of every block projection, in a fixed order."""
    from jukebox_pl.prior.transformer import ResAttnBlock

    for block in (m for m in model.modules() if isinstance(m, ResAttnBlock)):
        for parent in (block.attn, block.mlp):
            for name in PROJECTIONS:
                child = getattr(parent, name, None)
                if isinstance(child, nn.Linear | LoRALinear):
                    yield parent, name, child


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> int:
    """Wrap every attention and MLP projection of the model's transformer blocks (the prior's, the lyrics
    encoder's) in a LoRALinear; every other parameter is left as it is. Returns the adapter parameter count."""
    count = 0
    for parent, name, child in list(_projections(model)):
        if isinstance(child, LoRALinear):
            continue
        adapter = LoRALinear(child, rank, alpha)
        setattr(parent, name, adapter)
        count += adapter.lora_a.numel() + adapter.lora_b.numel()
    return count


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by its merged Linear, in place: the plain model, with the base's key names."""
    for parent, name, child in list(_projections(model)):
        if isinstance(child, LoRALinear):
            setattr(parent, name, child.merged())
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (what a LoRA run trains besides the label tables)."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


def merge_lora_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with adapters (`P.base.weight`, `P.lora_a`, `P.lora_b`, `P.lora_scale`) -> the plain state
    dict with `P.weight = base + scale * B @ A` (what `jukebox-pl export --merge` writes); others unchanged."""
    out = {}
    for key, value in state.items():
        if key.endswith(".lora_a") or key.endswith(".lora_b") or key.endswith(".lora_scale"):
            continue
        if ".base." in key:
            prefix, _, leaf = key.rpartition(".base.")
            if f"{prefix}.lora_a" in state:
                if leaf == "weight":
                    a, b = state[f"{prefix}.lora_a"].float(), state[f"{prefix}.lora_b"].float()
                    value = (value.float() + state[f"{prefix}.lora_scale"].float() * (b @ a)).to(value.dtype)
                out[f"{prefix}.{leaf}"] = value
                continue
        out[key] = value
    return out
