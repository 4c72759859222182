"""One VQ-VAE level as a plain nn.Module: audio -> codes at this level's hop -> audio, with its loss terms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from jukebox_pl.config.levels import hop_lengths, level_index, vqvae_section
from jukebox_pl.config.schema import VQVAEConfig
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.errors import UserValueError
from jukebox_pl.vqvae.bottleneck import Bottleneck
from jukebox_pl.vqvae.encdec import BlockSpec, Decoder, Encoder
from jukebox_pl.vqvae.losses import Bandwidth, SpectralLosses, recon_loss
from jukebox_pl.vqvae.pretrained import VQVAELevelPretrained


def check_audio(x: torch.Tensor, channels: int, hop: int, hop_name: str) -> None:
    """Audio a VQ-VAE can take whole: (batch, channels, samples) with samples a multiple of its hop."""
    if x.dim() != 3 or x.shape[1] != channels:
        raise UserValueError(f"expected audio shaped (batch, {channels}, samples), got {tuple(x.shape)}")
    if x.shape[-1] % hop:
        raise UserValueError(
            f"audio length {x.shape[-1]} is not a multiple of {hop_name} {hop}; "
            f"use a sample_length divisible by {hop} (or `encode`, which pads)"
        )


def block_spec(cfg: VQVAEConfig | DictConfig, level: int) -> BlockSpec:
    """The conv blocks of one level: the config's width and depth, times the level's multiplier."""
    mult = (cfg.multipliers or [1] * cfg.levels)[level]
    return BlockSpec(
        cfg.width * mult,
        cfg.depth * mult,
        cfg.m_conv,
        cfg.dilation_growth_rate,
        cfg.dilation_cycle,
        cfg.zero_out,
        cfg.res_scale,
        cfg.reverse_decoder_dilation,
        cfg.checkpoint_res,
    )


def reconstruction_loss(
    cfg, spectral: SpectralLosses, x: torch.Tensor, recon: torch.Tensor, bw: Bandwidth, commit: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The VQ-VAE loss of one reconstruction: waveform terms + multispectral (+ spectral) + commit, weighted by
    the config; returns (loss, every term by name). Shared by the separate levels and the hierarchical model."""
    target = x.float()
    terms = {"commit": commit}
    recons = recon.new_zeros(())
    for kind, weight in (("l1", cfg.loss_l1), ("l2", cfg.loss_l2), ("linf", cfg.loss_linf)):
        if weight:
            term = recon_loss(kind, target, recon, bw, cfg.linf_k)
            terms[f"recons_{kind}"] = term
            recons = recons + weight * term
    terms["recons"] = recons
    terms["multispectral"] = spectral.multispectral(target, recon, bw) if cfg.multispectral else recons * 0
    loss = recons + cfg.multispectral * terms["multispectral"] + cfg.commit * commit
    if cfg.spectral:
        terms["spectral"] = spectral.spectral(target, recon, bw)
        loss = loss + cfg.spectral * terms["spectral"]
    return loss, terms


