"""A VQ-VAE-2-style *hierarchical* (combined) VQ-VAE: the ablation the Jukebox paper compares its separate
per-level autoencoders against.

Here all levels share one decoder path and one reconstruction loss (Razavi et al. 2019): the encoders are
chained bottom-up, every level quantises its own latents, and the decoder works top-down, each lower level
seeing its own codes next to the upsampled signal from above. The paper's point is that this model loses its
upper levels: the bottom level's codes (the skip path at the finest hop) can carry the whole reconstruction.
On real music (README "Real music") the upper codebooks still spread their codes, but the decoder ignores the
top: random top codes cost 0.0 dB, which `bench/paper.py` measures by scrambling one level at a time.
`jukebox_pl.vqvae.lightning.HierarchicalVQVAEModule` trains it next to `VQVAELevel`, with the same config,
losses and logging (per-level held-out code use in `val/level{l}_codes_used`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from jukebox_pl.config.levels import hop_lengths
from jukebox_pl.config.schema import VQVAEConfig
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.errors import UserValueError
from jukebox_pl.vqvae.bottleneck import Bottleneck
from jukebox_pl.vqvae.encdec import DecoderConvBlock, EncoderConvBlock
from jukebox_pl.vqvae.losses import Bandwidth, SpectralLosses
from jukebox_pl.vqvae.model import block_spec, check_audio, reconstruction_loss


@dataclass
class HierarchicalOutput:
    recon: torch.Tensor  # (N, C, T): the one reconstruction, from every level's codes
    codes: list[torch.Tensor]  # one (N, T / hop_l) tensor per level, bottom first
    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # "level{l}/<bottleneck metric>"


class HierarchicalVQVAE(nn.Module):
    """All levels in one autoencoder with one waveform loss (the paper's ablation).

    - Encoders, bottom-up: level 0 maps audio to latents at hop h0; level l maps level l-1's *pre-quantisation*
      latents (emb_width channels) to latents at hop h_l. Each level has its own EMA codebook (`Bottleneck`).
    - Decoders, top-down: the top level's code vectors are decoded up to the resolution of the level below;
      every lower level's decoder takes its own code vectors **concatenated** (channels) with that upsampled
      signal (as VQ-VAE-2 does: the signal from above need not live in this level's codebook space), and the
      bottom decoder ends in a Conv1d to the audio channels, so there is one reconstruction.
    - Loss: the waveform terms, `multispectral` (and `spectral`) as in `VQVAELevelModel`, plus `commit` times
      the sum of the levels' commitment losses, normalised by the same `Bandwidth`.
    """

    def __init__(self, cfg: VQVAEConfig | DictConfig | dict | None = None, **overrides: Any):
        super().__init__()
        cfg = vqvae_config(cfg, **overrides)  # checked: one downs_t / strides_t / multipliers entry per level
        self.cfg, self.levels = cfg, cfg.levels
        specs = [block_spec(cfg, level) for level in range(cfg.levels)]
        pairs = list(zip(cfg.downs_t, cfg.strides_t))
        self.encoders = nn.ModuleList(
            EncoderConvBlock(cfg.channels if level == 0 else cfg.emb_width, cfg.emb_width, d, s, specs[level])
            for level, (d, s) in enumerate(pairs)
        )
        top = cfg.levels - 1
        self.decoders = nn.ModuleList(
            DecoderConvBlock(cfg.emb_width, cfg.emb_width * (1 if level == top else 2), d, s, specs[level])
            for level, (d, s) in enumerate(pairs)
        )
        self.out = nn.Conv1d(cfg.emb_width, cfg.channels, 3, 1, 1)
        self.bottlenecks = nn.ModuleList(
            Bottleneck(cfg.l_bins, cfg.emb_width, cfg.mu, cfg.revival_threshold, cfg.revival_relative)
            for _ in range(cfg.levels)
        )
        self.hop_lengths = hop_lengths(cfg.downs_t, cfg.strides_t)
        self.hop_length = self.hop_lengths[-1]
        self.spectral = SpectralLosses.from_config(cfg)

    def _check_length(self, x: torch.Tensor) -> None:
        check_audio(x, self.cfg.channels, self.hop_length, "the top level's hop")

    def _latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-quantisation latents of every level, bottom first (each encoder reads the one below)."""
        latents = []
        for encoder in self.encoders:
            x = encoder(x)
            latents.append(x)
        return latents

    def _decode(self, quantised: list[torch.Tensor]) -> torch.Tensor:
        """Code vectors of every level (bottom first) -> audio, top-down."""
        z = None
        for level in reversed(range(self.levels)):
            q = quantised[level]
            z = self.decoders[level](q if z is None else torch.cat([q, z], dim=1))
        return self.out(z)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Audio (N, C, T) -> codes per level, bottom first, (N, ceil(T / top hop) * top hop / hop_l) each;
        pads the end with zeros to a multiple of the top hop."""
        pad = (-x.shape[-1]) % self.hop_length
        if pad:
            x = nn.functional.pad(x, (0, pad))
        self._check_length(x)
        return [b.encode(z) for b, z in zip(self.bottlenecks, self._latents(x))]

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Codes per level (bottom first, as `encode` gives them) -> audio (N, C, T)."""
        if len(codes) != self.levels:
            raise UserValueError(f"expected codes for all {self.levels} levels (bottom first), got {len(codes)}")
        lengths = {c.shape[-1] * hop for c, hop in zip(codes, self.hop_lengths)}
        if len(lengths) != 1:
            shapes = [tuple(c.shape) for c in codes]
            raise UserValueError(f"codes of the levels {shapes} do not span the same audio (hops {self.hop_lengths})")
        return self._decode([b.decode(c) for b, c in zip(self.bottlenecks, codes)])

    def forward(self, x: torch.Tensor, bandwidth: Bandwidth | None = None) -> HierarchicalOutput:
        """Encode, quantise every level (updating the codebooks in training), decode once, compute the loss."""
        self._check_length(x)
        outs = [b(z) for b, z in zip(self.bottlenecks, self._latents(x))]
        recon = self._decode([q.quantised for q in outs])
        commit = sum(q.commit_loss for q in outs)
        loss, terms = reconstruction_loss(self.cfg, self.spectral, x, recon, bandwidth or Bandwidth(), commit)
        terms.update({f"commit_level{level}": q.commit_loss for level, q in enumerate(outs)})
        metrics = {f"level{level}/{k}": v for level, q in enumerate(outs) for k, v in q.metrics.items()}
        return HierarchicalOutput(recon, [q.codes for q in outs], loss, terms, metrics)
