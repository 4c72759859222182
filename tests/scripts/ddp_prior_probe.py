"""Run by tests/test_prior_training.py: 2-process CPU DDP training of a tiny top prior.

Each rank writes a digest of its weights after training; the test checks they are identical.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prior_settings import COMMON, PRIOR  # noqa: E402

from jukebox_pl.stages.train_prior import train_prior  # noqa: E402


class DumpWeights(pl.Callback):
    def __init__(self, out: Path):
        self.out, self.keys = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys += batch["key"]

    def on_train_end(self, trainer, pl_module):
        weights = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        ema = {k: v.detach().clone() for k, v in pl_module.ema_model.state_dict().items()}
        torch.save(
            {"weights": weights, "ema": ema, "keys": self.keys, "step": trainer.global_step},
            self.out / f"rank{trainer.global_rank}.pt",
        )


def main(shards: str, run: str, out: str) -> None:
    overrides = [
        *PRIOR,
        *COMMON,
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=0",
    ]
    train_prior(run, "top", "tiny", shards, overrides, callbacks=[DumpWeights(Path(out))])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
