"""Typed schemas of every config section.

OmegaConf merges the YAML presets and command-line overrides onto these dataclasses, so a misspelt key or a
value of the wrong type fails at start-up with its dotted name instead of deep inside a training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Where the shards are and how every stage reads them. What differs per stage (crop length, batch size,
    channels, lyric characters) lives under that stage (`vqvae.*`, `prior.<level>.*`), never here."""

    # A folder written by `jukebox-pl prep` (or `encode-shards`; it holds manifest.json and vocab.json) ...
    shards: str = ""
    # ... or explicit WebDataset URL specs (brace patterns, `pipe:` commands), which win over `shards`.
    train_urls: str | None = None
    val_urls: str | None = None
    # A vocab.json to use instead of the shards' own (e.g. a pretrained model's, to check labels against it).
    vocab: str | None = None
    sample_rate: int = 22050
    num_workers: int = 0
    # Tracks open at once per worker: training crops are drawn from all of them in random order, so a batch
    # mixes songs (each open track holds its compressed bytes in memory).
    open_tracks: int = 16
    # Finished examples in the shuffle buffer after mixing (0 or 1 = off); holds decoded crops in memory.
    shuffle_buffer: int = 16
    # Training crops per epoch over all ranks; each rank yields epoch_length / world_size of them.
    epoch_length: int = 1024
    # Shift the crop grid of each track by up to half a crop (the reference's aug_shift).
    aug_shift: bool = True
    # Random left/right blend of stereo tracks to mono (the reference's aug_blend); off = plain average.
    aug_blend: bool = True
    # Validation crops per track, evenly spaced, deterministic.
    val_crops_per_track: int = 2
    # Genre ids per crop, padded with -1.
    max_genres: int = 5
    # Tracks shorter than one crop are zero-padded at the end; tracks shorter than this (seconds) are dropped.
    min_track_seconds: float = 0.0
    # Unusable samples are skipped; training stops (DataStarvedError, naming shards and reasons) after this many
    # in a row without a usable one, or after starve_seconds without one. A summary of skips per shard and
    # reason is logged at most every skip_report_seconds; every skip is listed in the stage's skipped.tsv.
    max_skips_in_a_row: int = 1000
    starve_seconds: float = 600.0
    skip_report_seconds: float = 60.0


@dataclass
class TrainerConfig:
    """Keys passed straight to `pytorch_lightning.Trainer` (any Trainer argument name listed here), except `logger`
    and `callbacks`, which name classes (`jukebox_pl.config.class_specs`) that `training.runner.build_trainer`
    builds: the Trainer gets the objects."""

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    # The step count of the stage being trained (the one key for it; -1 = no limit). A preset sets one for every
    # stage; give another on a stage's command line (the demo gives the VQ-VAE levels and the priors their own).
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
    # true: TensorBoard in RUN/<stage>/logs; false: no logger; or `{class_path: ..., init_args: {...}}` (LightningCLI's
    # spelling; `csv`, `tensorboard`, `wandb`, `mlflow` for short), or a list of them to log to several at once.
    logger: Any = True
    # Callbacks added to jukebox-pl's own: `{class_path: ..., init_args: {...}}` or a list of them.
    callbacks: Any = field(default_factory=list)


@dataclass
class OptimConfig:
    """Adam(W) with linear warm-up and optional decay, as in the reference."""

    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 100
    # "none" (constant after warm-up), "linear" or "cosine" decay to min_lr_factor * lr over decay_steps.
    decay: str = "none"
    decay_steps: int = 0  # 0 = trainer.max_steps
    min_lr_factor: float = 0.0


