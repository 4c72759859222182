"""Our prior transformer reproduces the reference's logits, loss, gradients and greedy KV-cache sample."""

from pathlib import Path

import pytest
import torch

from jukebox_pl.interop.reference_prior_weights import load_reference_transformer
from jukebox_pl.prior.transformer import AutoregressiveTransformer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "openai_jukebox" / "small_prior_w128_d6"
INT4_BITS, INT4_ARGMAX = 0.03, 0.75  # measured: +0.011 bits/token, 81.5% of argmaxes (int8: +0.0002, 98.7%)


@pytest.fixture(scope="module")
def ref():
    state = torch.load(FIXTURE / "state_dict.pt", map_location="cpu")
    io = torch.load(FIXTURE / "io.pt", map_location="cpu")
    return state, io


def build(ref, checkpoint_res: bool = False) -> AutoregressiveTransformer:
    # the small_prior structure (n_ctx 8192, attn_order 2, 64 blocks) at width 128, depth 6
    model = AutoregressiveTransformer(
        bins=1024, n_ctx=8192, width=128, depth=6, heads=1, attn_order=2, blocks=64, checkpoint_res=checkpoint_res
    )
    load_reference_transformer(model, ref[0])
    return model


def test_logits_and_bits_per_token(ref):
    model = build(ref).eval()
    z = ref[1]["z"]
    with torch.no_grad():
        logits = model(z)
    torch.testing.assert_close(logits[0, ref[1]["logits_positions"]], ref[1]["logits"], atol=1e-4, rtol=0)
    assert model.bits_per_token(logits, z).item() == pytest.approx(ref[1]["eval_loss"].item(), abs=1e-4)
    assert torch.equal(logits[0].argmax(-1), ref[1]["argmax_per_position"])
    torch.testing.assert_close(logits[0].float().logsumexp(-1), ref[1]["logsumexp_per_position"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_greedy_kv_cache_sample(ref, decode):
    """The reference's greedy sample, with steps of changing shapes and with the fixed-shape (capturable) step
    from position 1 on (capacity 300: the static caches are allocated for the stream, not for n_ctx)."""
    from jukebox_pl.prior.decoding import StaticDecoder

    model = build(ref).eval()
    tokens, logits = [], []
    with torch.no_grad(), model.streaming(capacity=300, static=decode == "static"):
        for i in range(300):
            prev = None if i == 0 else torch.tensor([[tokens[-1]]])
            if i == 1 and decode == "static":
                decoder = StaticDecoder(model, 1, 1)
            out = decoder(prev)[0] if i >= 1 and decode == "static" else model.step(prev, i, 1)[0, -1]
            logits.append(out.clone())
            tokens.append(int(out.argmax()))
    assert tokens == ref[1]["greedy_sample_tokens"].tolist()
    torch.testing.assert_close(torch.stack(logits), ref[1]["greedy_sample_logits"], atol=1e-4, rtol=0)


def test_training_gradients_with_checkpointed_blocks(ref):
    model = build(ref, checkpoint_res=True).train()
    z = ref[1]["z"]
    loss = model.bits_per_token(model(z), z)
    assert loss.item() == pytest.approx(ref[1]["train_loss"].item(), abs=1e-4)
    loss.backward()
    params = dict(model.named_parameters())
    for key, want in ref[1]["train_grads"].items():
        name = key.removeprefix("prior.")
        name = name[:-2] + ".weight" if name.endswith(".w") else name[:-2] + ".bias" if name.endswith(".b") else name
        got = params[name].grad
        got = got.t() if key.endswith(".w") else got
        got = got[: want.shape[0]]  # the fixture keeps the first 512 rows of the largest tensors
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3, msg=key)
    norms = ref[1]["train_grad_norms"]
    assert params["x_emb.weight"].grad.norm().item() == pytest.approx(float(norms["prior.x_emb.weight"]), rel=1e-4)


def test_int8_weights_keep_the_reference_loss(ref):
    """Int8 weight storage (the fast sampling mode) changes the trained model's loss by a tiny amount."""
    from jukebox_pl.prior.quantize import Int8Linear, quantize_weights

    z = ref[1]["z"]
    model = quantize_weights(build(ref))
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 6 * 4
    with torch.no_grad():
        logits = model(z)
    bits = model.bits_per_token(logits, z).item()
    assert bits == pytest.approx(ref[1]["eval_loss"].item(), abs=0.005)
    agree = (logits[0].argmax(-1) == ref[1]["argmax_per_position"]).float().mean().item()
    assert agree > 0.95, agree


def test_bf16_vector_kernel_matches_linear_and_keeps_the_greedy_sample(ref):
    """`--weights bf16` on a CPU multiplies one row with addmv: the same numbers as bf16 `linear` within bf16
    rounding, the same parameters, and the reference's greedy sample through the cache."""
    from jukebox_pl.prior.quantize import VectorLinear, use_vector_kernel

    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    vector = VectorLinear.sharing(linear)
    assert vector.weight is linear.weight and vector.bias is linear.bias
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(vector(x), linear(x), atol=2e-2, rtol=2e-2)
    rows = torch.randn(3, 64, dtype=torch.bfloat16)
    assert torch.equal(vector(rows), linear(rows))  # more than one row: linear itself
    model = use_vector_kernel(build(ref).to(torch.bfloat16))
    assert sum(type(m) is VectorLinear for m in model.modules()) == 6 * 4
    plain = build(ref).to(torch.bfloat16)
    assert model.state_dict().keys() == plain.state_dict().keys()
    want = ref[1]["greedy_sample_tokens"].reshape(-1)[:40]
    for candidate in (model, plain):
        tokens = []
        with torch.inference_mode(), candidate.streaming(capacity=want.numel()):
            tok = None
            for pos in range(want.numel()):
                logits = candidate.step(tok, pos, 1)
                tok = logits[:, -1].float().argmax(-1, keepdim=True)
                tokens.append(int(tok))
        agree = (torch.tensor(tokens) == want).float().mean().item()
        assert agree > 0.9, agree


def test_int4_weights_keep_the_reference_loss_close(ref):
    """Int4 weight storage (4-bit groups, the fastest batch-1 CPU mode) moves the loss by more than int8 but keeps
    the model: bounded here on the reference's weights, through both the full pass and the cache."""
    from jukebox_pl.prior.quantize import Int4Linear, quantize_weights

    z = ref[1]["z"]
    model = quantize_weights(build(ref), "int4")
    assert sum(isinstance(m, Int4Linear) for m in model.modules()) == 6 * 4
    assert {m.group for m in model.modules() if isinstance(m, Int4Linear)} == {128, 32}  # c_proj has 32 inputs
    with torch.no_grad():
        logits = model(z)
    bits = model.bits_per_token(logits, z).item()
    assert bits == pytest.approx(ref[1]["eval_loss"].item(), abs=INT4_BITS)
    agree = (logits[0].argmax(-1) == ref[1]["argmax_per_position"]).float().mean().item()
    assert agree > INT4_ARGMAX, agree
    with torch.inference_mode(), model.streaming(capacity=64):
        tok, steps = None, []
        for pos in range(64):
            steps.append(model.step(tok, pos, 1)[:, -1])
            tok = z[:, pos : pos + 1]
    torch.testing.assert_close(torch.cat(steps), logits[0, :64], atol=0.05, rtol=0)  # the cache computes the same


@pytest.mark.parametrize("n_in", [8, 24, 32, 100])
def test_int8_and_int4_layers_compute_their_dequantised_product_for_any_width(n_in):
    """torch's int8 CPU kernel returns garbage for inputs that are not a multiple of 16, and its int4 kernel takes
    only outputs in multiples of 16 and inputs in multiples of 32: every width still gives the right numbers."""
    from jukebox_pl.prior.quantize import Int4Linear, Int8Linear

    torch.manual_seed(n_in)
    linear = torch.nn.Linear(n_in, 40)
    x = torch.randn(3, n_in)
    q8 = Int8Linear(linear)
    want8 = x @ (q8.weight_int8.float() * q8.scale.float()[:, None]).t() + linear.bias
    torch.testing.assert_close(q8(x), want8, atol=0.02, rtol=0.02)
    q4 = Int4Linear(linear)
    torch.testing.assert_close(q4(x), x @ q4.dequantized().t() + linear.bias, atol=0.02, rtol=0.02)
    step = 2 * linear.weight.abs().max() / 15  # a group spans at most [-max, max] in 15 steps
    assert (q4.dequantized() - linear.weight).abs().max() <= 0.6 * step  # half a step, and bf16 scales
