"""Train one VQ-VAE level through the Lightning Trainer (what `jukebox-pl train vqvae` runs)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from lightning_utilities.core.rank_zero import rank_zero_info

from jukebox_pl.config.levels import level_index
from jukebox_pl.config.typed import plain
from jukebox_pl.stages.datamodules import check_shard_rate, vqvae_datamodule
from jukebox_pl.training.callbacks import AudioLogger, Throughput
from jukebox_pl.training.distributed import ddp_strategy
from jukebox_pl.training.runner import (
    build_trainer,
    fit,
    prepare_stage,
    refusal_leaves_no_trace,
    stage_request,
)
from jukebox_pl.vqvae.lightning import VQVAELevel


def train_vqvae(
    run_dir: str | Path,
    level: str,
    preset: str = "tiny",
    data: str | None = None,
    overrides: list[str] = (),
    resume: bool = False,
    callbacks: list | None = None,
    print_config: bool = False,
) -> VQVAELevel:
    """Train (or resume) one level; returns the trained module. The resolved config is saved in the stage folder
    and summarised on screen (what differs from the preset), or printed whole with `print_config`."""
    overrides, asked, name = stage_request(preset, overrides, data, level)
    check_shard_rate(asked, preset)
    stage = f"vqvae_{name}"
    with refusal_leaves_no_trace(run_dir, Path(run_dir) / stage):
        run = prepare_stage(run_dir, stage, preset, overrides, resume, print_config)
        cfg = run.cfg
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
