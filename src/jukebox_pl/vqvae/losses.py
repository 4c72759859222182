"""Reconstruction and spectral losses of the VQ-VAE, normalised by data statistics ("bandwidth").

Dividing each term by a statistic of the training audio (variance for l2, mean |x| for l1, mean STFT norm for
the spectral terms) makes the loss weights independent of loudness, as in the reference. Spectra come from
auraloss's STFT and are always computed in fp32 (half-precision FFTs only take power-of-two sizes and lose
precision on quiet bins).
"""

from __future__ import annotations

from dataclasses import dataclass

import auraloss
import torch
from torch import nn

from jukebox_pl.errors import UserValueError

# (n_fft, hop, window) of the multi-resolution loss: the reference's, which are also auraloss's defaults.
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


class SpectralLosses(nn.Module):
    """Every spectral term the VQ-VAE uses or logs.

    - `multispectral`: the reference's multi-resolution loss, per example ||(|X| - |Y|)||_F averaged over the
      three resolutions, divided by bandwidth.spec (mode "jukebox"), or auraloss's MultiResolutionSTFTLoss
      (spectral convergence + log-magnitude L1, mode "auraloss").
    - `spectral`: ||(|X| - |Y|)||_F at the default resolution / bandwidth.spec.
    - `spectral_convergence`: ||(|X| - |Y|)||_F / ||X||_F at the default resolution (0 = perfect).
    """

    def __init__(self, mode: str = "jukebox", resolutions=RESOLUTIONS):
        super().__init__()
        if mode not in ("jukebox", "auraloss"):
            raise UserValueError(f"unknown spectral loss mode {mode!r}; choose jukebox or auraloss")
        self.mode = mode
        self.resolutions = nn.ModuleList(Magnitudes(*r) for r in resolutions)
        self.default = Magnitudes(*DEFAULT_STFT)
        if mode == "auraloss":
            n_fft, hop, win = zip(*resolutions)
            self.mrstft = auraloss.freq.MultiResolutionSTFTLoss(list(n_fft), list(hop), list(win))

    def multispectral(self, target: torch.Tensor, pred: torch.Tensor, bw: Bandwidth) -> torch.Tensor:
        if self.mode == "auraloss":
            for loss in self.mrstft.stft_losses:
                loss.window = loss.window.to(pred.device)
            with torch.autocast(device_type=pred.device.type, enabled=False):
                return self.mrstft(pred.float(), target.float())
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


def spectral_convergence_db(sc: torch.Tensor) -> torch.Tensor:
    """Spectral convergence in dB (20 log10); lower is better, 0 dB = as wrong as silence."""
    return 20.0 * torch.log10(sc.clamp(min=1e-8))


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
