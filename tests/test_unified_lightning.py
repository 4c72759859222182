"""A project on the unified `lightning` package trains our modules with its own Trainer."""

from __future__ import annotations

import lightning as L
import pytest
import pytorch_lightning as pl
import torch

from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.unified_lightning import AudioDataModule, PriorModule, VQVAELevel

VQ = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, emb_width=8, width=8, depth=1, bandwidth_batches=1)


def trainer(steps: int = 2) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        num_sanity_val_steps=0, limit_val_batches=1, enable_model_summary=False,
    )  # fmt: skip


@pytest.mark.slow
def test_vqvae_level_and_datamodule_fit_under_the_unified_trainer(shards):
    torch.manual_seed(0)
    module = VQVAELevel(vqvae_config(**VQ), "top", 22050)
    dm = AudioDataModule(shards=str(shards), sample_rate=22050, sample_length=4096, batch_size=2, epoch_length=8)
    assert isinstance(module, L.LightningModule) and not isinstance(module, pl.LightningModule)
    assert isinstance(dm, L.LightningDataModule)
    t = trainer()
    t.fit(module, datamodule=dm)
    assert t.global_step == 2 and torch.isfinite(t.callback_metrics["train/loss"])
    assert bool(module.bandwidth_ready)


@pytest.mark.slow
def test_prior_module_fits_on_code_batches_under_the_unified_trainer():
    torch.manual_seed(0)
    prior = prior_config(arch="tiny_prior", n_ctx=32, blocks=4, width=32, n_tokens=8, prime_blocks=4, lyrics="none",
                         attn_order=2, depth=2, ema_decay=None)  # fmt: skip
    module = PriorModule(prior, "top", vqvae_config(**VQ), 22050, y_bins=(3, 4))
    batches = [
        {"codes": torch.randint(0, 16, (2, 32)), "artist": torch.tensor([1, 2]), "genres": torch.tensor([[1], [2]]),
         "total_length": torch.tensor([22050 * 30] * 2), "offset": torch.tensor([0, 22050])}
        for _ in range(2)
    ]  # fmt: skip
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    t = trainer()
    t.fit(module, train_dataloaders=loader)
    assert t.global_step == 2 and torch.isfinite(t.callback_metrics["train/loss"])
