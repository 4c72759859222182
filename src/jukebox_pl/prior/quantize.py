"""Weight storage for sampling (`sample --weights`): fewer weight bytes read per token, fp32 accumulation.

Batch-1 sampling reads every weight once per token, so on a CPU it runs at memory bandwidth: a 161 M parameter
prior in fp32 cannot go faster than ~37 tokens/s on 25 GB/s (`bench/roofline.py`). The blocks' linear layers can
be stored as int8 (one bf16 scale per output channel, `torch._weight_int8pack_mm`: 4x fewer bytes) or int4 (a
bf16 scale and offset per 128 inputs, `torch._weight_int4pack_mm_for_cpu`: 8x fewer); both kernels dequantise
in registers and accumulate in fp32. bf16 weights (`--weights bf16`) multiply one row with `torch.addmv`
(`VectorLinear`). Inference only.
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
        # torch's int8 weight-only kernel (CPU, and CUDA builds that have it), else dequantise. Its CPU kernel
        # returns wrong numbers (up to 1e37) when the inputs are not a multiple of 16 (torch 2.13): such layers
        # (only in small custom shapes; every released and preset shape is a multiple of 16) dequantise.
        self.packed = linear.in_features % 16 == 0

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


INT4_GROUPS = (128, 64, 32)  # what torch's int4 CPU kernel takes; the largest that divides a layer's inputs


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, K) integers 0..15 -> (N, K / 2) uint8, even columns in the low nibble."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `_pack_nibbles`: (N, K / 2) uint8 -> (N, K) int32."""
    low, high = packed & 15, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1).to(torch.int32)


class Int4Linear(nn.Module):
    """An `nn.Linear` with 4-bit weights in groups of 128 inputs (64 or 32 where 128 does not divide them), with a
    bf16 scale and offset per group and output (w = (q - 8) * scale + offset), for batch-1 sampling on a CPU: 8x
    fewer weight bytes than fp32, multiplied by torch's int4 CPU kernel (`torch._weight_int4pack_mm_for_cpu`, which
    dequantises in registers and accumulates in fp32). The kernel wants outputs in multiples of 16 and inputs in
    multiples of 32: other layers are padded with zero weights. Other devices dequantise. Inference only, and
    coarser than int8 (the tests bound the loss it costs on the reference fixture)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        self.out_features, self.in_features = w.shape
        w = F.pad(w, (0, -self.in_features % INT4_GROUPS[-1], 0, -self.out_features % 16))
        n, k = w.shape
        self.group = next(g for g in INT4_GROUPS if k % g == 0)
        g = w.reshape(n, k // self.group, self.group)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).reshape(n, k)
        offset = lo + 8 * scale
        self.register_buffer("weight_int4", _pack_nibbles(q))
        self.register_buffer("scale_offset", torch.stack([scale.t(), offset.t()], -1).to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self._cpu_packed: torch.Tensor | None = None  # the CPU kernel's own layout, made on first use

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) weights these int4 values stand for."""
        q = _unpack_nibbles(self.weight_int4).to(dtype)
        so = self.scale_offset.to(dtype).repeat_interleave(self.group, dim=0)  # (in, out, 2)
        w = (q - 8) * so[..., 0].t() + so[..., 1].t()
        return w[: self.out_features, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.device.type == "cpu":
            if self._cpu_packed is None:
                self._cpu_packed = torch._convert_weight_to_int4pack_for_cpu(_unpack_nibbles(self.weight_int4), 1)
            xb = F.pad(x2.to(torch.bfloat16), (0, self.weight_int4.shape[1] * 2 - self.in_features)).contiguous()
            y = torch._weight_int4pack_mm_for_cpu(xb, self._cpu_packed, self.group, self.scale_offset)
            y = y[:, : self.out_features].float()
        else:  # in the activations' half precision when they have one, else fp32
            dtype = x2.dtype if x2.dtype in (torch.float16, torch.bfloat16) else torch.float32
            y = F.linear(x2.to(dtype), self.dequantized(dtype)).float()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)


class VectorLinear(nn.Linear):
    """An `nn.Linear` that multiplies a single bf16 row by its weights with `torch.addmv` on the CPU.

    At batch 1 every token is one row, and torch's bf16 `linear` reads the prior's matrices for one row at 8-15
    GB/s on this CPU where its matrix-vector kernel reads them at 9-18 GB/s (`bench/roofline.py`); more rows (a
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
    if mode not in QUANTIZED:
        raise UserValueError(f"unknown weight storage {mode!r}; choose fp32, int8 or int4")
    for parent, name, child in block_linears(model):
        setattr(parent, name, QUANTIZED[mode](child))
    return model.eval().requires_grad_(False)


QUANTIZED = {"int8": Int8Linear, "int4": Int4Linear}  # --weights: the storage of the blocks' linear layers
