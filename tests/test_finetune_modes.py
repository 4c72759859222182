"""What each `prior.<level>.trainable` mode trains: frozen weights and the base model's label rows stay bit for
bit; a LoRA run's checkpoint samples as the adapted model through the sampler's loader."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.lightning import PriorModule
from jukebox_pl.prior.trainable import Trainable
from jukebox_pl.sampling.models import load_prior

VQ = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, emb_width=8, width=8, depth=1)
KEPT = {"y_emb.artist_emb.emb.weight": 3, "y_emb.bow_genre_emb.emb.weight": 2}  # the base had 3 artists, 2 genres


def module(**changes) -> PriorModule:
    torch.manual_seed(0)
    prior = prior_config(arch="tiny_prior", n_ctx=32, blocks=4, width=32, n_tokens=8, prime_blocks=4,
                         lyrics="none", attn_order=2, depth=2, ema_decay=0.9, **changes)  # fmt: skip
    prior.optim.weight_decay = 0.01  # AdamW: decay would move frozen rows if they were in the optimiser
    return PriorModule(prior, "top", vqvae_config(**VQ), 22050, y_bins=(3, 5))


def fit(m: PriorModule, tmp_path, steps: int = 3) -> pl.Trainer:
    batches = [
        {"codes": torch.randint(0, 16, (2, 32)), "artist": torch.tensor([1, 4]), "genres": torch.tensor([[1], [2]]),
         "total_length": torch.tensor([22050 * 30] * 2), "offset": torch.tensor([0, 22050])}
        for _ in range(steps)
    ]  # fmt: skip
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(m, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return trainer


@pytest.mark.parametrize("mode", ["embeddings", "top-layers:1", "lora:2", "all"])
def test_each_mode_trains_what_it_names_and_nothing_else(mode, tmp_path):
    m = module()
    base = {k: v.clone() for k, v in m.model.state_dict().items()}
    learning = m.set_trainable(mode, KEPT)
    assert learning == sum(p.numel() for p in m.model.parameters() if p.requires_grad)
    fit(m, tmp_path)
    now = {k.replace(".base.", "."): v for k, v in m.model.state_dict().items() if "lora_" not in k}
    moved = {k for k in base if not torch.equal(base[k], now[k])}
    artists = "y_emb.artist_emb.emb.weight"
    if mode == "all":
        assert len(moved) > len(base) // 2
        return
    assert torch.equal(now[artists][:3], base[artists][:3]), "a base artist's row changed"
    assert not torch.equal(now[artists][4], base[artists][4]), "the new artist's row did not learn"
    tables = {artists, "y_emb.bow_genre_emb.emb.weight"}
    if mode in ("embeddings", "lora:2"):
        assert moved <= tables
    else:
        last = len(m.model.prior.transformer._attn_mods) - 1
        assert moved - tables and all(k in tables or f"_attn_mods.{last}." in k for k in moved)


def test_fine_tuning_with_label_dropout_teaches_the_null_rows_and_keeps_the_others(tmp_path):
    """With `cfg_drop` (guidance), the dropped examples train row 0 of the artist and genre tables (the null,
    "unknown"); the base model's other rows stay bit for bit under `--train embeddings`."""
    m = module(cfg_drop={"artist": 0.5, "genre": 0.5})
    base = {k: v.clone() for k, v in m.model.state_dict().items()}
    m.set_trainable("embeddings", KEPT)
    torch.manual_seed(1)
    fit(m, tmp_path, steps=4)
    now = m.model.state_dict()
    for table, n in KEPT.items():
        assert not torch.equal(now[table][0], base[table][0]), f"{table}: the null row did not learn"
        assert torch.equal(now[table][1:n], base[table][1:n]), f"{table}: a base row changed"


def test_a_lora_checkpoint_samples_as_the_adapted_model(tmp_path):
    m = module()
    m.set_trainable("lora:2", KEPT)
    trainer = fit(m, tmp_path, steps=2)
    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    merged, _ = load_prior(tmp_path / "lora.ckpt")
    codes = torch.randint(0, 16, (2, 32))
    labels = {"artist": torch.tensor([1, 4]), "genres": torch.tensor([[1], [2]]),
              "total_length": torch.tensor([22050 * 30] * 2), "offset": torch.tensor([0, 22050])}  # fmt: skip
    m.ema_model.eval()
    with torch.no_grad():
        want = m.ema_model(codes, return_logits=True, **labels).logits
        got = merged(codes, return_logits=True, **labels).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_mode_is_named_or_refused():
    assert Trainable.parse("lora:8") == Trainable("lora", 8)
    assert Trainable.parse("top-layers:2") == Trainable("top-layers", 2)
    for bad in ("lora", "lora:0", "layers:2", "top-layers:x"):
        with pytest.raises(UserValueError, match="choose all, embeddings, top-layers:N or lora:RANK"):
            Trainable.parse(bad)
    with pytest.raises(UserValueError, match="the prior has 2 blocks"):
        module().set_trainable("top-layers:3")


def test_export_merge_writes_plain_weights_that_compute_the_same(tmp_path, capsys):
    from jukebox_pl.cli import main

    m = module()
    m.set_trainable("lora:2", KEPT)
    fit(m, tmp_path, steps=2).save_checkpoint(tmp_path / "lora.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "lora.ckpt"), "--out", str(tmp_path / "merged.pt"), "--merge"]) == 0
    state = torch.load(tmp_path / "merged.pt", weights_only=True)["state_dict"]
    assert not [k for k in state if "lora_" in k or ".base." in k]
    plain, _ = load_prior(tmp_path / "merged.pt")
    adapted, _ = load_prior(tmp_path / "lora.ckpt")
    codes = torch.randint(0, 16, (2, 32))
    labels = {"artist": torch.tensor([1, 4]), "genres": torch.tensor([[1], [2]]),
              "total_length": torch.tensor([22050 * 30] * 2), "offset": torch.tensor([0, 22050])}  # fmt: skip
    with torch.no_grad():
        want = adapted(codes, return_logits=True, **labels).logits
        got = plain(codes, return_logits=True, **labels).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
