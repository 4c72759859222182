"""`Levels` (a run's level names, hops, the level above each) and the builders that read it."""

from __future__ import annotations

import pytest
import torch

from jukebox_pl.config import load_config
from jukebox_pl.config.levels import Levels, level_index, level_name, vqvae_section
from jukebox_pl.config.schema import VQVAEConfig
from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.model import JukeboxPrior, build_prior
from jukebox_pl.vqvae.model import VQVAELevelModel, build_vqvae_level

pytestmark = pytest.mark.usefixtures("one_thread")


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_three_levels_of_the_jukebox_preset():
    levels = Levels.from_config(load_config("jukebox"))
    assert len(levels) == 3 and levels.names == ("bottom", "middle", "top")
    assert levels.hops == (8, 32, 128) and [levels.hop(i) for i in range(3)] == [8, 32, 128]
    assert [levels.above(i) for i in range(3)] == [1, 2, None]
    assert [levels.upsampling(i) for i in range(3)] == [(2, 2), (2, 2), None]
    assert levels.tokens_per_second(2) == 44100 / 128 and levels.codebook_size == 2048
    assert levels.sample_rate == 44100 and levels.index("middle") == 1 and levels.name(0) == "bottom"


def test_two_levels_of_the_small_preset():
    levels = Levels.from_config(load_config("small"))
    assert levels.names == ("bottom", "top") and levels.hops == (32, 256)
    assert levels.above(0) == 1 and levels.above(1) is None
    assert levels.upsampling(0) == (3, 2) and levels.upsampling(1) is None
    assert levels.tokens_per_second(0) == 22050 / 32 and levels.codebook_size == 1024


def test_one_level_from_a_plain_dict_and_a_dataclass():
    for section in ({"levels": 1, "downs_t": [3], "strides_t": [2], "l_bins": 64},
                    VQVAEConfig(levels=1, downs_t=[3], strides_t=[2], l_bins=64, multipliers=None)):  # fmt: skip
        levels = Levels.from_vqvae(section, 16000)
        assert levels.names == ("top",) and levels.hops == (8,) and levels.above(0) is None
        assert levels.upsampling(0) is None and levels.tokens_per_second(0) == 2000 and levels.codebook_size == 64


def test_level_lookups_keep_their_errors():
    levels = Levels.from_config(load_config("small"))
    assert levels.index(1) == levels.index("1") == levels.index("top") == level_index("top", 2) == 1
    assert level_name(0, 2) == "bottom" and level_name(3, 5) == "3"
    with pytest.raises(UserValueError, match="unknown level 'middle': this VQ-VAE has 2 levels: bottom, top"):
        levels.index("middle")
    with pytest.raises(UserValueError, match=r"level 2 out of range: this VQ-VAE has 2 levels \(bottom, top\)"):
        levels.index(2)


def test_levels_are_frozen():
    levels = Levels.from_config(load_config("tiny"))
    with pytest.raises(AttributeError):
        levels.sample_rate = 1  # type: ignore[misc]


def test_a_run_config_or_its_vqvae_section():
    cfg = load_config("tiny")
    assert vqvae_section(cfg) is cfg.vqvae and vqvae_section(cfg.vqvae) is cfg.vqvae


def test_build_prior_equals_the_positional_construction_on_meta():
    cfg = load_config("jukebox")
    v, p = cfg.vqvae, cfg.prior.top
    with torch.device("meta"):
        built = build_prior(Levels.from_config(cfg), "top", p, tuple(p.y_bins))
        by_hand = JukeboxPrior(p, 2, 3, v.l_bins, 128, cfg.data.sample_rate, None, tuple(p.y_bins))
    assert shapes(built) == shapes(by_hand)
    assert (built.level, built.levels, built.bins, built.hop_length, built.sample_rate) == (2, 3, 2048, 128, 44100)


def test_build_prior_of_an_upsampler_reads_the_level_above():
    cfg = load_config("tiny")
    v, p = cfg.vqvae, cfg.prior.middle
    levels = Levels.from_config(cfg)
    with torch.device("meta"):
        built = build_prior(levels, "middle", p, (3, 4))
        by_hand = JukeboxPrior(p, 1, 3, v.l_bins, levels.hop(1), cfg.data.sample_rate, (2, 2), (3, 4))
    assert shapes(built) == shapes(by_hand) and built.upsample_ratio == 4 and not built.is_top


def test_build_vqvae_level_from_a_run_config_or_a_section():
    cfg = load_config("tiny")
    for source in (cfg, cfg.vqvae):
        with torch.device("meta"):
            built = build_vqvae_level(source, "middle")
            by_hand = VQVAELevelModel(cfg.vqvae, 1)
        assert built.level == 1 and built.hop_length == 32 and shapes(built) == shapes(by_hand)
    with pytest.raises(UserValueError, match="unknown level 'upper'"):
        build_vqvae_level(cfg, "upper")
