"""Conditioners: reference layouts (released key lists) and behaviour (masks, ranges, shapes, errors)."""

from pathlib import Path

import pytest
import torch

from jukebox_pl.prior.builtin_conditioners import LabelConditioner, RangeEmbedding, UpperLevelConditioner

KEYS = Path(__file__).resolve().parent / "fixtures" / "openai_jukebox" / "keys" / "released"


def reference_keys(name: str, prefix: str) -> dict[str, tuple]:
    out = {}
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split("\t")[:2]
        if key.startswith(prefix):
            # the reference's checkpointed Resnet1D keeps its blocks in `.blocks`, ours always in `.model`
            out[key[len(prefix) :].replace(".blocks.", ".model.")] = tuple(
                int(s) for s in shape.strip("()").split(",") if s.strip()
            )
    return out


def test_upsampler_conditioner_matches_the_released_layout():
    with torch.device("meta"):
        cond = UpperLevelConditioner(
            bins=2048,
            width=1920,
            down_t=2,
            stride_t=2,
            cond_width=1024,
            cond_depth=16,
            dilation_growth_rate=3,
            dilation_cycle=8,
            res_scale=True,
        )
    ours = {k: tuple(v.shape) for k, v in cond.state_dict().items()}
    assert ours == reference_keys("upsampler_level_1", "conditioner_blocks.0.")


def test_label_conditioner_matches_the_released_layout():
    with torch.device("meta"):
        y = LabelConditioner(n_artists=4111, n_genres=120, width=4800, n_time=8192, max_genres=5, t_bins=128)
    assert {k: tuple(v.shape) for k, v in y.state_dict().items()} == reference_keys("prior_5b", "y_emb.")
    with torch.device("meta"):
        y_up = LabelConditioner(4111, 120, 1920, 8192, 5, include_time_signal=False)
    assert {k: tuple(v.shape) for k, v in y_up.state_dict().items()} == reference_keys("upsampler_level_0", "y_emb.")


def test_start_token_is_artist_plus_bag_of_genres():
    torch.manual_seed(0)
    y = LabelConditioner(
        n_artists=5, n_genres=7, width=8, n_time=16, max_genres=3, sample_rate=100, min_duration=1.0, max_duration=100.0
    )
    start, timing = y(torch.tensor([2]), torch.tensor([[1, 4, -1]]), torch.tensor([5000]), torch.tensor([1000]), 800)
    want = y.artist_emb.emb.weight[2] + y.bow_genre_emb.emb.weight[1] + y.bow_genre_emb.emb.weight[4]
    torch.testing.assert_close(start[0, 0], want)
    assert timing.shape == (1, 16, 8)
    # a later window of the same song changes the timing signal, not the start token
    start2, timing2 = y(torch.tensor([2]), torch.tensor([[1, 4, -1]]), torch.tensor([5000]), torch.tensor([4000]), 800)
    assert torch.equal(start, start2) and not torch.equal(timing, timing2)
    with pytest.raises(ValueError, match="artist id out of range.*0..4"):
        y(torch.tensor([9]), torch.tensor([[1, -1, -1]]), torch.tensor([5000]), torch.tensor([0]), 800)


def test_range_embedding_bins_and_interpolates():
    r = RangeEmbedding(n_time=4, bins=10, low=0.0, high=100.0, width=2)
    with torch.no_grad():
        r.emb.weight.copy_(torch.arange(10.0)[:, None].repeat(1, 2))
    out = r(torch.tensor([0.0]), torch.tensor([40.0]))
    assert out[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"outside \[0.0, 100.0\)"):
        r(torch.tensor([100.0]), torch.tensor([120.0]))


def test_upper_level_codes_are_upsampled():
    cond = UpperLevelConditioner(bins=32, width=16, down_t=2, stride_t=2, cond_width=8, cond_depth=2)
    out = cond(torch.randint(0, 32, (3, 10)))
    assert out.shape == (3, 40, 16)
    out.sum().backward()
    assert cond.x_emb.weight.grad.abs().sum() > 0


def test_songs_longer_than_max_duration_keep_their_relative_position():
    cond = LabelConditioner(5, 4, 8, n_time=4, max_genres=1, t_bins=8, sample_rate=100, min_duration=1, max_duration=60)
    labels = dict(artist=torch.tensor([1, 1]), genres=torch.tensor([[1], [1]]), length=100)
    long_song = cond(total_length=torch.tensor([30000, 30000]), offset=torch.tensor([0, 29000]), **labels)[1]
    assert long_song.shape == (2, 4, 8) and not torch.allclose(long_song[0], long_song[1])
    rel, absolute, t = cond.relative_pos_emb, cond.absolute_pos_emb, torch.tensor
    moved = rel(t([29000 / 30000]), t([29100 / 30000]))[0] - rel(t([0.0]), t([100 / 30000]))[0]
    moved = moved + absolute(t([5999.0]), t([6000.0]))[0] - absolute(t([0.0]), t([100.0]))[0]
    torch.testing.assert_close(long_song[1] - long_song[0], moved)
