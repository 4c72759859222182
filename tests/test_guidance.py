"""Classifier-free guidance: training-time dropout to the null labels / lyrics, and guided sampling (one batch of
conditional and null-conditioned rows, one cache) against plain sampling and the full forward pass."""

import pytest
import torch
from test_prior_model import SR, labels, randomise_cross_attention, tiny

from jukebox_pl.config import ConfigError, load_config
from jukebox_pl.prior.guidance import drop_conditions, guide, with_nulls

DROP = {"cfg_drop": {"artist": 0.2, "genre": 0.2, "lyrics": 0.2}}
MERGED = {"lyrics": "merged", "attn_order": 12, "depth": 16, "blocks": 10}


def batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "artist": torch.randint(1, 6, (n,), generator=g),
        "genres": torch.stack([torch.randint(1, 4, (n,), generator=g), torch.full((n,), -1)], 1),
        "lyrics": torch.randint(1, 80, (n, 16), generator=g),
        "total_length": torch.full((n,), SR * 30),
        "offset": torch.zeros(n, dtype=torch.long),
        "upper_codes": torch.randint(0, 32, (n, 16), generator=g),
    }


def test_dropout_sets_each_input_to_its_null_at_its_own_rate():
    torch.manual_seed(0)
    inputs = batch(4000)
    out = drop_conditions(inputs, {"artist": 0.3, "genre": 0.1, "lyrics": 0.5})
    artist_dropped = out["artist"] == 0
    genre_dropped = (out["genres"][:, 0] == 0) & (out["genres"][:, 1] == -1)
    lyrics_dropped = (out["lyrics"] == 0).all(1)
    for dropped, p in ((artist_dropped, 0.3), (genre_dropped, 0.1), (lyrics_dropped, 0.5)):
        assert abs(dropped.float().mean().item() - p) < 0.03
    kept = ~artist_dropped
    assert torch.equal(out["artist"][kept], inputs["artist"][kept])
    assert torch.equal(out["lyrics"][~lyrics_dropped], inputs["lyrics"][~lyrics_dropped])
    # independent draws per input, and timing / upper codes never dropped
    assert 0.1 < (artist_dropped & lyrics_dropped).float().mean().item() < 0.2
    for key in ("total_length", "offset", "upper_codes"):
        assert out[key] is inputs[key]
    unchanged = drop_conditions(inputs, {"artist": 0.0, "genre": 0.0, "lyrics": 0.0})
    assert all(unchanged[k] is inputs[k] for k in inputs)


def test_dropout_settings_are_checked_by_name():
    cfg = load_config("tiny", ["prior.top.cfg_drop.artist=0.2"])
    assert cfg.prior.top.cfg_drop.artist == 0.2 and cfg.prior.top.cfg_drop.lyrics == 0.0
    with pytest.raises(ConfigError, match="artst"):
        load_config("tiny", ["prior.top.cfg_drop.artst=0.2"])
    with pytest.raises(ConfigError, match=r"cfg_drop.lyrics' = 1.0 .*not allowed: must be a number in \[0, 1\)"):
        load_config("tiny", ["prior.top.cfg_drop.lyrics=1.0"])
    with pytest.raises(ValueError, match=r"cfg_drop.artist' = 1.5 is not allowed: must be a number in \[0, 1\)"):
        tiny(cfg_drop={"artist": 1.5})
    upsampler = tiny(1, cfg_drop={"artist": 0.2, "lyrics": 0.3})  # an upsampler reads no lyrics
    assert upsampler.guided_inputs == ("artist",)


def test_guided_sampling_refuses_a_prior_that_never_learned_its_nulls():
    model = tiny().eval()
    with pytest.raises(ValueError, match="not trained to do without.*cfg_drop: none.*cfg_drop.<input>"):
        model.guided_condition(2, 3.0, **labels())
    cond = model.condition(2, **labels())
    with pytest.raises(ValueError, match="2n rows of `guided_condition"):
        model.sample(cond, 2, cfg_scale=3.0)


def test_scale_one_is_plain_conditional_sampling_bit_for_bit():
    model = tiny(**DROP).eval()
    randomise_cross_attention(model)
    lab, prompt = labels(), torch.randint(0, 32, (2, 5))
    plain = model.sample(model.condition(2, **lab), 2, prompt=prompt, generator=torch.Generator().manual_seed(3))
    guided = model.sample(model.guided_condition(2, 1.0, **lab), 2, prompt=prompt, cfg_scale=1.0,
                          generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.equal(plain, guided)


@pytest.mark.parametrize("changes", [{}, MERGED])
def test_scale_zero_samples_the_null_conditioned_model(changes):
    model = tiny(**DROP, **changes).eval()
    randomise_cross_attention(model)
    lab = labels()
    null = {k: v[2:] for k, v in with_nulls(lab, model.guided_inputs).items()}
    want = model.sample(model.condition(2, **null), 2, temperature=0.0)
    got = model.sample(model.guided_condition(2, 0.0, **lab), 2, temperature=0.0, cfg_scale=0.0)
    assert torch.equal(got, want)
    codes = torch.randint(0, 32, (2, 64))
    with torch.no_grad():  # and the null-conditioned logits are not the conditional ones
        assert not torch.allclose(model(codes, return_logits=True, **lab).logits,
                                  model(codes, return_logits=True, **null).logits)  # fmt: skip


@pytest.mark.parametrize("level, changes", [(2, {}), (2, MERGED), (1, {})])
@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_guided_cached_sampling_is_the_argmax_of_the_guided_full_pass(level, changes, decode, monkeypatch):
    """Greedy with scale 3: every token is the argmax of uncond + 3 (cond - uncond), both computed by the full
    forward pass over the sampled sequence (the cache holds both halves correctly)."""
    import jukebox_pl.prior.model as prior_model

    model = tiny(level, **DROP, **changes).eval()
    randomise_cross_attention(model)
    lab = labels()
    if level < 2:
        lab = {k: lab[k] for k in ("artist", "genres")} | {"upper_codes": torch.randint(0, 32, (2, 16))}
    prompt = torch.randint(0, 32, (2, 10))
    cond = model.guided_condition(2, 3.0, **lab)
    drawn = []  # the ids as drawn (merged: from the joint vocabulary of characters and codes)
    real = prior_model.sample_token
    monkeypatch.setattr(prior_model, "sample_token", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    codes = model.sample(cond, 2, prompt=prompt, temperature=0.0, cfg_scale=3.0, decode=decode)
    assert torch.equal(codes[:, :10], prompt)
    shift = model.n_vocab if model.lyrics_mode == "merged" else 0
    fed = torch.cat([prompt + shift, torch.stack(drawn, 1)], dim=1)
    with torch.no_grad():
        if model.lyrics_mode == "merged":
            logits = model.prior(torch.cat([cond.prefix, torch.cat([fed, fed])], 1), cond.x_cond, cond.y_cond)
            logits = logits[:, model.n_tokens :]
        else:
            both = with_nulls(lab, model.guided_inputs)
            logits = model(torch.cat([fed, fed]), return_logits=True, **both).logits
    guided = guide(logits, 3.0)
    chosen = guided.gather(-1, fed[..., None])[..., 0]
    torch.testing.assert_close(chosen[:, 10:], guided.max(-1).values[:, 10:], atol=1e-4, rtol=0)