@dataclass
class VQVAEConfig:
    """The hierarchical VQ-VAE: `levels` separate autoencoders, hop of level L = prod(strides**downs)[:L+1]."""

    levels: int = 3
    downs_t: list[int] = field(default_factory=lambda: [3, 2, 2])
    strides_t: list[int] = field(default_factory=lambda: [2, 2, 2])
    emb_width: int = 64
    l_bins: int = 2048
    # Codebook EMA decay and the EMA count under which a code is restarted.
    mu: float = 0.99
    revival_threshold: float = 1.0
    # When set, the restart threshold is this share of the average EMA count per code (tokens per step /
    # l_bins, over all ranks) instead of the absolute revival_threshold: small batches then still restart
    # rarely used codes, which keeps usage high on unseen audio.
    revival_relative: float | None = None
    commit: float = 0.02
    # Waveform loss weights (the released model: l2 1.0 + linf 0.02).
    loss_l1: float = 0.0
    loss_l2: float = 1.0
    loss_linf: float = 0.02
    linf_k: int = 2048
    spectral: float = 0.0
    multispectral: float = 1.0
    # The term weighted by `multispectral`: "auraloss" = auraloss's MultiResolutionSTFTLoss (spectral convergence
    # + log-magnitude L1 at the mrstft_* resolutions, not bandwidth-normalised); "reference" = the reference's
    # |STFT| distance at its three fixed resolutions / the data's mean STFT norm (reproduces the reference).
    spectral_mode: str = "auraloss"
    # auraloss mode: one FFT size, hop and window length per resolution (defaults: for 22050-24000 Hz; scale them
    # with the sample rate), and auraloss's weights of spectral convergence, log- and linear-magnitude L1, phase.
    mrstft_fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512])
    mrstft_hop_sizes: list[int] = field(default_factory=lambda: [240, 120, 50])
    mrstft_win_lengths: list[int] = field(default_factory=lambda: [1200, 600, 240])
    mrstft_w_sc: float = 1.0
    mrstft_w_log_mag: float = 1.0
    mrstft_w_lin_mag: float = 0.0
    mrstft_w_phs: float = 0.0
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    # Per-level multipliers of width and depth (released model: bottom level 2x).
    multipliers: list[int] | None = None
    zero_out: bool = False
    res_scale: bool = False
    reverse_decoder_dilation: bool = True
    # Recompute residual blocks in the backward pass (less activation memory).
    checkpoint_res: bool = False
    # Audio channels the autoencoder sees (the reference: 1, stereo is blended to mono).
    channels: int = 1
    # Training crop in samples (a multiple of the top hop) and batch size of each level's stage.
    sample_length: int = 32768
    batch_size: int = 4
    # Batches of training audio used to estimate the loss normalisation at the start of a run.
    bandwidth_batches: int = 8
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class GuidanceDropout:
    """Per-example probabilities of training on the null artist / genre / lyrics (classifier-free guidance;
    `jukebox_pl.prior.guidance`)."""

    artist: float = 0.0
    genre: float = 0.0
    lyrics: float = 0.0


