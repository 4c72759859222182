"""`VQVAELevel`: one VQ-VAE level as a LightningModule (losses, codebook metrics, optimiser, checkpoints); and
`HierarchicalVQVAEModule`, the paper's combined-model ablation, trained the same way."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_utilities.core.rank_zero import rank_zero_only
from torchmetrics import SumMetric
from torchmetrics.audio import ScaleInvariantSignalDistortionRatio

from jukebox_pl.config.levels import level_index, level_name
from jukebox_pl.config.schema import VQVAEConfig
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.training.checkpoints.read_write import check_finite
from jukebox_pl.training.schedules import module_optimizer
from jukebox_pl.vqvae.hierarchical import HierarchicalVQVAE
from jukebox_pl.vqvae.losses import Bandwidth, estimate_bandwidth, pooled_spectral_convergence_db
from jukebox_pl.vqvae.model import build_vqvae_level, codebook_stats_from_counts

TRAIN_METRIC_NAMES = {
    "usage": "codes_alive_ema",  # codes whose EMA count is at or above the restart threshold (not restarted)
    "used_curr": "codes_in_batch",  # codes used at least threshold times in this training batch
    "entropy": "batch_entropy",  # of this batch's code distribution (nats)
}
"""The bottleneck's metric names (the reference's) -> the logged names, which say what each counts. Held-out
code use is logged by validation (`val/codes_used`, `val/codebook_usage`, `val/codebook_perplexity`)."""

SICK_USAGE = 0.10
"""A level whose validation audio uses under this share of its codebook is reported as sick."""


def warn_if_sick(level: str, counts: torch.Tensor, step: int | None = None) -> str | None:
    """One warning line (stderr, rank zero) when held-out audio sits on under `SICK_USAGE` of the codes; the
    line is returned, None for a healthy level."""
    used, total = int((counts > 0).sum()), counts.numel()
    if used >= SICK_USAGE * total:
        return None
    line = (
        f"warning: {level} level: held-out audio uses {used} of {total} codes"
        + (f" at step {step}" if step is not None else "")
        + f" (under {SICK_USAGE:.0%} of the codebook: collapsed; README 'Real music' says what to do)"
    )
    if rank_zero_only.rank == 0:
        print(line, file=sys.stderr, flush=True)
    return line


def batch_audio(batch) -> torch.Tensor:
    """Accept our DataModule's dict batches, (audio, ...) tuples, or plain (N, C, T) tensors."""
    if isinstance(batch, dict):
        return batch["audio"]
    if isinstance(batch, list | tuple):
        return batch[0]
    return batch


