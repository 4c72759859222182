"""Typed schemas of every config section.

OmegaConf merges the YAML presets and command-line overrides onto these dataclasses, so a misspelt key or a
value of the wrong type fails at start-up with its dotted name instead of deep inside a training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Where the audio shards are and how crops are cut from them (shared by every stage)."""

    # A folder written by `jukebox-pl prep` (it holds manifest.json and vocab.json) ...
    shards: str = ""
    # ... or explicit WebDataset URL specs (brace patterns, `pipe:` commands), which win over `shards`.
    train_urls: str | None = None
    val_urls: str | None = None
    vocab: str | None = None
    sample_rate: int = 22050
    # Samples per training crop; stages derive their own (e.g. a prior's n_ctx * hop) when left at 0.
    sample_length: int = 32768
    # Channels handed to the model: 1 = mono (stereo tracks blended), 2 = stereo (mono tracks duplicated).
    channels: int = 1
    batch_size: int = 4
    val_batch_size: int | None = None
    num_workers: int = 0
    # Crops in the sample-shuffle buffer of the training stream (crops of one track arrive together).
    shuffle_buffer: int = 128
    # Training crops per epoch over all ranks; each rank yields epoch_length / world_size of them.
    epoch_length: int = 1024
    # Shift the crop grid of each track by up to half a crop (the reference's aug_shift).
    aug_shift: bool = True
    # Random left/right blend of stereo tracks to mono (the reference's aug_blend); off = plain average.
    aug_blend: bool = True
    # Validation crops per track, evenly spaced, deterministic.
    val_crops_per_track: int = 2
    # Characters of lyrics returned with each crop (0 = no lyrics).
    n_lyric_tokens: int = 0
    # Lyrics character set: "v2" (5B models, 80 ids) or "v3" (1B model, 79 ids).
    lyrics_vocab: str = "v2"
    # Genre ids per crop, padded with -1.
    max_genres: int = 5
    # Tracks shorter than one crop are zero-padded at the end; tracks shorter than this (seconds) are dropped.
    min_track_seconds: float = 0.0
    seed: int = 0


@dataclass
class TrainerConfig:
    """Keys passed straight to `pytorch_lightning.Trainer` (any Trainer argument name listed here)."""

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = -1
    max_epochs: int | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 50
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    num_sanity_val_steps: int = 2
    deterministic: Any = False
    benchmark: bool | None = None
    enable_progress_bar: bool = True
    use_distributed_sampler: bool = False


@dataclass
class RunConfig:
    """The whole resolved configuration of one run; saved beside every run and inside its checkpoints."""

    preset: str = "tiny"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
