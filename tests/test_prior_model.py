"""`JukeboxPrior`: conditioning is used, lyrics in both designs, upsampler shapes, cached sampling, overfitting."""

import pytest
import torch

from jukebox_pl.config import load_config
from jukebox_pl.prior.logit_filters import filter_logits
from jukebox_pl.prior.model import JukeboxPrior

SR, Y_BINS = 22050, (4, 6)  # (genres, artists)


def tiny(level: int = 2, **changes) -> JukeboxPrior:
    name = {2: "top", 1: "middle", 0: "bottom"}[level]
    cfg = load_config("tiny").prior[name]
    cfg.merge_with({"n_ctx": 64, "blocks": 8, "n_tokens": 16, "prime_blocks": 4, "width": 32, **changes})
    hop = {2: 128, 1: 32, 0: 8}[level]
    torch.manual_seed(0)
    return JukeboxPrior(cfg, level, 3, 32, hop, SR, upper=None if level == 2 else (2, 2), y_bins=Y_BINS)


def labels(n: int = 2, artist=(1, 2), lyrics_len: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "artist": torch.tensor(artist[:n]),
        "genres": torch.tensor([[1, -1], [2, 3]][:n]),
        "total_length": torch.tensor([SR * 30, SR * 50][:n]),
        "offset": torch.tensor([0, SR * 10][:n]),
        "lyrics": torch.randint(1, 80, (n, lyrics_len), generator=g),
    }


def randomise_cross_attention(model: JukeboxPrior) -> None:
    """Cross-attention projections start at zero (as in the reference); give them weights to see their effect."""
    for block in model.prior.transformer._attn_mods:
        if block.attn.kind == "cross":
            torch.nn.init.normal_(block.attn.c_proj.weight, std=0.2)


def test_every_conditioning_input_changes_the_output_and_gets_gradients():
    model = tiny()
    randomise_cross_attention(model)
    codes = torch.randint(0, 32, (2, 64))
    base = labels()
    out = model(codes, return_logits=True, **base)
    out.loss.backward()
    for name in ("artist_emb", "bow_genre_emb", "total_length_emb", "absolute_pos_emb", "relative_pos_emb"):
        grad = getattr(model.y_emb, name).emb.weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.prime_prior.x_emb.weight.grad.abs().sum() > 0
    assert model.prime_x_out.weight.grad.abs().sum() > 0
    assert out.lyric_bits is not None and out.logits.shape == (2, 64, 32)
    with torch.no_grad():
        for key, value in (
            ("artist", torch.tensor([3, 4])),
            ("genres", torch.tensor([[3, -1], [1, -1]])),
            ("offset", torch.tensor([SR * 5, SR * 25])),
            ("total_length", torch.tensor([SR * 200, SR * 90])),
            ("lyrics", labels(seed=1)["lyrics"]),
        ):
            changed = model(codes, return_logits=True, **{**base, key: value}).logits
            assert not torch.allclose(changed, out.logits), f"{key} has no effect"


def test_loss_weights_lyrics_as_the_reference():
    model = tiny()
    out = model(torch.randint(0, 32, (2, 64)), **labels())
    expected = (0.4 * out.lyric_bits * 16 + out.music_bits * 64) / (16 + 64)
    assert torch.allclose(out.loss, expected)


def test_merged_lyrics_sequence():
    model = tiny(lyrics="merged", attn_order=12, depth=16, n_tokens=16, blocks=10)
    assert model.prior.n_ctx == 80 and model.prior.bins == 32 + 80
    assert model.prior.transformer.kinds.count("prime") == 1
    codes = torch.randint(0, 32, (2, 64))
    out = model(codes, return_logits=True, **labels())
    assert out.logits.shape == (2, 64, 32) and out.lyric_bits > 0
    out.loss.backward()
    assert model.y_emb.artist_emb.emb.weight.grad.abs().sum() > 0
    # the lyric prefix is what prime layers attend to: other lyrics, other music logits
    with torch.no_grad():
        other = model(codes, return_logits=True, **{**labels(), "lyrics": labels(seed=3)["lyrics"]}).logits
    assert not torch.allclose(other, out.logits)


@pytest.mark.parametrize(
    "level,changes",
    [(2, {}), (2, {"lyrics": "merged", "attn_order": 12, "depth": 16, "blocks": 10}), (1, {}), (0, {})],
)
@pytest.mark.parametrize("decode, chunk", [("dynamic", 4), ("dynamic", 0), ("static", 0), ("static", None)])
def test_greedy_cached_sampling_agrees_with_the_full_pass(level, changes, decode, chunk, monkeypatch):
    """Each sampled token is the argmax of the full forward pass over the sampled sequence (cache == full),
    the prompt primed in chunks or in one pass (0), with per-token steps of changing shapes (dynamic) and with the
    fixed-shape step graphs capture (static)."""
    import jukebox_pl.prior.model as prior_model

    model = tiny(level, **changes).eval()
    randomise_cross_attention(model)
    lab = labels()
    if level < 2:
        lab = {k: lab[k] for k in ("artist", "genres")} | {"upper_codes": torch.randint(0, 32, (2, 16))}
    cond = model.condition(2, **lab)
    prompt = torch.randint(0, 32, (2, 10))
    drawn = []  # merged: the joint-vocabulary ids as drawn (a drawn character is returned as code 0)
    real_sample_token = prior_model.sample_token
    monkeypatch.setattr(
        prior_model, "sample_token", lambda *a, **k: drawn.append(real_sample_token(*a, **k)) or drawn[-1]
    )
    codes = model.sample(cond, 2, prompt=prompt, temperature=0.0, chunk_size=chunk, decode=decode)
    assert codes.shape == (2, 64) and torch.equal(codes[:, :10], prompt)
    with torch.no_grad():
        if model.lyrics_mode == "merged":
            fed = torch.cat([cond.prefix, prompt + model.n_vocab, torch.stack(drawn, 1)], dim=1)
            assert torch.equal(codes[:, 10:], (fed[:, model.n_tokens + 10 :] - model.n_vocab).clamp(min=0))
            logits, codes = model.prior(fed, cond.x_cond, cond.y_cond)[:, model.n_tokens :], fed[:, model.n_tokens :]
        else:
            logits = model(codes, return_logits=True, **lab).logits
    # the sampled token is the full pass's argmax (up to float ties between near-equal logits)
    chosen = logits.gather(-1, codes[..., None])[..., 0]
    torch.testing.assert_close(chosen[:, 10:], logits.max(-1).values[:, 10:], atol=1e-4, rtol=0)


