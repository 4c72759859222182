"""The combined hierarchical VQ-VAE (the paper's ablation): shapes, gradients, learning, Lightning, codebooks."""

import math

import pytest
import pytorch_lightning as pl
import torch

from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.errors import UserValueError
from jukebox_pl.vqvae.hierarchical import HierarchicalVQVAE
from jukebox_pl.vqvae.lightning import HierarchicalVQVAEModule

T = 2048  # over half the 2048-point STFT of the bandwidth estimate and spectral metric (reflect padding)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    settings = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, width=8, depth=1, emb_width=8)
    settings.update(mrstft_fft_sizes=[256, 128], mrstft_hop_sizes=[64, 32], mrstft_win_lengths=[256, 128])
    settings.update(overrides)
    return vqvae_config(None, **settings)


def sine(n: int = 2, length: int = T, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(length) / 22050
    phases = torch.arange(n)[:, None] * 0.7
    return (0.5 * torch.sin(2 * math.pi * freq * t + phases))[:, None]


def test_shapes_and_the_encode_decode_round_trip():
    torch.manual_seed(0)
    model = HierarchicalVQVAE(tiny(levels=3, downs_t=[2, 1, 1], strides_t=[2, 2, 2]))
    assert model.hop_lengths == [4, 8, 16]
    x = sine(2)
    model.train()
    model(x)  # initialises the codebooks
    model.eval()
    out = model(x)
    assert out.recon.shape == x.shape
    assert [tuple(c.shape) for c in out.codes] == [(2, T // 4), (2, T // 8), (2, T // 16)]
    assert {"level0/fit", "level1/fit", "level2/fit"} <= set(out.metrics)
    assert {"commit", "commit_level0", "commit_level2", "recons", "multispectral"} <= set(out.terms)
    codes = model.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(codes, out.codes))
    torch.testing.assert_close(model.decode(codes), out.recon, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserValueError, match="multiple of the top level's hop 16"):
        model(x[..., :-4])
    padded = model.encode(x[..., :-4])  # encode pads to the top hop
    assert [c.shape[-1] for c in padded] == [T // 4, T // 8, T // 16]
    with pytest.raises(UserValueError, match="all 3 levels"):
        model.decode(codes[:2])


def test_the_loss_reaches_every_encoder_and_decoder_parameter():
    torch.manual_seed(0)
    model = HierarchicalVQVAE(tiny(spectral=0.1))
    model.train()
    out = model(sine(2))
    out.loss.backward()
    params = dict(model.named_parameters())
    assert any(n.startswith("encoders.1.") for n in params) and any(n.startswith("decoders.1.") for n in params)
    missing = [n for n, p in params.items() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert torch.isfinite(out.loss) and "spectral" in out.terms


def test_a_few_adam_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = HierarchicalVQVAE(tiny(multispectral=0.0, loss_linf=0.0))
    model.train()
    x = sine(2, freq=220.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses


def test_the_lightning_module_fits_and_logs_held_out_code_use_per_level():
    torch.manual_seed(0)
    cfg = tiny(bandwidth_batches=1, spectral_mode="reference")
    module = HierarchicalVQVAEModule(cfg, sample_rate=22050)
    data = [{"audio": a} for a in sine(6)]  # 3 batches: the epoch, and its validation, ends at step 3
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 3
    assert bool(module.bandwidth_ready) and module.bandwidth[1].item() == pytest.approx(0.125, rel=0.05)
    metrics = trainer.callback_metrics
    for level in range(2):
        for key in (f"val/level{level}_codes_used", f"val/level{level}_perplexity"):
            assert key in metrics, sorted(metrics)
        assert 1 <= metrics[f"val/level{level}_codes_used"] <= 16
        assert f"codebook/level{level}/codes_alive_ema" in metrics
    assert "val/loss" in metrics and "train/loss" in metrics
    assert module.throughput_units(data[0]["audio"][None]) == pytest.approx(T / 22050)
    assert module.reconstruct(sine(1)).shape == (1, 1, T)


def test_codebooks_update_in_training_and_not_in_eval():
    torch.manual_seed(0)
    model = HierarchicalVQVAE(tiny())
    x = sine(2)
    model.train()
    model(x)  # first batch: initialise
    before = [b.k.clone() for b in model.bottlenecks]
    model(x * 0.5)
    assert all(not torch.equal(k, b.k) for k, b in zip(before, model.bottlenecks))
    model.eval()
    before = [(b.k.clone(), b.k_sum.clone(), b.k_elem.clone()) for b in model.bottlenecks]
    with torch.no_grad():
        model(x * 0.25)
    for (k, k_sum, k_elem), b in zip(before, model.bottlenecks):
        assert torch.equal(k, b.k) and torch.equal(k_sum, b.k_sum) and torch.equal(k_elem, b.k_elem)
