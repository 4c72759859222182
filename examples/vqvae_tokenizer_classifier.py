"""A frozen, trained VQ-VAE level as an audio tokenizer inside your own LightningModule.

The VQ-VAE turns audio into discrete codes (one per `hop_length` samples). This example trains a small artist
classifier on those codes: embedding of codes -> mean over time -> linear over the vocab's artists. Only the
head learns; the tokenizer stays frozen (eval mode, no gradients). It uses our `AudioDataModule` for labelled
crops and a plain `pytorch_lightning.Trainer`, and prints train/val accuracy.

    python examples/vqvae_tokenizer_classifier.py --run runs/demo --shards data/toy_shards
    python examples/vqvae_tokenizer_classifier.py --vqvae runs/demo/vqvae_top/export.pt --shards data/toy_shards
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from jukebox_pl import VQVAE, AudioDataModule, VQVAELevelModel


class CodeArtistClassifier(pl.LightningModule):
    """Audio -> frozen VQ-VAE codes -> embedding -> mean pool -> artist logits."""

    def __init__(self, tokenizer: VQVAELevelModel, n_artists: int, emb_width: int = 64, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.embed = nn.Embedding(tokenizer.cfg.l_bins, emb_width)
        self.head = nn.Linear(emb_width, n_artists)

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: its codebook must not update while the head trains
        return self

    @torch.no_grad()
    def tokenize(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (N, C, T) -> codes (N, T / hop_length)."""
        return self.tokenizer.encode(audio)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(self.tokenize(audio)).mean(dim=1))

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self(batch["audio"])
        loss = F.cross_entropy(logits, batch["artist"])
        acc = (logits.argmax(-1) == batch["artist"]).float().mean()
        n = batch["artist"].shape[0]
        self.log(f"{split}_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log(f"{split}_acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam([*self.embed.parameters(), *self.head.parameters()], lr=self.hparams.lr)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder with trained levels (RUN/vqvae_<level>/export.pt or last.ckpt)")
    src.add_argument("--vqvae", nargs="+", help="level checkpoints or exports")
    p.add_argument("--level", default=None, help="level to tokenize with (name or index; default: the top loaded)")
    p.add_argument("--shards", required=True, help="a `jukebox-pl prep` folder at the VQ-VAE's sample rate")
    p.add_argument("--sample-length", type=int, default=65536, help="samples per crop")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epoch-length", type=int, default=256, help="training crops per epoch")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--out", default="runs/examples/tokenizer_classifier", help="Trainer root folder")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    pl.seed_everything(args.seed, verbose=False)
    vqvae = VQVAE.from_run(args.run) if args.run else VQVAE.from_checkpoints(args.vqvae)
    tokenizer = vqvae.level(args.level if args.level is not None else max(vqvae.available()))

    data = AudioDataModule(
        shards=args.shards,
        sample_rate=vqvae.sample_rate,
        sample_length=args.sample_length,
        batch_size=args.batch_size,
        epoch_length=args.epoch_length,
        num_workers=0,
    )
    data.setup("fit")  # reads the vocab, so the head knows how many artists there are
    model = CodeArtistClassifier(tokenizer, data.vocab.n_artists, lr=args.lr)

    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        default_root_dir=args.out,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    with warnings.catch_warnings():  # Lightning warns about modules in eval mode: the frozen tokenizer is, on purpose
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        trainer.fit(model, datamodule=data)
    train_acc = float(trainer.callback_metrics["train_acc"])
    val_acc = float(trainer.validate(model, datamodule=data, verbose=False)[0]["val_acc"])

    batch = next(iter(data.val_dataloader()))
    codes = model.tokenize(batch["audio"].to(model.device))
    print(f"tokenizer: level {tokenizer.level}, hop {tokenizer.hop_length}, {tokenizer.cfg.l_bins} codes")
    print(f"codes per crop: {tuple(codes.shape)} from audio {tuple(batch['audio'].shape)}")
    print(f"artists: {data.vocab.n_artists} (incl. 'unknown'); train accuracy {train_acc:.3f}, val {val_acc:.3f}")
    return {"train_acc": train_acc, "val_acc": val_acc, "codes_shape": tuple(codes.shape), "model": model}


if __name__ == "__main__":
    main()