@dataclass
class PriorConfig:
    """One level's prior: a sparse transformer over that level's codes (reference hyperparameter names).

    `arch` names a file `configs/priors/<arch>.yaml` (prior_5b, small_prior, tiny_prior, ...) merged under this
    section before the preset's own values and the command line, so `prior.top.arch=prior_1b_lyrics` swaps the
    whole architecture and `prior.top.width=...` still wins.
    """

    arch: str | None = None
    n_ctx: int = 8192
    width: int = 1024
    depth: int = 48
    heads: int = 1
    attn_order: int = 2
    blocks: int = 64
    m_attn: float = 0.25
    m_mlp: float = 1.0
    init_scale: float = 0.7
    zero_out: bool = False
    res_scale: bool = False
    # Recompute residual blocks in the backward pass (the reference's c_res).
    checkpoint_res: bool = True
    # The released 5B priors: own output head, timing not added again after the transformer.
    merged_decoder: bool = False
    # Artist + genre start token (and, on the top level, timing embeddings).
    labels: bool = True
    # [genres, artists] embedding sizes; null = from the shards' vocab.json.
    y_bins: list[int] | None = None
    t_bins: int = 64
    min_duration: float = 60.0
    max_duration: float = 600.0
    # Lyrics (top level): "none", "encoder" (separate lyrics encoder + cross-attention layers) or "merged"
    # (one sequence of n_tokens characters then the music codes, prime-attention layers).
    lyrics: str = "none"
    n_tokens: int = 0
    lyrics_vocab: str = "v2"
    prime_loss_fraction: float = 0.4
    prime_width: int = 128
    prime_depth: int = 3
    prime_heads: int = 1
    prime_attn_order: int = 0
    prime_blocks: int | None = None
    prime_m_attn: float = 0.25
    prime_m_mlp: float = 1.0
    prime_init_scale: float = 1.0
    prime_zero_out: bool = False
    prime_res_scale: bool = False
    prime_checkpoint_res: bool = False
    # Upsamplers: the conv stack that up-samples the codes of the level above.
    cond_width: int = 1024
    cond_depth: int = 16
    cond_m_conv: float = 1.0
    cond_dilation_growth_rate: int = 3
    cond_dilation_cycle: int | None = 8
    cond_zero_out: bool = False
    cond_res_scale: bool = False
    cond_checkpoint_res: bool = False
    # Extra conditioners by name: {target: package.module.ClassName, **its keyword arguments}; each is a
    # jukebox_pl.prior.conditioning.Conditioner (see there), added to the labels/upper-level/lyrics ones.
    conditioners: dict[str, Any] = field(default_factory=dict)
    # Classifier-free guidance: train on the null artist / genre / lyrics with these probabilities, so that
    # `sample --cfg-scale` can contrast conditional and null-conditioned logits (jukebox_pl.prior.guidance).
    cfg_drop: GuidanceDropout = field(default_factory=GuidanceDropout)
    # Which cross/prime attention layer and head align lyrics to music (for the sample gallery).
    alignment_layer: int | None = None
    alignment_head: int | None = None
    batch_size: int = 1
    # Decay of the exponential moving average of the weights used for validation, sampling and export
    # (null = no EMA copy).
    ema_decay: float | None = None
    # What learns when fine-tuning: all, embeddings, top-layers:N or lora:RANK (see jukebox_pl.prior.trainable);
    # in every mode but all, the label rows of the base model's artists and genres stay exactly as they were.
    trainable: str = "all"
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class PriorLevels:
    """A prior per VQ-VAE level, by level name (a 2-level VQ-VAE uses bottom and top)."""

    bottom: PriorConfig = field(default_factory=PriorConfig)
    middle: PriorConfig = field(default_factory=PriorConfig)
    top: PriorConfig = field(default_factory=PriorConfig)


@dataclass
class RunSection:
    """Checkpointing and logging cadence shared by all stages."""

    checkpoint_every_n_steps: int = 1000
    # How many step checkpoints to keep besides last.ckpt (-1 keeps all).
    keep_checkpoints: int = 3
    log_audio_every_n_steps: int = 500
    n_audio_examples: int = 2
    # A bad step is rolled back (weights, optimiser state, EMA copy and codebook as before it); this many in a row
    # stop the run, with last.ckpt holding the healthy state. A step is bad when its loss or gradient is NaN/inf,
    # its loss is over max_loss_jump x the median of the recent ones (0 = off), or its update would move the
    # weights by over max_update_ratio x their norm (||w_after - w_before|| / ||w_before||, predicted for
    # Adam/AdamW before the step, so no copy of the weights is kept; 0 = off).
    max_nonfinite_steps_in_a_row: int = 10
    max_update_ratio: float = 10.0
    max_loss_jump: float = 1000.0


@dataclass
class RunConfig:
    """The whole resolved configuration of one run; saved beside every run and inside its checkpoints."""

    preset: str = "tiny"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunSection = field(default_factory=RunSection)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    prior: PriorLevels = field(default_factory=PriorLevels)
