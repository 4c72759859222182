"""Reconstruction and spectral losses of the VQ-VAE, normalised by data statistics ("bandwidth").

Dividing the waveform terms by a statistic of the training audio (variance for l2, mean |x| for l1) makes the
loss weights independent of loudness, as in the reference. The multi-resolution spectral term comes in two modes
(`vqvae.spectral_mode`):

- "auraloss" (the default for training from scratch): auraloss's MultiResolutionSTFTLoss, spectral convergence
  plus log-magnitude L1 (weights and resolutions from the `vqvae.mrstft_*` keys). Both parts are ratios or
  log-ratios of magnitudes, so they are already loudness-independent and are *not* divided by a bandwidth.
- "reference": the reference's formula, ||(|X| - |Y|)||_F averaged over its three fixed resolutions and divided
  by the mean STFT norm of the data (bandwidth.spec). Reproduces the reference's losses and gradients.

Spectra are always computed in fp32, also under bf16/fp16 autocast (half-precision FFTs only take power-of-two
sizes, and squared magnitudes overflow fp16 for any loud bin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import auraloss
import torch
from torch import nn

from jukebox_pl.errors import UserValueError

SPECTRAL_MODES = ("auraloss", "reference")
# (n_fft, hop, window) of the reference's multi-resolution loss (whatever the sample rate). The auraloss mode's
# resolutions are configured instead (vqvae.mrstft_fft_sizes / mrstft_hop_sizes / mrstft_win_lengths).
RESOLUTIONS = ((2048, 240, 1200), (1024, 120, 600), (512, 50, 240))
# The single-resolution STFT of the reference's spectral loss, convergence metric and bandwidth.
DEFAULT_STFT = (2048, 256, 1536)


@dataclass
class Bandwidth:
    """Data statistics the losses are divided by (floats or 0-d tensors)."""

    l1: float | torch.Tensor = 1.0
    l2: float | torch.Tensor = 1.0
    spec: float | torch.Tensor = 1.0


def _squeeze(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T) -> (N, T), averaging channels as the reference does."""
    return x.float().mean(dim=1) if x.dim() == 3 else x.float()


class _MagnitudeOnlySTFT(auraloss.freq.STFTLoss):
    """auraloss's STFT with its settings and eps clamp, minus the phase (never used here; ~4% of a step)."""

    def stft(self, x: torch.Tensor):
        spec = torch.stft(x, self.fft_size, self.hop_size, self.win_length, self.window, return_complex=True)
        return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=self.eps)), None


