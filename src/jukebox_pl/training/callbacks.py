"""Callbacks shared by the stages: audio + spectrogram logging to TensorBoard, throughput."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from lightning_utilities.core.rank_zero import rank_zero_only  # the same object Lightning sets the rank on


def spectrogram_image(audio: torch.Tensor, n_fft: int = 1024, hop: int = 256) -> torch.Tensor:
    """(T,) audio -> (3, freq, frames) log-magnitude image in [0, 1], low frequencies at the bottom."""
    spec = torch.stft(audio.float().cpu(), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp(min=1e-5))
    img = ((db - db.max() + 80.0) / 80.0).clamp(0, 1).flip(0)
    return img[None].repeat(3, 1, 1)


class AudioLogger(pl.Callback):
    """Every N training steps, on rank zero, log real vs reconstructed audio and their spectrograms.

    Works with any module exposing `reconstruct(audio) -> audio` and `sample_rate`; it keeps the first
    validation batch (or the last training batch) as the fixed examples, and restores train mode after.
    """

    def __init__(self, every_n_steps: int = 500, n_examples: int = 2):
        self.every_n_steps, self.n_examples = every_n_steps, n_examples
        self.examples: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.examples is None and batch_idx == 0 and isinstance(batch, dict):
            self.examples = batch["audio"][: self.n_examples].detach().cpu()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.examples is None and isinstance(batch, dict):
            self.examples = batch["audio"][: self.n_examples].detach().cpu()
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step > 0:
            self.log_examples(trainer, pl_module)

    @rank_zero_only
    def log_examples(self, trainer, pl_module) -> None:
        writer = getattr(trainer.logger, "experiment", None)
        if self.examples is None or writer is None or not hasattr(writer, "add_audio"):
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                recon = pl_module.reconstruct(self.examples.to(pl_module.device)).cpu()
            sr, step = pl_module.sample_rate, trainer.global_step
            for i, (real, fake) in enumerate(zip(self.examples, recon)):
                for tag, audio in (("real", real), ("recon", fake)):
                    mono = audio.float().mean(0).clamp(-1, 1)
                    writer.add_audio(f"audio/{i}_{tag}", mono[None], step, sample_rate=sr)
                    writer.add_image(f"spectrogram/{i}_{tag}", spectrogram_image(mono), step)
        finally:
            pl_module.train(was_training)


class Throughput(pl.Callback):
    """Logs audio-seconds (VQ-VAE) or tokens (priors) processed per second of wall time."""

    def __init__(self, unit: str = "audio_seconds"):
        self.unit, self.t0 = unit, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is None or not hasattr(pl_module, "throughput_units"):
            return
        per_s = pl_module.throughput_units(batch) / max(1e-9, time.perf_counter() - self.t0)
        pl_module.log(f"speed/{self.unit}_per_s", per_s, prog_bar=True, batch_size=1)
