"""Run by tests/test_vqvae_training.py: 2-process CPU DDP training of a tiny VQ-VAE level.

Each rank writes its codebook state after training; the test checks they are identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from jukebox_pl.stages.train_vqvae import train_vqvae


class DumpCodebook(pl.Callback):
    def __init__(self, out: Path):
        self.out = out
        self.keys: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys += batch["key"]

    def on_train_end(self, trainer, pl_module):
        b = pl_module.model.bottleneck
        torch.save(
            {
                "k": b.k.clone(),
                "k_elem": b.k_elem.clone(),
                "k_sum": b.k_sum.clone(),
                "keys": self.keys,
                "step": trainer.global_step,
                "bandwidth": pl_module.bandwidth.clone(),
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )


def main(shards: str, run: str, out: str) -> None:
    overrides = [
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_steps=6",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "vqvae.l_bins=32",
        "vqvae.width=8",
        "vqvae.depth=2",
        "vqvae.sample_length=2048",
        "vqvae.batch_size=2",
        "vqvae.bandwidth_batches=1",
        "data.epoch_length=64",
        "run.log_audio_every_n_steps=0",
    ]
    train_vqvae(run, "bottom", "tiny", shards, overrides, callbacks=[DumpCodebook(Path(out))])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