class Magnitudes(nn.Module):
    """|STFT| at one resolution via auraloss's STFT (fp32; clamped before the square root, never NaN)."""

    def __init__(self, n_fft: int, hop: int, win: int, eps: float = 1e-10):
        super().__init__()
        self.stft = _MagnitudeOnlySTFT(fft_size=n_fft, hop_size=hop, win_length=win, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.stft.window = self.stft.window.to(x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            mag, _ = self.stft.stft(_squeeze(x))
        return mag


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).pow(2).sum(-1).sqrt()


def recon_loss(kind: str, target: torch.Tensor, pred: torch.Tensor, bw: Bandwidth, linf_k: int = 2048) -> torch.Tensor:
    """Waveform losses: l1, l2, or linf (mean of the top-k squared errors per example)."""
    diff = pred.float() - target.float()
    if kind == "l1":
        return diff.abs().mean() / bw.l1
    if kind == "l2":
        return diff.pow(2).mean() / bw.l2
    if kind == "linf":
        residual = diff.pow(2).reshape(diff.shape[0], -1)
        return torch.topk(residual, min(linf_k, residual.shape[1]), dim=1).values.mean() / bw.l2
    raise UserValueError(f"unknown reconstruction loss {kind!r}; choose l1, l2 or linf")


@dataclass(frozen=True)
class MRSTFTSettings:
    """Arguments of auraloss.freq.MultiResolutionSTFTLoss: one (fft, hop, window) per resolution, term weights."""

    fft_sizes: tuple[int, ...] = (2048, 1024, 512)
    hop_sizes: tuple[int, ...] = (240, 120, 50)
    win_lengths: tuple[int, ...] = (1200, 600, 240)
    w_sc: float = 1.0
    w_log_mag: float = 1.0
    w_lin_mag: float = 0.0
    w_phs: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> MRSTFTSettings:
        """From the `vqvae.mrstft_*` keys of a VQ-VAE config (checked, with the key named in any error)."""
        settings = cls(
            tuple(int(v) for v in cfg.mrstft_fft_sizes),
            tuple(int(v) for v in cfg.mrstft_hop_sizes),
            tuple(int(v) for v in cfg.mrstft_win_lengths),
            float(cfg.mrstft_w_sc),
            float(cfg.mrstft_w_log_mag),
            float(cfg.mrstft_w_lin_mag),
            float(cfg.mrstft_w_phs),
        )
        settings.check()
        return settings

    def check(self) -> None:
        sizes = {"fft_sizes": self.fft_sizes, "hop_sizes": self.hop_sizes, "win_lengths": self.win_lengths}
        if not self.fft_sizes or len({len(v) for v in sizes.values()}) != 1:
            raise UserValueError(
                "vqvae.mrstft_fft_sizes, mrstft_hop_sizes and mrstft_win_lengths need one entry per resolution "
                f"(at least one), got {', '.join(f'{k}={list(v)}' for k, v in sizes.items())}"
            )
        for key, values in sizes.items():
            if min(values) < 1:
                raise UserValueError(f"vqvae.mrstft_{key}={list(values)} must be positive")
        for fft, win in zip(self.fft_sizes, self.win_lengths):
            if win > fft:
                raise UserValueError(
                    f"vqvae.mrstft_win_lengths={list(self.win_lengths)}: window {win} is longer than its FFT size "
                    f"{fft} (vqvae.mrstft_fft_sizes={list(self.fft_sizes)})"
                )
        weights = {"w_sc": self.w_sc, "w_log_mag": self.w_log_mag, "w_lin_mag": self.w_lin_mag, "w_phs": self.w_phs}
        if min(weights.values()) < 0 or max(weights.values()) == 0:
            raise UserValueError(
                f"the vqvae.mrstft_w_* weights must be >= 0 with at least one > 0, got {weights} (to drop the "
                "spectral term, set vqvae.multispectral=0)"
            )

    def build(self) -> auraloss.freq.MultiResolutionSTFTLoss:
        """auraloss's module; with w_phs = 0 its STFT terms skip the (unused) phase, ~25% of the term's time."""
        weights = {"w_sc": self.w_sc, "w_log_mag": self.w_log_mag, "w_lin_mag": self.w_lin_mag, "w_phs": self.w_phs}
        mrstft = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=list(self.fft_sizes),
            hop_sizes=list(self.hop_sizes),
            win_lengths=list(self.win_lengths),
            **weights,
        )
        if not self.w_phs:
            resolutions = zip(self.fft_sizes, self.hop_sizes, self.win_lengths)
            mrstft.stft_losses = nn.ModuleList(_MagnitudeOnlySTFT(*r, **weights) for r in resolutions)
        return mrstft


