"""Every device path on every device present: the CPU always, CUDA when a GPU is there (skipped with the reason
otherwise: CI has none; the GPU machine runs the same tests). The test bodies are the same for both, so what runs
on CUDA is what the CPU run has checked."""

import pytest
import torch
from prior_settings import COMMON, PRIOR, VQVAE

from jukebox_pl.prior.quantize import Int8Linear
from jukebox_pl.prior.transformer import AutoregressiveTransformer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has none)")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def tiny(**kw) -> AutoregressiveTransformer:
    torch.manual_seed(0)
    return AutoregressiveTransformer(bins=64, n_ctx=256, width=64, depth=3, heads=2, attn_order=2, blocks=4, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_sample_with_a_cache_of_their_own_dtype(device, dtype):
    """Weights stored in bf16 / fp16 (the released 5B priors are fp16): the KV cache is kept in the same dtype
    (half the cache memory), and the cached steps give the fp32 model's logits within half precision."""
    full = tiny().eval().to(device)
    half = tiny().eval().to(device).to(dtype)
    tokens = torch.randint(64, (2, 64), device=device)
    with torch.no_grad():
        want = torch.log_softmax(full(tokens).float(), -1)
        with half.streaming() as caches:
            got = [half.step(None, 0, 2)]
            for i in range(1, 64):
                got.append(half.step(tokens[:, i - 1 : i], i, 2))
        got = torch.log_softmax(torch.cat(got, 1).float(), -1)
        stored = {t.dtype for c in caches for t in (c.key, c.value) if t is not None}
    assert stored == {dtype}, stored
    assert (got - want).abs().max().item() < 0.15
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() > 0.9


@pytest.mark.parametrize(
    "device, mode",
    [("cpu", "static"), ("cpu", "compile"), pytest.param("cuda", "graph", marks=CUDA),
     pytest.param("cuda", "compile", marks=CUDA)],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_captured_step_gives_the_dynamic_steps_logits(device, mode, dtype):
    """The fixed-shape step recorded as a CUDA graph (or compiled; on the CPU through aot_eager, which checks
    the same tracing without a C++ build) and replayed across row boundaries: the logits of the step whose
    shapes change every token, in fp32 and with bf16 weights and cache."""
    from jukebox_pl.prior.decoding import StaticDecoder

    model = tiny().eval().to(device).to(dtype)
    tokens = torch.randint(64, (2, 96), device=device)
    options = {"backend": "aot_eager"} if device == "cpu" and mode == "compile" else None
    torch._dynamo.reset()
    with torch.no_grad():
        with model.streaming(capacity=96):
            want = [model.step(tokens[:, :9], 0, 2)[:, -1]]
            want += [model.step(tokens[:, i - 1 : i], i, 2)[:, -1] for i in range(10, 96)]
        with model.streaming(capacity=96, static=True):
            got = [model.step(tokens[:, :9], 0, 2)[:, -1]]
            decoder = StaticDecoder(model, 10, 2, mode=mode, compile_options=options)
            got += [decoder(tokens[:, i - 1]).clone() for i in range(10, 96)]
    tol = 1e-4 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(torch.stack(got).float(), torch.stack(want).float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weights_compute_on_the_device_in_the_activations_dtype(device, dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 48).to(device)
    q = Int8Linear(linear).to(device)
    x = torch.randn(5, 96, device=device, dtype=dtype)
    with torch.no_grad():
        want, got = linear(x.float()), q(x)
    assert got.dtype == dtype and got.device.type == torch.device(device).type
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=CUDA)])
def test_a_vqvae_level_and_a_prior_train_in_bf16_mixed_and_sample(accelerator, shards, tmp_path, capsys):
    """Training in bf16-mixed on the device, then `sample --device` there with bf16 weights."""
    from jukebox_pl.cli import main
    from jukebox_pl.stages.train_prior import train_prior
    from jukebox_pl.stages.train_vqvae import train_vqvae

    run = tmp_path / "run"
    device = [f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.precision=bf16-mixed"]
    level = train_vqvae(run, "top", "tiny", str(shards), VQVAE + COMMON + device)
    assert torch.isfinite(level.model.bottleneck.k).all()
    prior = train_prior(run, "top", "tiny", str(shards), PRIOR + COMMON + device)
    assert all(torch.isfinite(p).all() for p in prior.model.parameters())
    out = tmp_path / "sampled"
    where = "cuda" if accelerator == "gpu" else "cpu"
    assert main(["sample", "--run", str(run), "--out", str(out), "--seconds", "0.3", "--levels", "1", "--weights",
                 "bf16", "--device", where, "--no-progress"]) == 0, capsys.readouterr().err[-3000:]  # fmt: skip
    assert (out / "top" / "sample_0.wav").is_file()
