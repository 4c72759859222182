"""Run by tests/test_ddp_data.py: a 2-process CPU DDP fit that records what each rank read.

Lightning's `ddp` strategy re-launches this script for rank 1, so it must be a real file run as __main__.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from jukebox_pl.data.datamodule import AudioDataModule


class Probe(pl.LightningModule):
    """A one-weight model whose steps log what they saw; validation logs with sync_dist like real modules."""

    def __init__(self, out: Path):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.out = out
        self.train_keys: list[str] = []
        self.val_keys: list[str] = []

    def training_step(self, batch, batch_idx):
        self.train_keys += batch["key"]
        return ((batch["audio"].mean() - self.weight) ** 2).sum()

    def validation_step(self, batch, batch_idx):
        self.val_keys += batch["key"]
        self.log("val/level", batch["audio"].abs().mean(), sync_dist=True, batch_size=len(batch["key"]))

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self.val_keys = []
            return
        record = {
            "rank": self.global_rank,
            "epoch": self.current_epoch,
            "val": self.val_keys,
            "train": self.train_keys,
            "world": self.trainer.world_size,
        }
        path = self.out / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(record))
        self.val_keys, self.train_keys = [], []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main(train_urls: str, val_urls: str, out: str, workers: int) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # "-" for the URLs: a `prep` folder (with its manifest) given as the val URLs argument
    where = dict(shards=val_urls) if train_urls == "-" else dict(train_urls=train_urls, val_urls=val_urls)
    dm = AudioDataModule(
        **where,
        sample_rate=22050,
        sample_length=4096,
        batch_size=2,
        epoch_length=12,
        num_workers=workers,
        val_crops_per_track=2,
        shuffle_buffer=4,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=1,
        enable_model_summary=False,
    )
    trainer.fit(Probe(out_dir), datamodule=dm)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