@dataclass
class LevelOutput:
    recon: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class VQVAELevelModel(nn.Module, VQVAELevelPretrained):
    """The level-L autoencoder: encoder through levels 0..L, codebook of level L, its own decoder.
    `save_pretrained(folder)` / `from_pretrained(folder or Hub id)`: the Hub layout (`jukebox_pl.hub`)."""

    def __init__(self, cfg: VQVAEConfig | DictConfig | dict | None = None, level: int = 0, **overrides: Any):
        super().__init__()
        cfg = vqvae_config(cfg, **overrides)  # checked: one downs_t / strides_t / multipliers entry per level
        self.cfg, self.level = cfg, level
        spec = block_spec(cfg, level)
        downs, strides = list(cfg.downs_t[: level + 1]), list(cfg.strides_t[: level + 1])
        self.encoder = Encoder(cfg.channels, cfg.emb_width, downs, strides, spec)
        self.decoder = Decoder(cfg.channels, cfg.emb_width, downs, strides, spec)
        self.bottleneck = Bottleneck(cfg.l_bins, cfg.emb_width, cfg.mu, cfg.revival_threshold, cfg.revival_relative)
        self.hop_length = hop_lengths(downs, strides)[-1]
        self.spectral = SpectralLosses.from_config(cfg)

    def _check_length(self, x: torch.Tensor) -> None:
        check_audio(x, self.cfg.channels, self.hop_length, "this level's hop")

    # -- inference in chunks: long audio through cache-sized pieces, exact thanks to full context ----------
    def _dilation_sum(self) -> int:
        cfg, mult = self.cfg, (self.cfg.multipliers or [1] * self.cfg.levels)[self.level]
        depth = cfg.depth * mult
        return sum(
            cfg.dilation_growth_rate ** (i if cfg.dilation_cycle is None else i % cfg.dilation_cycle)
            for i in range(depth)
        )

    def encoder_context(self) -> int:
        """Samples of context either side that decide one code (the encoder's receptive field), hop-rounded."""
        ctx, scale, dil = 0, 1, self._dilation_sum()
        for d, s in zip(self.cfg.downs_t[: self.level + 1], self.cfg.strides_t[: self.level + 1]):
            for _ in range(d):
                ctx += s * scale
                scale *= s
                ctx += dil * scale
            ctx += scale  # the k3 conv to emb_width
        return -(-ctx // self.hop_length) * self.hop_length + self.hop_length

    def decoder_context(self) -> int:
        """Codes of context either side that decide one output sample (the decoder's receptive field)."""
        ctx, scale, dil = 0.0, 1, self._dilation_sum()
        downs = list(zip(self.cfg.downs_t[: self.level + 1], self.cfg.strides_t[: self.level + 1]))
        for d, s in reversed(downs):
            ctx += 1.0 / scale  # the k3 conv from emb_width
            for _ in range(d):
                ctx += (dil + 1) / scale
                scale *= s
        return int(ctx + 1.0 / scale) + 2

    @torch.no_grad()
    def encode(self, x: torch.Tensor, chunk_samples: int = 262144) -> torch.Tensor:
        """Audio (N, C, T) float in [-1, 1] at the model's sample rate -> codes (N, ceil(T / hop)) int64 in
        [0, l_bins); pads the end with zeros to a multiple of the hop (`hop_length` samples per code).

        Long audio is encoded in chunks with the encoder's full receptive field as context on both sides, which
        gives the same codes as one pass (up to float rounding) at a fraction of the memory, and faster.
        """
        pad = (-x.shape[-1]) % self.hop_length
        if pad:
            x = nn.functional.pad(x, (0, pad))
        hop, ctx = self.hop_length, self.encoder_context()
        chunk = max(chunk_samples // hop * hop, 4 * ctx)
        if x.shape[-1] <= chunk + 2 * ctx:
            return self.bottleneck.encode(self.encoder(x))
        pieces = []
        for start in range(0, x.shape[-1], chunk):
            lo, hi = max(0, start - ctx), min(x.shape[-1], start + chunk + ctx)
            codes = self.bottleneck.encode(self.encoder(x[..., lo:hi]))
            first = (start - lo) // hop
            pieces.append(codes[:, first : first + min(chunk, x.shape[-1] - start) // hop])
        return torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, chunk_samples: int = 65536) -> torch.Tensor:
        """Codes (N, T') int64 in [0, l_bins) -> audio (N, C, T' * hop) float (about [-1, 1]) at the model's
        sample rate, in chunks with full context (same result, ~2x faster). On a CPU several rows are decoded one
        by one: a chunk's activations for 8 rows leave the cache (a 2 s song's bottom level, batch 8, decoded
        2.6x slower together than row by row; bench/song.py)."""
        if codes.dim() == 2 and codes.shape[0] > 1 and codes.device.type == "cpu":
            return torch.cat([self.decode(row, chunk_samples) for row in codes.split(1)])
        hop, ctx = self.hop_length, self.decoder_context()
        chunk = max(chunk_samples // hop, 16 * ctx)  # context overhead under 1/8
        if codes.shape[-1] <= chunk + 2 * ctx:
            return self.decoder(self.bottleneck.decode(codes))
        pieces = []
        for start in range(0, codes.shape[-1], chunk):
            lo, hi = max(0, start - ctx), min(codes.shape[-1], start + chunk + ctx)
            audio = self.decoder(self.bottleneck.decode(codes[:, lo:hi]))
            pieces.append(audio[..., (start - lo) * hop : (start - lo + min(chunk, codes.shape[-1] - start)) * hop])
        return torch.cat(pieces, dim=-1)

    def forward(self, x: torch.Tensor, bandwidth: Bandwidth | None = None) -> LevelOutput:
        """Encode, quantise (updating the codebook in training), decode, and compute every loss term."""
        self._check_length(x)
        q = self.bottleneck(self.encoder(x))
        recon = self.decoder(q.quantised)
        loss, terms = reconstruction_loss(self.cfg, self.spectral, x, recon, bandwidth or Bandwidth(), q.commit_loss)
        return LevelOutput(recon, q.codes, loss, terms, q.metrics)


def codebook_stats(codes: torch.Tensor, l_bins: int) -> dict[str, float]:
    """Usage (share of codes used), perplexity and entropy (bits) of a batch of codes."""
    return codebook_stats_from_counts(torch.bincount(codes.reshape(-1), minlength=l_bins))


def codebook_stats_from_counts(counts: torch.Tensor) -> dict[str, float]:
    counts = counts.double()
    prob = counts / counts.sum().clamp(min=1)
    nz = prob[prob > 0]
    entropy = float(-(nz * nz.log2()).sum())
    return {
        "usage": float((counts > 0).sum()) / len(counts),
        "perplexity": 2**entropy,
        "entropy_bits": entropy,
        "max_entropy_bits": math.log2(len(counts)),
    }


def build_vqvae_level(cfg: Any, level: int | str) -> VQVAELevelModel:
    """The model of one level (a name or an index) from a run config or its `vqvae` section (DictConfig,
    VQVAEConfig or dict): what training, import, sampling and the benches build."""
    vqvae = vqvae_config(vqvae_section(cfg))
    return VQVAELevelModel(vqvae, level_index(level, vqvae.levels))
