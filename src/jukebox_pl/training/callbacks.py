"""Callbacks shared by the stages: audio + spectrogram logging to TensorBoard, throughput, the progress bar."""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
import torch
from lightning_utilities.core.rank_zero import rank_zero_only  # the same object Lightning sets the rank on
from pytorch_lightning.callbacks import RichProgressBar


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
        # the first logger that takes audio (TensorBoard's writer), wherever `trainer.logger` lists it
        writers = (getattr(logger, "experiment", None) for logger in trainer.loggers)
        writer = next((w for w in writers if hasattr(w, "add_audio")), None)
        if self.examples is None or writer is None:
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


def epoch_total(max_epochs: int | None, max_steps: int, batches: float, accumulate: int = 1) -> int | None:
    """How many epochs a run will go through: `max_epochs` when set, else the epochs that `max_steps` optimizer
    steps take at `batches` batches an epoch (None when neither bounds the run)."""
    if max_epochs is not None and max_epochs >= 0:
        return max_epochs
    if max_steps is None or max_steps < 0 or not batches or batches == float("inf"):
        return None
    return max(1, math.ceil(max_steps * max(1, accumulate) / batches))


class StepsProgressBar(RichProgressBar):
    """Lightning's rich bar, with a sensible `Epoch N/M` for runs bounded by steps (Lightning's own reads
    `Epoch 0/-2` when `max_epochs` is -1) and the optimizer step beside it."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        total = epoch_total(trainer.max_epochs, trainer.max_steps, trainer.num_training_batches,
                            trainer.accumulate_grad_batches)  # fmt: skip
        text = f"Epoch {current_epoch}" + (f"/{total - 1}" if total is not None else "")
        if trainer.max_steps is not None and trainer.max_steps > 0:
            text += f" (step {trainer.global_step}/{trainer.max_steps})"
        return f"{text:{len(self.validation_description)}}"
