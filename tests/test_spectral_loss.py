"""The VQ-VAE's multi-resolution spectral term: auraloss by default (configured per preset), the reference's on demand.

That the "reference" mode still reproduces the reference's losses and gradients is shown by
tests/test_vqvae_reference.py, which runs in that mode at its original tolerances.
"""

import auraloss
import pytest
import torch

from jukebox_pl.config import load_config
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.vqvae.losses import Bandwidth, MRSTFTSettings, SpectralLosses
from jukebox_pl.vqvae.model import VQVAELevelModel

PRESETS = ("tiny", "small", "jukebox")


def signals(n: int = 3, length: int = 8192, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A target with some structure (two tones + noise) and a prediction near it."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 22050
    tone = 0.4 * torch.sin(2 * torch.pi * 330 * t) + 0.2 * torch.sin(2 * torch.pi * 1250 * t)
    target = (tone + 0.05 * torch.randn(n, 1, length, generator=g)).float()
    pred = target + 0.1 * torch.randn(n, 1, length, generator=g)
    return target, pred


def auraloss_of(cfg) -> auraloss.freq.MultiResolutionSTFTLoss:
    """auraloss's own module with a config's sizes and weights, built independently of our code."""
    return auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=list(cfg.mrstft_fft_sizes),
        hop_sizes=list(cfg.mrstft_hop_sizes),
        win_lengths=list(cfg.mrstft_win_lengths),
        w_sc=cfg.mrstft_w_sc,
        w_log_mag=cfg.mrstft_w_log_mag,
        w_lin_mag=cfg.mrstft_w_lin_mag,
        w_phs=cfg.mrstft_w_phs,
    )


def test_auraloss_is_the_default():
    assert vqvae_config().spectral_mode == "auraloss"
    for preset in PRESETS:
        assert load_config(preset).vqvae.spectral_mode == "auraloss"


@pytest.mark.parametrize("preset", PRESETS)
def test_value_equals_auraloss_with_the_preset_sizes(preset):
    cfg = load_config(preset).vqvae
    target, pred = signals(length=16384)
    ours = SpectralLosses.from_config(cfg).multispectral(target, pred, Bandwidth(spec=123.0))
    want = auraloss_of(cfg)(pred, target)
    assert ours.item() > 0.1
    torch.testing.assert_close(ours, want, rtol=1e-6, atol=0)
    # not bandwidth-normalised: the data's spectral norm does not enter the term
    other = SpectralLosses.from_config(cfg).multispectral(target, pred, Bandwidth(spec=1.0))
    assert other.item() == ours.item()


def test_non_default_weights_and_sizes_equal_auraloss():
    cfg = vqvae_config(
        mrstft_fft_sizes=[1024, 256],
        mrstft_hop_sizes=[128, 32],
        mrstft_win_lengths=[1024, 200],
        mrstft_w_sc=0.5,
        mrstft_w_log_mag=2.0,
        mrstft_w_lin_mag=0.3,
        mrstft_w_phs=0.1,
    )
    target, pred = signals()
    ours = SpectralLosses.from_config(cfg).multispectral(target, pred, Bandwidth())
    torch.testing.assert_close(ours, auraloss_of(cfg)(pred, target), rtol=1e-6, atol=0)


def test_the_model_term_is_auraloss_of_reconstruction_and_input():
    torch.manual_seed(0)
    cfg = vqvae_config(levels=1, downs_t=[2], strides_t=[2], l_bins=16, emb_width=8, width=8, depth=1)
    model = VQVAELevelModel(cfg, 0).eval()
    x, _ = signals(n=2)
    out = model(x, Bandwidth(l1=0.3, l2=0.05, spec=40.0))
    torch.testing.assert_close(out.terms["multispectral"], auraloss_of(cfg)(out.recon, x), rtol=1e-6, atol=0)
    want = out.terms["recons"] + cfg.multispectral * out.terms["multispectral"] + cfg.commit * out.terms["commit"]
    torch.testing.assert_close(out.loss, want)


def test_zero_for_identical_inputs_with_finite_gradients():
    spec = SpectralLosses.from_config(load_config("tiny").vqvae)
    target, _ = signals()
    pred = target.clone().requires_grad_()
    loss = spec.multispectral(target, pred, Bandwidth())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silence_is_finite():
    spec = SpectralLosses.from_config(load_config("tiny").vqvae)
    silence = torch.zeros(2, 1, 8192)
    pred = silence.clone().requires_grad_()
    loss = spec.multispectral(silence, pred, Bandwidth())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    noisy = (0.1 * torch.randn(2, 1, 8192)).requires_grad_()
    loss = spec.multispectral(silence, noisy, Bandwidth())  # a silent target: large, but finite
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(noisy.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_and_finite_under_autocast(dtype):
    spec = SpectralLosses.from_config(load_config("jukebox").vqvae)
    target, pred = signals(length=16384)
    target, pred = 3.0 * target, 3.0 * pred  # loud: |STFT|^2 of such audio overflows fp16 (max 65504)
    half_t, half_p = target.to(dtype), pred.to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = spec.multispectral(half_t, half_p, Bandwidth())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # the same value as in fp32 on the half-precision samples
    torch.testing.assert_close(loss, auraloss_of(load_config("jukebox").vqvae)(half_p.float(), half_t.float()))
    loss.backward()
    assert torch.isfinite(half_p.grad.float()).all() and half_p.grad.abs().sum() > 0


def test_nan_samples_do_not_make_the_term_nan():
    spec = SpectralLosses.from_config(load_config("tiny").vqvae)
    target, pred = signals()
    pred[0, 0, 100] = float("nan")
    pred[1, 0, 200] = float("inf")
    pred.requires_grad_()
    loss = spec.multispectral(target, pred, Bandwidth())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 100] == 0 and pred.grad[1, 0, 200] == 0


