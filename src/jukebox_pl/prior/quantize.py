"""Int8 weight-only storage for sampling: 4x fewer weight bytes read per token, fp32 accumulation.

Batch-1 sampling reads every weight once per token, so on a CPU it runs at memory bandwidth: a 161 M parameter
prior in fp32 cannot go faster than ~37 tokens/s on 25 GB/s. Storing the transformer's linear weights as int8
with one bf16 scale per output channel and multiplying with `torch._weight_int8pack_mm` (which dequantises in
registers and accumulates in fp32) halves the time of every linear layer at batch 1..16. Inference only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jukebox_pl.errors import UserValueError


class Int8Linear(nn.Module):
    """An `nn.Linear` with int8 weights and per-output-channel scales (no gradients)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.register_buffer("weight_int8", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    packed = True  # torch's int8 weight-only kernel (CPU, and CUDA builds that have it); else dequantise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = None
        if self.packed:
            try:
                y = torch._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(), self.weight_int8, self.scale)
            except (RuntimeError, NotImplementedError):  # no kernel for this device: dequantise from now on
                self.packed = False
        if y is None:  # in the activations' half precision when they have one (a GPU's bf16 / fp16), not fp32
            dtype = x2.dtype if x2.dtype in (torch.float16, torch.bfloat16) else torch.float32
            y = F.linear(x2.to(dtype), self.weight_int8.to(dtype) * self.scale.to(dtype)[:, None])
        y = y.float()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)


class VectorLinear(nn.Linear):
    """An `nn.Linear` that multiplies a single bf16 row by its weights with `torch.addmv` on the CPU.

    At batch 1 every token is one row, and torch's bf16 `linear` for one row reads the weights at ~15-18 GB/s on
    this CPU where its matrix-vector kernel reads them at 24-26 GB/s (`bench/prior.py --roofline`); more rows (a
    batch, a prompt) keep `linear`, which uses the matrix units. Same parameters, same state-dict keys."""

    @classmethod
    def sharing(cls, linear: nn.Linear) -> VectorLinear:
        """A VectorLinear holding `linear`'s own parameters (nothing copied)."""
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.in_features, out.out_features = linear.in_features, linear.out_features
        out.weight, out.bias = linear.weight, linear.bias
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() != self.in_features or x.device.type != "cpu" or x.dtype != torch.bfloat16:
            return super().forward(x)
        row = x.reshape(-1)
        y = torch.mv(self.weight, row) if self.bias is None else torch.addmv(self.bias, self.weight, row)
        return y.reshape(*x.shape[:-1], self.out_features)


def block_linears(model: nn.Module):
    """(parent, name, linear) for the linear layers of every transformer block (attention and MLP)."""
    from jukebox_pl.prior.transformer import ResAttnBlock

    for block in [m for m in model.modules() if isinstance(m, ResAttnBlock)]:
        for parent in (block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    yield parent, name, child


def use_vector_kernel(model: nn.Module) -> nn.Module:
    """Give the blocks' linear layers the one-row bf16 path of `VectorLinear` (for `--weights bf16`)."""
    for parent, name, child in block_linears(model):
        if type(child) is nn.Linear:
            setattr(parent, name, VectorLinear.sharing(child))
    return model


def quantize_weights(model: nn.Module, mode: str = "int8") -> nn.Module:
    """Replace the linear layers of every transformer block (attention and MLP) in place; `fp32` is a no-op.

    Embeddings, the output head and the conditioners keep their weights (small, or tied to the embedding)."""
    if mode in ("fp32", "none"):
        return model
    if mode != "int8":
        raise UserValueError(f"unknown weight storage {mode!r}; choose fp32 or int8")
    for parent, name, child in block_linears(model):
        setattr(parent, name, Int8Linear(child))
    return model.eval().requires_grad_(False)
