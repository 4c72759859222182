"""`jukebox-pl evaluate`: a prior's held-out bits/token on any shards, e.g. a fine-tuned prior on the base run's
validation songs (did it forget the old artists?) and on the new artist's (did it learn?).

The weights are the ones sampling uses (`sampling.models.load_prior`: the EMA copy, LoRA adapters merged), the
crops and labels the ones validation uses (the stage's DataModule over the shards' validation split, evenly
spaced crops, identical every time), and the names in the shards are looked up in the prior's own vocabulary,
so two priors with different tables are measured on the same songs with the same labels.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from jukebox_pl.stages.finetune import base_of, stage_config

METRICS = ("val/music_bits_per_token", "val/lyric_bits_per_token")


@contextmanager
def quiet_lightning():
    """Lightning's start-up lines (accelerators found, tips) are noise in a command that prints two figures."""
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def evaluate_prior(
    source: str | Path,
    data: str | Path,
    level: str = "top",
    overrides: list[str] = (),
    batches: int | None = None,
    echo=lambda text: print(text, file=sys.stderr),
    weights: str = "fp32",
) -> dict[str, float]:
    """Mean bits/token of the `level` prior of `source` (a run folder or a checkpoint/export inside one) over the
    validation split of the shards `data` (the first `batches` batches only, when given). Names the prior's
    vocabulary lacks (a new artist's songs, scored before fine-tuning) read as its unknown label; `echo` is told
    which. `weights` stores the prior as `sample --weights` would (int8, int4, bf16): what that costs in bits."""
    import pytorch_lightning as pl
    import torch

    from jukebox_pl.config import load_config
    from jukebox_pl.config.typed import run_config
    from jukebox_pl.prior.lightning import PriorModule
    from jukebox_pl.sampling.models import load_prior, vocab_of
    from jukebox_pl.stages.datamodules import check_shard_rate, prior_datamodule
    from jukebox_pl.vqvae.fingerprint import check_pairing
    from jukebox_pl.vqvae.vqvae import VQVAE

    ckpt, run = base_of(source, level)
    preset = stage_config(ckpt)
    model, hp = load_prior(ckpt, weights)
    where = [f"data.shards={data}", "data.train_urls=null", "data.val_urls=null", "data.vocab=null"]
    cfg = run_config(load_config(str(preset), [*overrides, *where]))
    check_shard_rate(cfg, str(preset))
    dm = prior_datamodule(cfg, hp["level"])
    vocab = vocab_of(hp)
    if vocab is not None:  # the names in the shards looked up in the prior's own table
        dm.use_vocab(vocab, f"the vocabulary of {ckpt}", unknown_as_unknown=True)
    dm.setup("validate")
    unknown = {kind: names for kind, names in dm.unknown_labels.items() if names}
    if unknown:
        told = "; ".join(f"{kind} {names}" for kind, names in unknown.items())
        echo(f"not in the vocabulary of {ckpt}, so read as the unknown label (id 0), as this prior would take "
             f"them when sampling: {told}")  # fmt: skip
    vqvae = VQVAE.from_run(run)
    # measured on another VQ-VAE's codes, the figures would mean nothing
    check_pairing(getattr(model, "vqvae_fingerprint", None), vqvae, hp["level"], str(ckpt), f"the VQ-VAE of {run}")
    with torch.device("meta"):  # no memory: the module only carries the loaded model
        module = PriorModule(hp["prior"], hp["level"], hp["vqvae_cfg"], hp["sample_rate"], y_bins=hp["y_bins"],
                             vqvae=vqvae)  # fmt: skip
    module.model, module.ema_model = model, None
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="auto", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=batches if batches else 1.0,
        )  # fmt: skip
        result = trainer.validate(module, datamodule=dm, verbose=False)[0]
    return {k.removeprefix("val/"): float(v) for k, v in result.items() if k in METRICS}
