"""Train one VQ-VAE level through the Lightning Trainer (what `jukebox-pl train vqvae` runs)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from lightning_utilities.core.rank_zero import rank_zero_info

from jukebox_pl.config.levels import level_index
from jukebox_pl.config.typed import plain
from jukebox_pl.stages.datamodules import vqvae_datamodule
from jukebox_pl.training.callbacks import AudioLogger, Throughput
from jukebox_pl.training.distributed import ddp_strategy
from jukebox_pl.training.runner import apply_stage_steps, build_trainer, fit, prepare_stage, stage_request
from jukebox_pl.vqvae.lightning import VQVAELevel


def train_vqvae(
    run_dir: str | Path,
    level: str,
    preset: str = "tiny",
    data: str | None = None,
    overrides: list[str] = (),
    resume: bool = False,
    callbacks: list | None = None,
) -> VQVAELevel:
    """Train (or resume) one level; returns the trained module."""
    overrides, _, name = stage_request(preset, overrides, data, level)
    run = prepare_stage(run_dir, f"vqvae_{name}", preset, overrides, resume)
    cfg = run.cfg
    apply_stage_steps(cfg, cfg.vqvae.max_steps)
    pl.seed_everything(cfg.seed + level_index(name, cfg.vqvae.levels), workers=True)
    dm = vqvae_datamodule(cfg, skip_log=run.skip_log)
    module = VQVAELevel(cfg.vqvae, name, cfg.data.sample_rate, config=plain(cfg))
    extra = [AudioLogger(cfg.run.log_audio_every_n_steps, cfg.run.n_audio_examples), Throughput("audio_seconds")]
    strategy = cfg.trainer.strategy
    if strategy == "fsdp":  # set for the priors of a run: a VQ-VAE level is small, its codebook syncs itself
        rank_zero_info("trainer.strategy=fsdp: the VQ-VAE level trains under DDP (FSDP is for the priors)")
        strategy = "ddp"
    trainer = build_trainer(run, extra + list(callbacks or []), strategy=ddp_strategy(strategy))
    fit(trainer, module, dm, run.ckpt_path)
    return module