def test_upsampler_conditioning_shapes_for_every_level():
    for level, hop in ((1, 32), (0, 8)):
        model = tiny(level)
        assert model.sample_length == 64 * hop and model.upper_length == 16
        upper = torch.randint(0, 32, (3, 16))
        cond = model.condition(
            3, artist=torch.tensor([1, 2, 3]), genres=torch.tensor([[1], [2], [0]]), upper_codes=upper
        )
        assert cond.x_cond.shape == (3, 64, 32) and cond.y_cond.shape == (3, 1, 32)
        with pytest.raises(ValueError, match="needs n_ctx / 4 = 16"):
            model.condition(
                3, artist=torch.tensor([1, 2, 3]), genres=torch.tensor([[1], [2], [0]]), upper_codes=upper[:, :8]
            )
        with pytest.raises(ValueError, match="codes of the level above"):
            model(torch.randint(0, 32, (3, 64)), artist=torch.tensor([1, 2, 3]), genres=torch.tensor([[1], [2], [0]]))


def test_bad_inputs_name_the_problem():
    model = tiny()
    codes = torch.randint(0, 32, (2, 64))
    with pytest.raises(ValueError, match=r"artist id out of range: got 1\.\.9, this prior knows ids 0\.\.5"):
        model(codes, **{**labels(), "artist": torch.tensor([1, 9])})
    with pytest.raises(ValueError, match="n_ctx is 64"):
        model(codes[:, :32], **labels())
    with pytest.raises(ValueError, match="16 lyric characters"):
        model(codes, **{**labels(), "lyrics": torch.zeros(2, 8, dtype=torch.long)})


@pytest.mark.slow
def test_tiny_prior_overfits_one_batch():
    model = tiny(ema_decay=None)
    torch.manual_seed(1)
    codes = torch.randint(0, 32, (2, 64))
    lab = labels()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        out = model(codes, **lab)
        first = first if first is not None else out.music_bits.item()
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert first > 4.5  # log2(32) = 5 bits at the start
    assert out.music_bits.item() < 1.0, out.music_bits.item()


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    kept = filter_logits(logits, top_k=2).isfinite()
    assert kept.tolist() == [[False, False, True, True]]
    probs = logits.softmax(-1)[0]  # 0.03, 0.09, 0.24, 0.64
    nucleus = filter_logits(logits, top_p=0.8).isfinite()
    assert nucleus.tolist() == [[False, False, True, True]] and probs[2:].sum() > 0.8
    assert filter_logits(logits, top_p=0.5).isfinite().tolist() == [[False, False, False, True]]


@pytest.mark.parametrize("merged, x_cond", [(False, True), (True, False)])
def test_transformer_returns_hidden_states_whose_head_gives_the_logits(merged, x_cond):
    from jukebox_pl.prior.transformer import AutoregressiveTransformer

    torch.manual_seed(0)
    model = AutoregressiveTransformer(bins=32, n_ctx=16, width=24, depth=3, heads=2, blocks=4, merged_decoder=merged)
    model.eval()
    tokens = torch.randint(0, 32, (2, 16))
    cond = torch.randn(2, 16, 24) if x_cond else None
    with torch.no_grad():
        logits = model(tokens, cond)
        same, hidden = model(tokens, cond, return_hidden=True)
        final, layers = model.hidden(tokens, cond, all_layers=True)
        stack_out, stack_layers = model.transformer(torch.randn(2, 16, 24), return_layers=True)
    assert hidden.shape == (2, 16, 24) and logits.shape == (2, 16, 32)
    assert torch.equal(same, logits), "return_hidden leaves the logits unchanged"
    torch.testing.assert_close(model.head(hidden), logits)
    torch.testing.assert_close(final, hidden)
    assert len(layers) == 3 and all(h.shape == (2, 16, 24) for h in layers)
    # the final hidden state is the last block's output plus x_cond added back (unless the decoder is merged)
    torch.testing.assert_close(layers[-1] + (cond if x_cond and not merged else 0.0), hidden)
    assert len(stack_layers) == 3 and stack_layers[-1] is stack_out


def test_hidden_states_get_gradients_and_encoders_have_no_head():
    from jukebox_pl.prior.transformer import AutoregressiveTransformer

    model = AutoregressiveTransformer(bins=32, n_ctx=16, width=24, depth=2, heads=2, blocks=4)
    hidden = model.hidden(torch.randint(0, 32, (2, 16)))
    hidden.mean(1).sum().backward()
    assert model.x_emb.weight.grad is not None and model.x_emb.weight.grad.abs().sum() > 0
    encoder = AutoregressiveTransformer(bins=32, n_ctx=16, width=24, depth=2, heads=2, blocks=4, only_encode=True)
    assert encoder(torch.randint(0, 32, (2, 16))).shape == (2, 16, 24)
    with pytest.raises(ValueError, match="no head"):
        encoder.head(hidden)
