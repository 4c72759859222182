"""The fixed-shape sampling step: equal to the full pass, one compiled graph for every position, and sampling
with it draws what the dynamic step draws."""

import pytest
import torch

from jukebox_pl.prior.decoding import StaticDecoder, resolve_decode
from jukebox_pl.prior.transformer import AutoregressiveTransformer

N_CTX, BLOCKS = 48, 6  # rows of 8


def transformer(attn_order: int, depth: int) -> AutoregressiveTransformer:
    torch.manual_seed(0)
    model = AutoregressiveTransformer(bins=40, n_ctx=N_CTX, width=32, depth=depth, heads=2, attn_order=attn_order,
                                      blocks=BLOCKS, y_cond=True).eval()  # fmt: skip
    for block in model.transformer._attn_mods:  # cross-attention starts at zero, as in the reference
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.2)
    return model


def inputs(model, n: int = 2):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.bins, (n, N_CTX), generator=g)
    x_cond = torch.randn(n, N_CTX, model.width, generator=g) * 0.1
    y_cond = torch.randn(n, 1, model.width, generator=g) * 0.1
    encoder_kv = torch.randn(n, 7, model.width, generator=g)
    return tokens, x_cond, y_cond, encoder_kv


@pytest.mark.parametrize("attn_order, depth", [(9, 4), (6, 4)])  # row, column, prev_row + dense / + cross
@pytest.mark.parametrize("primed", [1, 13])
def test_compiled_fixed_shape_steps_are_one_graph_and_equal_the_full_pass(attn_order, depth, primed):
    """`torch.compile(fullgraph=True)` traces the step without a graph break (no host sync, no data-dependent
    Python) and never recompiles as the position moves across rows: what a CUDA graph needs. The logits equal
    the full forward pass at every position."""
    model = transformer(attn_order, depth)
    tokens, x_cond, y_cond, enc = inputs(model)
    with torch.no_grad():
        full = model(tokens, x_cond, y_cond, enc)
        torch._dynamo.reset()
        with torch._dynamo.config.patch(error_on_recompile=True), model.streaming(N_CTX, static=True):
            outs = [model.step(tokens[:, : primed - 1] if primed > 1 else None, 0, 2, x_cond, y_cond, enc)]
            decoder = StaticDecoder(model, primed, 2, x_cond, enc, "compile", {"backend": "aot_eager"})
            for pos in range(primed, N_CTX):
                outs.append(decoder(tokens[:, pos - 1]).clone()[:, None])
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_order, depth", [(9, 4), (6, 4)])
def test_the_fixed_shape_step_never_reads_a_device_value_on_the_host(attn_order, depth):
    """Under fake tensors (shapes without values) any host read of a tensor's value (`.item()`, `int(t)`, a
    Python branch on a tensor: a device sync that a CUDA graph cannot hold) raises; the step runs through."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = transformer(attn_order, depth)
    tokens, x_cond, y_cond, enc = inputs(model)
    with torch.no_grad(), model.streaming(N_CTX, static=True):
        model.step(tokens[:, :9], 0, 2, x_cond, y_cond, enc)
        pos = torch.tensor(10)  # made outside the mode: a fake tensor made inside would carry its value
        with FakeTensorMode(allow_non_fake_inputs=True):
            out = model.step_static(tokens[:, 9:10], pos, x_cond, enc)
    assert out.shape == (2, 1, model.bins)


def test_a_static_stream_refuses_positions_its_caches_do_not_hold():
    model = transformer(9, 4)
    tokens, x_cond, y_cond, _ = inputs(model)
    with torch.no_grad(), model.streaming(capacity=12, static=True):
        model.step(None, 0, 2, x_cond, y_cond)
        decoder = StaticDecoder(model, 1, 2, x_cond)
        for pos in range(1, 12):
            decoder(tokens[:, pos - 1])
        with pytest.raises(ValueError, match="stream is full: its caches hold 12 positions"):
            decoder(tokens[:, 11])
    with torch.no_grad(), model.streaming(capacity=12):  # not static: caches not zero-filled
        model.step(None, 0, 2, x_cond, y_cond)
        with pytest.raises(RuntimeError, match="static=True"):
            StaticDecoder(model, 1, 2, x_cond)


def test_decode_modes_are_checked_by_name():
    cpu = torch.device("cpu")
    assert resolve_decode("auto", cpu) == "dynamic" and resolve_decode("auto", torch.device("cuda")) == "graph"
    with pytest.raises(ValueError, match="decode=graph records a CUDA graph: the prior is on cpu"):
        resolve_decode("graph", cpu)
    with pytest.raises(ValueError, match="decode='fast'; choose one of auto, dynamic, static, graph, compile"):
        resolve_decode("fast", cpu)


def test_sampling_with_the_static_step_draws_the_same_songs():
    """Temperature 1 with a seeded generator: the static step's logits match the dynamic step's closely enough
    that every draw is the same."""
    from test_prior_model import labels, randomise_cross_attention, tiny

    model = tiny().eval()
    randomise_cross_attention(model)
    cond = model.condition(2, **labels())
    prompt = torch.randint(0, 32, (2, 5))
    drawn = {}
    for decode in ("dynamic", "static"):
        g = torch.Generator().manual_seed(7)
        drawn[decode] = model.sample(cond, 2, prompt=prompt, temperature=1.0, generator=g, decode=decode)
    assert torch.equal(drawn["dynamic"], drawn["static"])


def test_a_songs_windows_share_one_compilation(monkeypatch):
    """`sample --decode compile` builds a StaticDecoder per window: the windows after the first reuse the first's
    compiled step (torch's guards pass for a new window's caches), so a song compiles once per level, not once per
    window."""
    from test_sampling import tiny_models
    from torch._dynamo.utils import counters

    from jukebox_pl.sampling.song_sampler import SongSampler, SongSpec

    torch._dynamo.reset()
    counters.clear()
    models = tiny_models()
    prior, hop = models.priors[2], models.vqvae.hop_length(2)
    total = prior.sample_length * 3 // hop * hop  # three windows' worth of top-level tokens
    spec = SongSpec(artists=[1], genres=[[1]], lyrics=[list(range(1, 20))], total_samples=total, seed=0)
    windows = []
    original = StaticDecoder.__init__
    monkeypatch.setattr(StaticDecoder, "__init__", lambda self, *a, **k: windows.append(1) or original(self, *a, **k))
    with torch._dynamo.config.patch(error_on_recompile=True):
        codes = SongSampler(models, spec, [2], decode="compile").run()
    assert codes[2].shape[1] == total // hop and len(windows) >= 3
    assert counters["stats"]["unique_graphs"] == 1


def test_each_model_keeps_its_own_compilations():
    """torch.compile keeps at most `recompile_limit` graphs per code object and, with fullgraph=True, fails on the
    next one. Every prior's step is the same lambda: before each model had a code object of its own, a song's three
    levels at three batch sizes stopped at the ninth graph. With the limit at 1, two models each compile without
    error (on one shared code object the second was an error)."""
    models = [transformer(9, 2), transformer(6, 2)]
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=1):
        torch._dynamo.reset()
        for model, n in [(models[0], 2), (models[1], 2)]:
            tokens, x_cond, y_cond, enc = inputs(model, n)
            with model.streaming(N_CTX, static=True):
                model.step(tokens[:, :4], 0, n, x_cond, y_cond, enc)  # the start token and 4: 5 positions
                decoder = StaticDecoder(model, 5, n, x_cond, enc, "compile", {"backend": "aot_eager"})
                assert decoder(tokens[:, 4]).shape == (n, model.bins)
    assert models[0].__dict__["_static_step_code"] is not models[1].__dict__["_static_step_code"]
