"""Sampling songs: window plans, continuation, priming, upsampling, resume == uninterrupted."""

import pytest
import torch
from sampling_models import SR, tiny_models

from jukebox_pl.sampling.song_sampler import SongSampler, SongSpec
from jukebox_pl.sampling.windows import next_window, window_starts


def test_window_starts_and_overlaps():
    assert window_starts(20, 32, 0.125) == [0]  # shorter than one window
    assert window_starts(64, 32, 0.5) == [0, 16, 32]
    starts = window_starts(100, 32, 0.125)
    assert starts[:3] == [0, 4, 8] and starts[-1] == 68  # the last window ends at the total
    assert all(b - a <= 4 for a, b in zip(starts, starts[1:]))
    assert window_starts(200, 32, 0.3, align=4) == [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104,
                                                    112, 120, 128, 136, 144, 152, 160, 168]  # fmt: skip
    assert window_starts(90, 32, 0.5, align=4) == [0, 16, 32, 48, 56]
    assert next_window(100, 0, 32, 0.5) == (0, 32)
    assert next_window(100, 32, 32, 0.5) == (16, 48)  # keeps 16 codes of context
    assert next_window(100, 100, 32, 0.5) is None
    with pytest.raises(ValueError, match="hop fraction"):
        window_starts(100, 32, 0.0)


def spec(seconds_tokens: int = 80, **kw) -> SongSpec:
    base = dict(artists=[1, 2], genres=[[1], [2, 1]], lyrics=[[5, 6, 7] * 10, []],
                total_samples=seconds_tokens * 128, seed=3, max_batch=1)  # fmt: skip
    return SongSpec(**(base | kw))


@pytest.mark.slow
def test_ancestral_song_over_three_levels_has_the_right_lengths():
    models = tiny_models()
    sampler = SongSampler(models, spec(), levels=[2, 1, 0])
    codes = sampler.run()
    assert {k: tuple(v.shape) for k, v in codes.items()} == {2: (2, 80), 1: (2, 320), 0: (2, 1280)}
    assert sampler.windows_done == len(window_starts(80, 32, 0.125)) + len(window_starts(320, 32, 0.5, 4)) + len(
        window_starts(1280, 32, 0.5, 4)
    )
    audio = models.vqvae.decode(codes[0], 0)
    assert audio.shape == (2, 1, 80 * 128)


@pytest.mark.slow
def test_resume_after_any_window_equals_the_uninterrupted_run():
    models = tiny_models()
    full = SongSampler(models, spec(40), levels=[2, 1]).run()
    states = []
    SongSampler(models, spec(40), levels=[2, 1], on_window=lambda s: states.append(s.state())).run()
    for state in (states[0], states[len(states) // 2], states[-2]):
        resumed = SongSampler(models, spec(40), levels=[2, 1])
        resumed.restore(state)
        out = resumed.run()
        for level in (2, 1):
            assert torch.equal(out[level], full[level])
    with pytest.raises(ValueError, match="other settings"):
        SongSampler(models, spec(40, seed=4), levels=[2, 1]).restore(states[0])


@pytest.mark.slow
def test_continuation_keeps_the_prompt_codes_and_upsampling_fills_lower_levels():
    models = tiny_models()
    prompt = torch.randint(0, 32, (2, 30))
    codes = SongSampler(models, spec(70), levels=[2], codes={2: prompt}).run()
    assert torch.equal(codes[2][:, :30], prompt) and codes[2].shape == (2, 70)
    top = torch.randint(0, 32, (2, 20))
    up = SongSampler(models, spec(20), levels=[1, 0], codes={2: top}).run()
    assert up[1].shape == (2, 80) and up[0].shape == (2, 320) and torch.equal(up[2], top)


@pytest.mark.slow
def test_primed_sampling_starts_from_the_prompt_audio_codes():
    models = tiny_models()
    t = torch.arange(40 * 128) / SR
    audio = (0.3 * torch.sin(2 * torch.pi * 330 * t)).reshape(1, 1, -1).repeat(2, 1, 1)
    encoded = models.vqvae.encode(audio)
    prompt = {lvl: encoded[lvl][:, : 20 * 128 // models.vqvae.hop_length(lvl)] for lvl in (2, 1, 0)}
    codes = SongSampler(models, spec(40), levels=[2, 1, 0], codes=prompt).run()
    for level in (2, 1, 0):
        assert torch.equal(codes[level][:, : prompt[level].shape[1]], prompt[level])
        assert codes[level].shape[1] == 40 * 128 // models.vqvae.hop_length(level)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_three_levels_sample_with_priors_in_half_precision(tmp_path, dtype):
    """What `--weights bf16|fp16` loads: every prior held in half precision, the song still comes out whole."""
    from jukebox_pl.stages.sample import SampleRequest, sample_song

    models = tiny_models()
    for prior in models.priors.values():
        prior.to(dtype)
    req = SampleRequest(out=str(tmp_path / "half"), artists=["Organ Ondine"], seconds=0.3, temperature=0.9)
    summary = sample_song(models, req)
    assert summary["levels"] == ["top", "middle", "bottom"]
    for level in ("top", "middle", "bottom"):
        assert (tmp_path / "half" / level / "sample_0.wav").is_file()


@pytest.mark.parametrize("weights", ["int8", "int4", "bf16"])
def test_three_levels_sample_with_every_prior_stored_for_cpu_speed(tmp_path, weights):
    """What `--weights int8|int4|bf16` loads (`for_sampling`): every level's prior, upsamplers included, stores its
    blocks' linear layers that way, and the song still comes out whole."""
    from jukebox_pl.prior.quantize import Int4Linear, Int8Linear, VectorLinear
    from jukebox_pl.sampling.models import for_sampling
    from jukebox_pl.stages.sample import SampleRequest, sample_song

    models = tiny_models()
    kind = {"int8": Int8Linear, "int4": Int4Linear, "bf16": VectorLinear}[weights]
    for level, prior in models.priors.items():
        for_sampling(prior, weights)
        assert any(isinstance(m, kind) for m in prior.modules()), level
    req = SampleRequest(out=str(tmp_path / weights), artists=["Organ Ondine"], seconds=0.3, temperature=0.9)
    assert sample_song(models, req)["levels"] == ["top", "middle", "bottom"]
    for level in ("top", "middle", "bottom"):
        assert (tmp_path / weights / level / "sample_0.wav").is_file()