class VQVAELevelTraining:
    """Trains one level's autoencoder and codebook on raw audio; usable in any Lightning project.

    The training logic without a Lightning base class: `VQVAELevel` binds it to `pytorch_lightning`,
    `jukebox_pl.unified_lightning.VQVAELevel` to the unified `lightning` package.

    The loss normalisation ("bandwidth") is estimated from the first `bandwidth_batches` training batches at
    the start of a fit (averaged over ranks) and then stored in the checkpoint, so a resumed run keeps it.
    """

    def __init__(
        self,
        vqvae: Mapping[str, Any] | VQVAEConfig | None = None,
        level: int | str = 0,
        sample_rate: int = 22050,
        config: dict | None = None,
    ):
        super().__init__()
        cfg = vqvae_config(vqvae)
        idx = level_index(level, cfg.levels)
        self.save_hyperparameters(
            {
                "vqvae": plain(cfg),
                "level": idx,
                "sample_rate": sample_rate,
                "config": config,
            }
        )
        self.cfg, self.level, self.sample_rate = cfg, idx, sample_rate
        self.model = build_vqvae_level(cfg, idx)
        self.register_buffer("bandwidth", torch.ones(3))
        self.register_buffer("bandwidth_ready", torch.tensor(False))
        self.val_si_sdr = ScaleInvariantSignalDistortionRatio()
        self.val_sc_error = SumMetric()  # spectral convergence pooled over the validation set (see losses)
        self.val_sc_target = SumMetric()
        self.register_buffer("val_code_counts", torch.zeros(cfg.l_bins, dtype=torch.long), persistent=False)

    # -- helpers ------------------------------------------------------------------------------------------
    @property
    def level_name(self) -> str:
        return level_name(self.level, self.cfg.levels)

    @property
    def hop_length(self) -> int:
        return self.model.hop_length

    @property
    def bw(self) -> Bandwidth:
        """The loss normalisation as 0-d tensors: no device-to-host copy in the training step."""
        l1, l2, spec = self.bandwidth.unbind()
        return Bandwidth(l1=l1, l2=l2, spec=spec)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model.encode(audio)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes)

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio through the codebook and back (same length as the input)."""
        return self.decode(self.encode(audio))[..., : audio.shape[-1]]

    def throughput_units(self, batch) -> float:
        """Audio-seconds in a batch (for the throughput callback)."""
        x = batch_audio(batch)
        return x.shape[0] * x.shape[-1] / self.sample_rate

    # -- loss normalisation -------------------------------------------------------------------------------
    @torch.no_grad()
    def set_bandwidth(self, bw: Bandwidth) -> None:
        self.bandwidth.copy_(torch.tensor([bw.l1, bw.l2, bw.spec], device=self.bandwidth.device))
        self.bandwidth_ready.fill_(True)

    def on_train_start(self) -> None:
        if bool(self.bandwidth_ready):
            return
        dm = getattr(self.trainer, "datamodule", None)
        loader = dm.train_dataloader() if dm is not None else self.trainer.train_dataloader
        n = max(1, self.cfg.bandwidth_batches)
        batches = (batch_audio(b).to(self.device) for b in itertools.islice(iter(loader), n))
        bw = estimate_bandwidth(batches, self.model.spectral.default)
        stats = torch.tensor([bw.l1, bw.l2, bw.spec], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        self.set_bandwidth(Bandwidth(*stats.tolist()))

    # -- steps --------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x = batch_audio(batch)
        out = self.model(x, self.bw)
        n = x.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=n)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value, batch_size=n)
        for name, value in out.metrics.items():
            name = self.codebook_metric_name(name)
            self.log(f"codebook/{name}", value, prog_bar=name == "codes_in_batch", batch_size=n)
        if isinstance(batch, dict) and "skipped" in batch:
            self.log("data/skipped", batch["skipped"].float(), batch_size=n)
        return out.loss

    def validation_step(self, batch, batch_idx):
        x = batch_audio(batch)
        out = self.model(x, self.bw)
        n = x.shape[0]
        self.log("val/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in out.terms.items():
            self.log(f"val/{name}", value, batch_size=n, sync_dist=True)
        error, target = self.model.spectral.spectral_error_energy(x, out.recon)
        self.val_sc_error.update(error)
        self.val_sc_target.update(target)
        self.val_si_sdr.update(out.recon.float().mean(1), x.float().mean(1))
        self.count_codes(out.codes)
        return out

    def on_validation_epoch_start(self) -> None:
        self.val_code_counts.zero_()

    def on_validation_epoch_end(self) -> None:
        sc_db = pooled_spectral_convergence_db(self.val_sc_error.compute(), self.val_sc_target.compute())
        self.log("val/spectral_convergence_db", sc_db, prog_bar=True)
        self.log("val/si_sdr", self.val_si_sdr.compute())
        self.val_sc_error.reset()
        self.val_sc_target.reset()
        self.val_si_sdr.reset()
        counts = self.val_code_counts.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self.log_code_use(counts)

    # -- what differs between one level and the hierarchical model ----------------------------------------
    def codebook_metric_name(self, name: str) -> str:
        return TRAIN_METRIC_NAMES.get(name, name)

    def count_codes(self, codes: torch.Tensor) -> None:
        self.val_code_counts += torch.bincount(codes.reshape(-1), minlength=self.cfg.l_bins)

    def log_code_use(self, counts: torch.Tensor) -> None:
        """Held-out code use of the validation (counts summed over ranks), and the sickness warning."""
        if counts.sum() > 0:
            stats = codebook_stats_from_counts(counts)
            self.log("val/codebook_usage", stats["usage"])
            self.log("val/codes_used", float((counts > 0).sum()))
            self.log("val/codebook_perplexity", stats["perplexity"])
            if not self.trainer.sanity_checking:
                warn_if_sick(self.level_name, counts, self.global_step)

    def configure_optimizers(self):
        return module_optimizer(self, self.model.parameters(), self.cfg.optim)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_finite(checkpoint.get("state_dict", {}), "this checkpoint")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["jukebox_pl"] = {
            "kind": "vqvae-level",
            "level": self.level,
            "level_name": self.level_name,
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
        }


class VQVAELevel(VQVAELevelTraining, pl.LightningModule):
    """`VQVAELevelTraining` as a `pytorch_lightning.LightningModule` (see there for the arguments)."""


class HierarchicalVQVAETraining:
    """Trains the combined hierarchical VQ-VAE (the paper's ablation) as `VQVAELevelTraining` trains a level.

    Without a Lightning base class (`HierarchicalVQVAEModule` binds it to `pytorch_lightning`). The loss
    normalisation, optimiser, throughput units and checkpoint check are the separate levels' own (the same
    functions), so the two set-ups differ only in the model. Validation logs each level's held-out code use,
    `val/level{l}_codes_used` and `val/level{l}_perplexity` (whether the decoder uses a level is a separate
    question: see `bench/paper.py`'s scrambled levels).
    """

    def __init__(
        self,
        vqvae: Mapping[str, Any] | VQVAEConfig | None = None,
        sample_rate: int = 22050,
        config: dict | None = None,
    ):
        super().__init__()
        cfg = vqvae_config(vqvae)
        self.save_hyperparameters({"vqvae": plain(cfg), "sample_rate": sample_rate, "config": config})
        self.cfg, self.sample_rate = cfg, sample_rate
        self.model = HierarchicalVQVAE(cfg)
        self.register_buffer("bandwidth", torch.ones(3))
        self.register_buffer("bandwidth_ready", torch.tensor(False))
        self.val_sc_error = SumMetric()
        self.val_sc_target = SumMetric()
        self.val_si_sdr = ScaleInvariantSignalDistortionRatio()
        self.register_buffer("val_code_counts", torch.zeros(cfg.levels, cfg.l_bins, dtype=torch.long), persistent=False)

    # -- shared with the separate levels --------------------------------------------------------------------
    bw = VQVAELevelTraining.bw
    set_bandwidth = VQVAELevelTraining.set_bandwidth
    on_train_start = VQVAELevelTraining.on_train_start  # bandwidth from the first `bandwidth_batches` batches
    throughput_units = VQVAELevelTraining.throughput_units
    configure_optimizers = VQVAELevelTraining.configure_optimizers
    on_load_checkpoint = VQVAELevelTraining.on_load_checkpoint

    @property
    def hop_lengths(self) -> list[int]:
        return self.model.hop_lengths

    def encode(self, audio: torch.Tensor) -> list[torch.Tensor]:
        return self.model.encode(audio)

    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        return self.model.decode(codes)

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio through every level's codebook and back (same length as the input)."""
        return self.decode(self.encode(audio))[..., : audio.shape[-1]]

    # -- steps: the separate levels' own, with these hooks ---------------------------------------------------
    training_step = VQVAELevelTraining.training_step
    validation_step = VQVAELevelTraining.validation_step
    on_validation_epoch_start = VQVAELevelTraining.on_validation_epoch_start
    on_validation_epoch_end = VQVAELevelTraining.on_validation_epoch_end

    def codebook_metric_name(self, name: str) -> str:
        level, _, metric = name.partition("/")  # "level{l}/<bottleneck name>"
        return f"{level}/{TRAIN_METRIC_NAMES.get(metric, metric)}"

    def count_codes(self, codes: list[torch.Tensor]) -> None:
        for level, level_codes in enumerate(codes):
            self.val_code_counts[level] += torch.bincount(level_codes.reshape(-1), minlength=self.cfg.l_bins)

    def log_code_use(self, counts: torch.Tensor) -> None:
        for level, level_counts in enumerate(counts):
            if level_counts.sum() > 0:
                stats = codebook_stats_from_counts(level_counts)
                self.log(f"val/level{level}_codes_used", float((level_counts > 0).sum()))
                self.log(f"val/level{level}_usage", stats["usage"])
                self.log(f"val/level{level}_perplexity", stats["perplexity"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["jukebox_pl"] = {
            "kind": "vqvae-hierarchical",
            "sample_rate": self.sample_rate,
            "hop_lengths": self.hop_lengths,
        }


class HierarchicalVQVAEModule(HierarchicalVQVAETraining, pl.LightningModule):
    """`HierarchicalVQVAETraining` as a `pytorch_lightning.LightningModule` (see there for the arguments)."""
