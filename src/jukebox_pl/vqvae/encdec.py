"""Strided-convolution encoders and transposed-convolution decoders of one VQ-VAE level.

Module names mirror the reference (`level_blocks.i.model...`, `out`) so its checkpoints load by a prefix
rename: our level-L encoder is the reference's `encoders.L`, our decoder its `decoders.L`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jukebox_pl.vqvae.resnet import Resnet1D


@dataclass(frozen=True)
class BlockSpec:
    """Width and residual-stack settings shared by the blocks of one level's encoder and decoder."""

    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    zero_out: bool = False
    res_scale: bool = False
    reverse_decoder_dilation: bool = True
    checkpoint_res: bool = False

    def resnet(self, decoder: bool) -> Resnet1D:
        return Resnet1D(
            self.width,
            self.depth,
            self.m_conv,
            self.dilation_growth_rate,
            self.dilation_cycle,
            self.zero_out,
            self.res_scale,
            reverse_dilation=decoder and self.reverse_decoder_dilation,
            checkpoint_res=self.checkpoint_res,
        )


class EncoderConvBlock(nn.Module):
    """down_t x [Conv1d(k=2s, stride s) -> Resnet1D], then Conv1d(width -> emb_width, k3)."""

    def __init__(self, in_width: int, emb_width: int, down_t: int, stride_t: int, spec: BlockSpec):
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(down_t):
            conv = nn.Conv1d(in_width if i == 0 else spec.width, spec.width, stride_t * 2, stride_t, stride_t // 2)
            blocks.append(nn.Sequential(conv, spec.resnet(decoder=False)))
        blocks.append(nn.Conv1d(spec.width, emb_width, 3, 1, 1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DecoderConvBlock(nn.Module):
    """Conv1d(emb_width -> width, k3), then down_t x [Resnet1D (reversed dilations) -> ConvTranspose1d]."""

    def __init__(self, out_width: int, emb_width: int, down_t: int, stride_t: int, spec: BlockSpec):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv1d(emb_width, spec.width, 3, 1, 1)]
        for i in range(down_t):
            width_out = out_width if i == down_t - 1 else spec.width
            up = nn.ConvTranspose1d(spec.width, width_out, stride_t * 2, stride_t, stride_t // 2)
            blocks.append(nn.Sequential(spec.resnet(decoder=True), up))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Encoder(nn.Module):
    """Raw audio (N, channels, T) -> latents (N, emb_width, T / hop) through the blocks of levels 0..L."""

    def __init__(self, channels: int, emb_width: int, downs_t: list[int], strides_t: list[int], spec: BlockSpec):
        super().__init__()
        self.level_blocks = nn.ModuleList(
            EncoderConvBlock(channels if i == 0 else emb_width, emb_width, d, s, spec)
            for i, (d, s) in enumerate(zip(downs_t, strides_t))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.level_blocks:
            x = block(x)
        return x


class Decoder(nn.Module):
    """Latents (N, emb_width, T / hop) -> audio (N, channels, T), the encoder's mirror image."""

    def __init__(self, channels: int, emb_width: int, downs_t: list[int], strides_t: list[int], spec: BlockSpec):
        super().__init__()
        self.level_blocks = nn.ModuleList(
            DecoderConvBlock(emb_width, emb_width, d, s, spec) for d, s in zip(downs_t, strides_t)
        )
        self.out = nn.Conv1d(emb_width, channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.level_blocks):
            z = block(z)
        return self.out(z)