def _finite_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp32 (N, C, T) copy with NaN/inf samples zeroed (they get no gradient from the spectral term)."""
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    return (x[:, None] if x.dim() == 2 else x).contiguous()


class SpectralLosses(nn.Module):
    """Every spectral term the VQ-VAE uses or logs.

    - `multispectral`, the term weighted by `vqvae.multispectral`:
      - mode "auraloss": auraloss's MultiResolutionSTFTLoss(pred, target) with `settings`, i.e. per resolution
        w_sc * ||(|Y| - |X|)||_F / ||Y||_F (over the whole batch) + w_log_mag * mean|log|Y| - log|X|| (+ the
        optional linear-magnitude and phase terms), averaged over the resolutions; channels are kept apart.
        Not divided by bandwidth.spec: spectral convergence is a ratio and the log-magnitude distance a
        log-ratio, so both are already independent of the data's loudness (up to auraloss's eps floor on
        near-silent bins), while a division by the data's mean STFT norm would make the term's weight depend
        on it (quiet data would get a large spectral weight). The waveform terms stay divided by
        bandwidth.l1 / l2 (about 1 for a silent reconstruction). The balance differs from the reference mode's:
        there both terms start near 1, here the spectral term starts at 1 + the mean log-magnitude gap (often
        3-5) and stays the larger one, so vqvae.multispectral weighs a different quantity in each mode.
        Guards: computed in fp32 with autocast off; auraloss clamps |STFT|^2 at eps before the square root and
        the log (no log 0, no infinite sqrt gradient, no 0/0 in spectral convergence: a silent target gives a
        large but finite value); NaN/inf samples are zeroed first, so this term is never the source of a NaN
        (the waveform terms still show a diverged decoder).
      - mode "reference": the reference's multi-resolution loss, per example ||(|X| - |Y|)||_F averaged over the
        three resolutions of RESOLUTIONS, divided by bandwidth.spec (channels averaged first, as there).
    - `spectral`: ||(|X| - |Y|)||_F at the default resolution / bandwidth.spec (the reference's, in both modes).
    - `spectral_convergence`: ||(|X| - |Y|)||_F / ||X||_F at the default resolution (0 = perfect; a metric).
    """

    def __init__(self, mode: str = "auraloss", settings: MRSTFTSettings | None = None):
        super().__init__()
        if mode not in SPECTRAL_MODES:
            hint = " (renamed to 'reference')" if mode == "jukebox" else ""
            raise UserValueError(f"vqvae.spectral_mode={mode!r}{hint} is not one of: {', '.join(SPECTRAL_MODES)}")
        self.mode = mode
        self.default = Magnitudes(*DEFAULT_STFT)
        if mode == "auraloss":
            self.settings = settings or MRSTFTSettings()
            self.settings.check()
            self.mrstft = self.settings.build()
        else:
            self.resolutions = nn.ModuleList(Magnitudes(*r) for r in RESOLUTIONS)

    @classmethod
    def from_config(cls, cfg) -> SpectralLosses:
        """The losses a VQ-VAE config asks for (`vqvae.spectral_mode` and, for auraloss, `vqvae.mrstft_*`)."""
        mode = cfg.spectral_mode
        return cls(mode, MRSTFTSettings.from_config(cfg) if mode == "auraloss" else None)

    def multispectral(self, target: torch.Tensor, pred: torch.Tensor, bw: Bandwidth) -> torch.Tensor:
        if self.mode == "auraloss":
            with torch.autocast(device_type=pred.device.type, enabled=False):
                return self.mrstft(_finite_fp32(pred), _finite_fp32(target))
        losses = [_norm(m(target) - m(pred)) for m in self.resolutions]
        return (sum(losses) / len(losses) / bw.spec).mean()

    def spectral(self, target: torch.Tensor, pred: torch.Tensor, bw: Bandwidth) -> torch.Tensor:
        return (_norm(self.default(target) - self.default(pred)) / bw.spec).mean()

    @torch.no_grad()
    def spectral_convergence(self, target: torch.Tensor, pred: torch.Tensor, eps: float = 2e-3) -> torch.Tensor:
        """Per-example spectral convergence (reference formula: examples with a near-silent target count 0)."""
        spec_t, spec_p = self.default(target), self.default(pred)
        gt = _norm(spec_t)
        return _norm(spec_t - spec_p) * (gt > eps).float() / gt.clamp(min=eps)

    @torch.no_grad()
    def spectral_error_energy(self, target: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example, ||(|X| - |Y|)||^2 and ||X||^2 at the default resolution: summed over a set of clips they
        give its spectral convergence (`pooled_spectral_convergence_db`)."""
        spec_t, spec_p = self.default(target), self.default(pred)
        return _norm(spec_t - spec_p).pow(2), _norm(spec_t).pow(2)


def spectral_convergence_db(sc: torch.Tensor) -> torch.Tensor:
    """Spectral convergence in dB (20 log10); lower is better, 0 dB = as wrong as silence."""
    return 20.0 * torch.log10(sc.clamp(min=1e-8))


def pooled_spectral_convergence_db(error_energy, target_energy) -> float:
    """Spectral convergence of a whole set of clips in dB: 10 log10(sum of error energy / sum of target energy).

    Pooled over the set rather than averaged per clip in dB, so that a near-silent clip (a fade-in, a pause)
    weighs by its energy: a per-clip mean of dB is ruled by such clips (one quiet intro decoded as noise reads
    +30 dB), which hid what a level learned on real songs. 0 dB = as wrong as silence; lower is better."""
    error, target = float(torch.as_tensor(error_energy).sum()), float(torch.as_tensor(target_energy).sum())
    return 10.0 * math.log10(max(error, 1e-20) / max(target, 1e-20))


@torch.no_grad()
def estimate_bandwidth(batches, stft: Magnitudes | None = None) -> Bandwidth:
    """Data statistics from audio batches (N, C, T): variance, mean |x| and mean per-example STFT norm."""
    stft = stft or Magnitudes(*DEFAULT_STFT)
    n = total = total_sq = l1 = spec_sum = 0.0
    n_spec = 0
    for x in batches:
        x = x.double()
        n += x.numel()
        total += x.sum().item()
        total_sq += x.pow(2).sum().item()
        l1 += x.abs().sum().item()
        spec_sum += _norm(stft(x.float())).sum().item()
        n_spec += x.shape[0]
    if n == 0:
        raise UserValueError("no audio to estimate the loss normalisation from")
    mean = total / n
    return Bandwidth(l1=l1 / n, l2=max(total_sq / n - mean**2, 1e-12), spec=max(spec_sum / n_spec, 1e-12))
