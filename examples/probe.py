"""A probe on Jukebox features: a small classifier trained on what `jukebox-pl features` wrote.

The MIR recipe (Castellon et al., 2021): extract the top prior's activations at one layer, pool them, and train a
linear model (or one hidden layer) on them for the task at hand. This script reads a features folder (its
`features.json` index and one array per track), takes each track's label from the index (`track_artist` /
`track_genre`: the labels the shards carry), splits the tracks into train and validation (every class in both),
standardises the features with the training set's statistics and trains the probe with a plain
`pytorch_lightning.Trainer`, reporting accuracy (torchmetrics) against chance.

    jukebox-pl features --run runs/demo --data data/toy_shards --out runs/features --layers 2 --pool mean
    python examples/probe.py --features runs/features --layer 2 --label artist

Windows pooling (`--pool 2.0`) gives several rows per track; they stay together on one side of the split.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy


def load_features(folder: str | Path, layer: int, label: str) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Per track: its rows (n, width), its label and its key; tracks without that label are left out."""
    folder = Path(folder)
    index = json.loads((folder / "features.json").read_text())
    rows, labels, keys = [], [], []
    for key, record in index["tracks"].items():
        value = record.get(f"track_{label}")
        if not value or str(layer) not in record["files"]:
            continue
        array = np.load(folder / record["files"][str(layer)], allow_pickle=False)
        rows.append(array.reshape(-1, array.shape[-1]))
        labels.append(value)
        keys.append(key)
    if not rows:
        raise SystemExit(f"{folder}: no track has layer {layer} and a {label} label")
    return rows, labels, keys


def split_tracks(labels: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Track indices for train and validation: per class, a shuffled `val_fraction` (at least one track) is held
    out when the class has two tracks or more."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for name in sorted(set(labels)):
        members = [i for i, lb in enumerate(labels) if lb == name]
        rng.shuffle(members)
        n_val = max(1, round(val_fraction * len(members))) if len(members) > 1 else 0
        val += members[:n_val]
        train += members[n_val:]
    return sorted(train), sorted(val)


class Probe(pl.LightningModule):
    """Standardised features -> linear (hidden=0) or one hidden ReLU layer -> class logits."""

    def __init__(self, width: int, n_classes: int, hidden: int = 0, lr: float = 1e-2, weight_decay: float = 1e-3,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["mean", "std"])
        self.register_buffer("mean", torch.zeros(width) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(width) if std is None else std.float())
        layers = [nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)] if hidden else [
            nn.Linear(width, n_classes)
        ]  # fmt: skip
        self.net = nn.Sequential(*layers)
        self.train_acc = MulticlassAccuracy(n_classes, average="micro")
        self.val_acc = MulticlassAccuracy(n_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val_acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", required=True, help="a folder written by `jukebox-pl features`")
    p.add_argument("--layer", type=int, required=True, help="which layer's arrays to read")
    p.add_argument("--label", choices=("artist", "genre"), default="artist")
    p.add_argument("--hidden", type=int, default=0, help="one hidden layer of this width (0: linear)")
    p.add_argument("--val-fraction", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    pl.seed_everything(args.seed, verbose=False)
    rows, labels, keys = load_features(args.features, args.layer, args.label)
    classes = sorted(set(labels))
    train, val = split_tracks(labels, args.val_fraction, args.seed)

    def tensors(tracks: list[int]) -> TensorDataset:
        x = torch.from_numpy(np.concatenate([rows[i] for i in tracks])).float()
        y = torch.tensor([classes.index(labels[i]) for i in tracks for _ in range(len(rows[i]))])
        return TensorDataset(x, y)

    train_set, val_set = tensors(train), tensors(val)
    x = train_set.tensors[0]
    probe = Probe(x.shape[1], len(classes), args.hidden, args.lr, mean=x.mean(0), std=x.std(0).clamp(min=1e-6))
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)  # fmt: skip
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=args.batch_size)
    trainer.fit(probe, train_loader, val_loader)
    train_acc = float(trainer.callback_metrics["train_acc"])
    val_acc = float(trainer.validate(probe, val_loader, verbose=False)[0]["val_acc"])
    counts = np.bincount(val_set.tensors[1].numpy(), minlength=len(classes))
    chance = float(counts.max() / counts.sum())  # always answering the largest validation class
    print(f"{args.label} probe on layer {args.layer}: {len(classes)} classes, {len(train)} train / {len(val)} val "
          f"tracks ({len(train_set)} / {len(val_set)} rows); train accuracy {train_acc:.3f}, val {val_acc:.3f} "
          f"(chance {chance:.3f})")  # fmt: skip
    return {"train_acc": train_acc, "val_acc": val_acc, "chance": chance, "classes": classes, "model": probe,
            "val_tracks": [keys[i] for i in val]}  # fmt: skip


if __name__ == "__main__":
    main()
