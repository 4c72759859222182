"""Dilated 1-D residual stacks, the body of every VQ-VAE encoder and decoder block."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class ResConv1DBlock(nn.Module):
    """x + res_scale * Conv1x1(ReLU(Conv3(ReLU(x), dilation))); `zero_out` starts it as the identity."""

    def __init__(self, width: int, inner: int, dilation: int = 1, zero_out: bool = False, res_scale: float = 1.0):
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(width, inner, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(inner, width, 1, 1, 0),
        )
        if zero_out:
            nn.init.zeros_(self.model[-1].weight)
            nn.init.zeros_(self.model[-1].bias)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.model(x)


class Resnet1D(nn.Module):
    """`depth` residual blocks with dilation growth**(i or i % cycle); the decoder uses them reversed.

    `checkpoint_res` recomputes each block in the backward pass instead of storing its activations, which
    cuts activation memory of long audio crops roughly by the depth at ~30% more compute.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        m_conv: float = 1.0,
        dilation_growth_rate: int = 1,
        dilation_cycle: int | None = None,
        zero_out: bool = False,
        res_scale: bool = False,
        reverse_dilation: bool = False,
        checkpoint_res: bool = False,
    ):
        super().__init__()
        scale = 1.0 / math.sqrt(depth) if res_scale else 1.0
        blocks = [
            ResConv1DBlock(
                width,
                int(m_conv * width),
                dilation=dilation_growth_rate ** (i if dilation_cycle is None else i % dilation_cycle),
                zero_out=zero_out,
                res_scale=scale,
            )
            for i in range(depth)
        ]
        if reverse_dilation:
            blocks = blocks[::-1]
        self.checkpoint_res = checkpoint_res
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_res and self.training and torch.is_grad_enabled():
            for block in self.model:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.model(x)