def test_gradient_flows_to_the_decoder_and_encoder():
    torch.manual_seed(0)
    cfg = vqvae_config(
        levels=1, downs_t=[2], strides_t=[2], l_bins=16, emb_width=8, width=8, depth=1, loss_l2=0.0, loss_linf=0.0
    )
    model = VQVAELevelModel(cfg, 0).train()
    x, _ = signals(n=2)
    out = model(x, Bandwidth())
    out.terms["multispectral"].backward()
    for part in (model.decoder, model.encoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_keys_reach_the_module(preset):
    cfg = load_config(preset).vqvae
    model = VQVAELevelModel(cfg, 0) if preset == "tiny" else None
    spec = model.spectral if model is not None else SpectralLosses.from_config(cfg)
    losses = spec.mrstft.stft_losses
    assert [m.fft_size for m in losses] == list(cfg.mrstft_fft_sizes)
    assert [m.hop_size for m in losses] == list(cfg.mrstft_hop_sizes)
    assert [m.win_length for m in losses] == list(cfg.mrstft_win_lengths)
    assert [len(m.window) for m in losses] == list(cfg.mrstft_win_lengths)
    for name in ("w_sc", "w_log_mag", "w_lin_mag", "w_phs"):
        assert {getattr(m, name) for m in losses} == {cfg[f"mrstft_{name}"]}


def test_presets_sizes_follow_the_sample_rate():
    """The 44.1 kHz preset's windows last as long as the 22.05 kHz presets' (twice the samples)."""
    base = load_config("small").vqvae
    assert list(load_config("tiny").vqvae.mrstft_win_lengths) == list(base.mrstft_win_lengths)
    jukebox = load_config("jukebox").vqvae
    for key in ("mrstft_fft_sizes", "mrstft_hop_sizes", "mrstft_win_lengths"):
        assert list(jukebox[key]) == [2 * v for v in base[key]], key


def _module_settings(spec: SpectralLosses) -> list[tuple]:
    names = ("fft_size", "hop_size", "win_length", "w_sc", "w_log_mag", "w_lin_mag", "w_phs")
    return [tuple(getattr(m, n) for n in names) for m in spec.mrstft.stft_losses]


@pytest.mark.parametrize(
    "override",
    [
        "vqvae.mrstft_fft_sizes=[2048,1024,256]",
        "vqvae.mrstft_hop_sizes=[256,128,64]",
        "vqvae.mrstft_win_lengths=[2048,1024,512]",
        "vqvae.mrstft_w_sc=0.5",
        "vqvae.mrstft_w_log_mag=0.25",
        "vqvae.mrstft_w_lin_mag=1.0",
        "vqvae.mrstft_w_phs=0.1",
    ],
)
def test_every_key_changes_the_module_and_the_value(override):
    key = override.split("=")[0].split(".")[1]
    base = load_config("tiny").vqvae
    cfg = load_config("tiny", [override]).vqvae
    assert cfg[key] != base[key]
    before, after = VQVAELevelModel(base, 0).spectral, VQVAELevelModel(cfg, 0).spectral
    assert _module_settings(after) != _module_settings(before)
    target, pred = signals()
    value = after.multispectral(target, pred, Bandwidth())
    assert value.item() != before.multispectral(target, pred, Bandwidth()).item()
    torch.testing.assert_close(value, auraloss_of(cfg)(pred, target), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["vqvae.mrstft_hop_sizes=[240,120]"], "one entry per resolution"),
        (["vqvae.mrstft_win_lengths=[1200,600,1000]"], "longer than its FFT size"),
        (["vqvae.mrstft_hop_sizes=[240,0,50]"], "mrstft_hop_sizes.*(positive|integer >= 1)"),
        (
            ["vqvae.mrstft_w_sc=0", "vqvae.mrstft_w_log_mag=0", "vqvae.mrstft_w_lin_mag=0", "vqvae.mrstft_w_phs=0"],
            "at least one > 0",
        ),
        (["vqvae.mrstft_w_sc=-1"], ">= 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        VQVAELevelModel(load_config("tiny", overrides).vqvae, 0)


def test_checkpoints_saved_with_the_old_mode_name_load_as_reference():
    assert vqvae_config(spectral_mode="jukebox").spectral_mode == "reference"
    model = VQVAELevelModel(load_config("tiny", ["vqvae.spectral_mode=jukebox"]).vqvae, 0)
    assert model.cfg.spectral_mode == "reference"


@pytest.mark.parametrize("mode", ["mel", "Auraloss", "jukeboxx"])
def test_unknown_mode_is_refused_naming_key_value_and_choices(mode):
    with pytest.raises(ValueError) as err:
        VQVAELevelModel(load_config("tiny", [f"vqvae.spectral_mode={mode}"]).vqvae, 0)
    message = str(err.value)
    assert "vqvae.spectral_mode" in message and repr(mode) in message and "'auraloss' or 'reference'" in message


def test_reference_mode_is_the_reference_formula():
    """Divided by bandwidth.spec, channels averaged, auraloss not built (values: tests/test_vqvae_reference.py)."""
    spec = SpectralLosses.from_config(load_config("tiny", ["vqvae.spectral_mode=reference"]).vqvae)
    assert not hasattr(spec, "mrstft")
    target, pred = signals()
    one = spec.multispectral(target, pred, Bandwidth(spec=1.0))
    torch.testing.assert_close(spec.multispectral(target, pred, Bandwidth(spec=4.0)), one / 4)
    assert spec.multispectral(target, target, Bandwidth()).item() == 0.0
    # the settings object alone, as used by bench and tests
    assert MRSTFTSettings().build().fft_sizes == [2048, 1024, 512]
