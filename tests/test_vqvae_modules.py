"""The VQ-VAE maths on hand-made examples: codebook EMA, restarts, init, straight-through, presets."""

from pathlib import Path

import pytest
import torch

from jukebox_pl.config import load_config
from jukebox_pl.config.levels import hop_lengths, level_index
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.vqvae.bottleneck import Bottleneck
from jukebox_pl.vqvae.losses import (
    Bandwidth,
    SpectralLosses,
    estimate_bandwidth,
    pooled_spectral_convergence_db,
    recon_loss,
    spectral_convergence_db,
)
from jukebox_pl.vqvae.model import VQVAELevelModel, codebook_stats

KEYS = Path(__file__).resolve().parent / "fixtures" / "openai_jukebox" / "keys"


def as_latents(rows: torch.Tensor) -> torch.Tensor:
    """(N, C) rows -> (1, C, N) latents, the layout the bottleneck takes."""
    return rows.t()[None].contiguous()


def test_ema_update_and_restart_by_hand():
    torch.manual_seed(0)
    b = Bottleneck(l_bins=3, emb_width=2, mu=0.5, threshold=1.0)
    b.k.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-50.0, -50.0]]))
    b.k_sum.copy_(b.k)
    b.k_elem.fill_(1.0)
    b.initialised.fill_(True)
    b.train()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [11.0, 9.0], [9.0, 11.0]])
    out = b(as_latents(x))
    assert out.codes.tolist() == [[0, 0, 1, 1]]
    # counts: code0 2, code1 2, code2 0 -> k_elem = 0.5*1 + 0.5*count
    assert b.k_elem.tolist() == [1.5, 1.5, 0.5]
    torch.testing.assert_close(b.k_sum[0], 0.5 * torch.tensor([0.0, 0.0]) + 0.5 * torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(b.k[0], b.k_sum[0] / 1.5)
    torch.testing.assert_close(b.k[1], (0.5 * torch.tensor([10.0, 10.0]) + 0.5 * torch.tensor([20.0, 20.0])) / 1.5)
    # code 2 fell under the threshold: restarted on one of this batch's vectors
    assert any(torch.equal(b.k[2], row) for row in x)
    assert out.metrics["restarts"].item() == 1 and out.metrics["usage"].item() == 2


def test_codebook_init_from_encoder_outputs():
    torch.manual_seed(0)
    b = Bottleneck(l_bins=4, emb_width=3).train()
    x = torch.randn(10, 3)
    b(as_latents(x))
    assert bool(b.initialised)
    # with more vectors than codes, the codebook starts as (then EMA-moves slightly towards) data rows
    b2 = Bottleneck(l_bins=4, emb_width=3, mu=1.0).train()
    b2(as_latents(x))
    for row in b2.k:
        assert min((row - xr).abs().max() for xr in x) < 1e-6
    # fewer vectors than codes: tiled with a little noise
    b3 = Bottleneck(l_bins=8, emb_width=3, mu=1.0).train()
    b3(as_latents(x[:3]))
    assert all(min((row - xr).norm() for xr in x[:3]) < 0.1 for row in b3.k)


def test_eval_mode_never_touches_the_codebook():
    b = Bottleneck(l_bins=4, emb_width=2).train()
    b(as_latents(torch.randn(16, 2)))
    before = b.k.clone()
    b.eval()
    b(as_latents(torch.randn(16, 2) + 5))
    assert torch.equal(before, b.k)


def test_straight_through_gradient_and_commit_loss():
    torch.manual_seed(0)
    b = Bottleneck(l_bins=4, emb_width=2).train()
    b(as_latents(torch.randn(32, 2)))
    z = torch.randn(1, 2, 8, requires_grad=True)
    out = b(z, update=False)
    weight = torch.randn_like(out.quantised)
    (out.quantised * weight).sum().backward()
    torch.testing.assert_close(z.grad, weight)  # identity through the quantiser
    z.grad = None
    out = b(z, update=False)
    out.commit_loss.backward()
    q = b.decode(out.codes)
    torch.testing.assert_close(z.grad, 2 * (z - q) / z.numel())
    torch.testing.assert_close(out.commit_loss, ((z - q) ** 2).mean())


@pytest.mark.slow
def test_restarts_revive_dead_codes():
    torch.manual_seed(0)
    b = Bottleneck(l_bins=16, emb_width=4, mu=0.9).train()
    data = lambda: torch.randn(256, 4)  # noqa: E731
    b(as_latents(data()))
    b.k.add_(50.0)  # every code far from the data, with EMA counts about to fall under the threshold
    b.restore_ema()
    first = b(as_latents(data()))
    assert first.metrics["restarts"].item() >= 12  # all but the few codes nearest to the data
    for _ in range(60):
        out = b(as_latents(data()))
    assert b.k.abs().max() < 6, "dead codes were moved onto the data"
    assert out.metrics["usage"].item() == 16 and len(out.codes.unique()) >= 14


def test_losses():
    x = torch.zeros(2, 1, 4096)
    y = torch.ones(2, 1, 4096) * 0.5
    bw = Bandwidth(l1=0.5, l2=0.25, spec=1.0)
    assert recon_loss("l2", x, y, bw).item() == pytest.approx(1.0)
    assert recon_loss("l1", x, y, bw).item() == pytest.approx(1.0)
    y2 = y.clone()
    y2[:, :, :10] = 2.0
    assert recon_loss("linf", x, y2, bw, linf_k=10).item() == pytest.approx(16.0)
    with pytest.raises(ValueError, match="l3"):
        recon_loss("l3", x, y, bw)
    t = torch.randn(2, 1, 8192)
    spec = SpectralLosses("reference")
    assert spec.multispectral(t, t, bw).item() == 0.0
    assert spec.spectral_convergence(t, t).max().item() == 0.0
    assert spec.spectral_convergence(t, torch.zeros_like(t)).min().item() == pytest.approx(1.0)
    aura = SpectralLosses("auraloss")
    assert aura.multispectral(t, t + 0.1 * torch.randn_like(t), bw).item() > 0
    bw_est = estimate_bandwidth([t])
    assert bw_est.l2 == pytest.approx(t.var(unbiased=False).item(), rel=1e-4)


def test_pooled_spectral_convergence_weighs_a_quiet_clip_by_its_energy():
    torch.manual_seed(0)
    loud = 0.5 * torch.randn(1, 1, 8192)
    quiet = 0.003 * torch.randn(1, 1, 8192)  # a fade-in, decoded as noise 30 dB louder
    target, recon = torch.cat([loud, quiet]), torch.cat([loud * 0.9, quiet * 30])
    spec = SpectralLosses("reference")
    per_clip = spectral_convergence_db(spec.spectral_convergence(target, recon)).mean().item()
    pooled = pooled_spectral_convergence_db(*spec.spectral_error_energy(target, recon))
    assert per_clip > 0  # the per-clip mean calls this reconstruction worse than silence
    assert -16 < pooled < -12  # the loud clip's 10% error plus the quiet clip's noise, each by its energy
    silence = spec.spectral_error_energy(target, torch.zeros_like(target))
    assert pooled_spectral_convergence_db(*silence) == pytest.approx(0.0, abs=1e-3)


def test_codebook_stats():
    stats = codebook_stats(torch.tensor([0, 1, 2, 3] * 10), 8)
    assert stats["usage"] == 0.5 and stats["perplexity"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("preset", "params", "hops"),
    [("small", 586_050, [32, 256]), ("jukebox", 1_485_763, [8, 32, 128])],
)
def test_presets_match_reference_parameter_counts(preset, params, hops):
    cfg = load_config(preset).vqvae
    with torch.device("meta"):
        models = [VQVAELevelModel(cfg, level) for level in range(cfg.levels)]
    assert sum(p.numel() for m in models for p in m.parameters()) == params
    assert [m.hop_length for m in models] == hops == hop_lengths(cfg.downs_t, cfg.strides_t)
    assert all(m.bottleneck.k.shape == (cfg.l_bins, cfg.emb_width) for m in models)


def reference_names(model: VQVAELevelModel) -> dict[str, tuple]:
    names = {}
    for key, value in model.state_dict().items():
        if key.startswith("encoder."):
            names[f"encoders.{model.level}.{key[8:]}"] = tuple(value.shape)
        elif key.startswith("decoder."):
            names[f"decoders.{model.level}.{key[8:]}"] = tuple(value.shape)
        elif key == "bottleneck.k":
            names[f"bottleneck.level_blocks.{model.level}.k"] = tuple(value.shape)
    return names


@pytest.mark.parametrize(("preset", "key_file"), [("jukebox", "released/vqvae.txt"), ("small", "small_vqvae.txt")])
def test_state_dict_layout_matches_reference(preset, key_file):
    expected = {}
    for line in (KEYS / key_file).read_text().splitlines():
        name, shape = line.split("\t")[:2]
        expected[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    cfg = load_config(preset).vqvae
    ours = {}
    with torch.device("meta"):
        for level in range(cfg.levels):
            ours.update(reference_names(VQVAELevelModel(cfg, level)))
    assert ours == expected


def test_level_names_and_errors():
    assert level_index("top", 3) == 2 and level_index("bottom", 2) == 0 and level_index("1", 3) == 1
    with pytest.raises(ValueError, match="2 levels: bottom, top"):
        level_index("middle", 2)
    cfg = vqvae_config(load_config("tiny").vqvae)
    model = VQVAELevelModel(cfg, 2)
    with pytest.raises(ValueError, match="multiple of this level's hop 128"):
        model(torch.zeros(1, 1, 1000))
    codes = model.encode(torch.zeros(1, 1, 1000))
    assert codes.shape == (1, 8)


@pytest.mark.slow
def test_chunked_inference_matches_one_pass():
    torch.manual_seed(0)
    cfg = vqvae_config(load_config("tiny").vqvae)
    model = VQVAELevelModel(cfg, 1)
    x = torch.randn(1, 1, 64 * 1024) * 0.3
    model.train()
    model.bottleneck(model.encoder(x))  # initialise the codebook from these latents
    model.eval()
    with torch.no_grad():
        one_pass = model.bottleneck.encode(model.encoder(x))
        chunked = model.encode(x, chunk_samples=8192)
        assert chunked.shape == one_pass.shape and (chunked != one_pass).float().mean() < 0.01
        audio = model.decoder(model.bottleneck.decode(one_pass))
        torch.testing.assert_close(model.decode(one_pass, chunk_samples=4096), audio, atol=1e-5, rtol=0)


def test_several_rows_decode_one_by_one_to_the_same_audio(monkeypatch):
    """On a CPU `decode` takes the rows of a batch one at a time (their chunks stay in cache); every row's audio is
    what decoding all rows in one pass gives."""
    torch.manual_seed(0)
    model = VQVAELevelModel(vqvae_config(load_config("tiny").vqvae), 0).eval()
    codes = torch.randint(0, model.bottleneck.l_bins, (3, 700))
    with torch.no_grad():
        together = model.decoder(model.bottleneck.decode(codes))
        rows = []
        real = model.decoder.forward
        monkeypatch.setattr(model.decoder, "forward", lambda x: rows.append(x.shape[0]) or real(x))
        torch.testing.assert_close(model.decode(codes), together, atol=1e-5, rtol=0)
    assert rows and set(rows) == {1}


def test_checkpointed_residuals_give_the_same_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4096) * 0.3
    grads = []
    for checkpoint_res in (False, True):
        torch.manual_seed(1)
        cfg = vqvae_config(load_config("tiny").vqvae, checkpoint_res=checkpoint_res, width=8, depth=2)
        model = VQVAELevelModel(cfg, 0).train()
        torch.manual_seed(2)
        model(x).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_relative_restart_threshold_follows_the_batch():
    torch.manual_seed(0)
    b = Bottleneck(l_bins=4, emb_width=1, mu=0.0, relative_threshold=0.5)
    b.k.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    b.restore_ema()
    b.train()
    # 100 vectors near code 0, 4 near code 3: average 26 per code, threshold 13: codes 1, 2 and 3 restart
    x = torch.cat([torch.zeros(100, 1) + 0.01, torch.full((4, 1), 3.0)])
    out = b(x.t()[None])
    assert out.metrics["restarts"].item() == 3
    absolute = Bottleneck(l_bins=4, emb_width=1, mu=0.0, threshold=1.0)
    absolute.k.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    absolute.restore_ema()
    absolute.train()
    assert absolute(x.t()[None]).metrics["restarts"].item() == 2  # only the two codes nothing was near
