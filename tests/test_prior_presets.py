"""Every named prior architecture builds on the meta device with the reference's layout and parameter count."""

import ast
import math
from pathlib import Path

import pytest
import torch

from jukebox_pl.config import ConfigError, load_config
from jukebox_pl.interop.reference_prior_weights import reference_key
from jukebox_pl.prior.model import JukeboxPrior

KEYS = Path(__file__).resolve().parent / "fixtures" / "openai_jukebox" / "keys" / "released"
RELEASED = {"prior_5b": 2, "prior_5b_lyrics": 2, "prior_1b_lyrics": 2, "upsampler_level_0": 0, "upsampler_level_1": 1}


def build(arch: str, level: int, levels: int = 3, bins: int = 2048, y_bins=None) -> JukeboxPrior:
    cfg = load_config("jukebox", [f"prior.top.arch={arch}"]).prior.top
    with torch.device("meta"):
        return JukeboxPrior(cfg, level, levels, bins, 128, 44100, upper=(2, 2), y_bins=y_bins)


def unique_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def released_layout(name: str) -> tuple[dict, int]:
    """Our key -> shape for a released model's key list, and its parameter count (tied head counted once)."""
    shapes, total = {}, 0
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        key, shape, _, kind = line.split("\t")
        shape = tuple(ast.literal_eval(shape))
        ours, transposed = reference_key(key)
        shapes[ours] = shape[::-1] if transposed else shape
        if kind == "param":
            total += math.prod(shape)
    return shapes, total


@pytest.mark.parametrize("arch", sorted(RELEASED))
def test_released_priors_match_key_lists_and_counts(arch):
    model = build(arch, RELEASED[arch])
    expected = {
        "prior_5b": 5_060_452_800,
        "prior_5b_lyrics": 5_640_506_800,
        "prior_1b_lyrics": 942_643_200,
        "upsampler_level_0": 981_298_176,
        "upsampler_level_1": 981_298_176,
    }[arch]
    assert unique_params(model) == expected
    shapes, total = released_layout(arch)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    tied = model.prior.x_out.weight is model.prior.x_emb.weight
    assert tied == (arch in ("prior_1b_lyrics", "upsampler_level_0", "upsampler_level_1"))
    assert total - (model.prior.x_out.weight.numel() if tied else 0) == expected


def test_small_sets_build_with_reference_sizes():
    small_prior = build("small_prior", 1, levels=2, bins=1024)
    assert unique_params(small_prior) == 160_814_080  # the reference's small_prior on small_vqvae codes
    body = unique_params(small_prior.prior.transformer)
    assert abs(body - 3 * 1024**2 * 48) / body < 0.02  # about 3 * width^2 * depth
    sep = build("small_sep_enc_dec_prior", 1, levels=2, bins=1024, y_bins=(10, 100))
    assert sep.prime_prior.transformer.kinds.count("row") == 3 and "cross" in sep.prior.transformer.kinds
    merged = build("small_single_enc_dec_prior", 1, levels=2, bins=1024, y_bins=(10, 100))
    assert merged.prior.n_ctx == 6144 + 384 and merged.prior.bins == 1024 + 79
    up = build("small_upsampler", 0, levels=2, bins=1024)
    assert up.upsample_ratio == 4  # (down_t, stride_t) of the level above as given to build()
    for model in (small_prior, sep, merged, up):
        body = unique_params(model.prior.transformer)
        width, depth = model.cfg.width, model.cfg.depth
        assert abs(body - 3 * width**2 * depth) / body < 0.02


def test_presets_pick_their_priors_and_typos_are_named():
    assert load_config("jukebox").prior.top.depth == 79
    assert load_config("small").prior.top.lyrics == "encoder"
    tiny = load_config("tiny")
    assert tiny.prior.top.lyrics == "encoder" and tiny.prior.middle.cond_width == 64
    assert load_config("tiny", ["prior.top.arch=prior_1b_lyrics", "prior.top.width=64"]).prior.top.width == 64
    with pytest.raises(ConfigError, match="prior_5b_lyrics"):
        load_config("tiny", ["prior.top.arch=prior_5b_lyric"])
    with pytest.raises(ConfigError, match="width"):
        load_config("tiny", ["prior.top.widht=3"])


def test_inconsistent_lyrics_settings_are_refused():
    cfg = load_config("tiny").prior.top
    with pytest.raises(ValueError, match="cross-attention layers, which need lyrics=encoder"):
        JukeboxPrior({**cfg, "lyrics": "none"}, 2, 3, 128, 128, 22050, y_bins=(3, 5))
    with pytest.raises(ValueError, match="needs prime-attention layers"):
        JukeboxPrior({**cfg, "lyrics": "merged"}, 2, 3, 128, 128, 22050, y_bins=(3, 5))
    with pytest.raises(ValueError, match="top prior only"):
        JukeboxPrior(cfg, 1, 3, 128, 32, 22050, upper=(2, 2), y_bins=(3, 5))
    with pytest.raises(ValueError, match="y_bins"):
        JukeboxPrior(cfg, 2, 3, 128, 128, 22050)


def test_a_vocabulary_larger_than_a_pretrained_label_table_is_refused():
    cfg = load_config("tiny", ["prior.top.y_bins=[3,4]"]).prior.top
    with pytest.raises(ValueError, match=r"vocabulary has 9 artists and 2 genres but the prior's y_bins = \[3, 4\]"):
        JukeboxPrior(cfg, 2, 3, 128, 128, 22050, y_bins=(2, 9))
    assert JukeboxPrior(cfg, 2, 3, 128, 128, 22050, y_bins=(2, 3)).y_emb.artist_emb.bins == 4
