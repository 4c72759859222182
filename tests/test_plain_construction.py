"""Modules build from a plain dataclass, a dict or keyword arguments; names are honoured, typos are errors."""

from __future__ import annotations

import pytest
import torch

from jukebox_pl import JukeboxPrior, PriorConfig, VQVAEConfig, VQVAELevelModel
from jukebox_pl.config import ConfigError
from jukebox_pl.vqvae.vqvae import VQVAE


def test_a_named_architecture_in_a_plain_dict_is_honoured():
    prior = JukeboxPrior({"arch": "tiny_prior"}, 2, 3, 32, 128, 22050, y_bins=(3, 4))
    assert prior.cfg.width == 128 and prior.cfg.depth == 8 and prior.lyrics_mode == "encoder"
    wider = JukeboxPrior({"arch": "tiny_prior", "width": 64}, 2, 3, 32, 128, 22050, y_bins=(3, 4))
    assert wider.cfg.width == 64 and wider.cfg.depth == 8


def test_unknown_keys_are_errors_not_defaults():
    with pytest.raises(ConfigError, match=r"'prior\.widht'.*did you mean width"):
        JukeboxPrior({"arch": "tiny_prior", "widht": 64}, 2, 3, 32, 128, 22050, y_bins=(3, 4))
    with pytest.raises(ConfigError, match=r"unknown prior arch 'tiny_prio'.*tiny_prior"):
        JukeboxPrior({"arch": "tiny_prio"}, 2, 3, 32, 128, 22050, y_bins=(3, 4))
    with pytest.raises(ConfigError, match=r"'vqvae\.l_binz'"):
        VQVAELevelModel(l_binz=16)


def test_dataclasses_and_keywords_build_the_same_model():
    torch.manual_seed(0)
    a = VQVAELevelModel(VQVAEConfig(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, width=8, depth=1), 1)
    torch.manual_seed(0)
    b = VQVAELevelModel(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, width=8, depth=1, level=1)
    assert a.hop_length == b.hop_length == 16
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    p = JukeboxPrior(PriorConfig(n_ctx=32, width=32, depth=2, blocks=4, labels=False), 2, 3, 16, 128, 22050)
    assert p.n_ctx == 32 and p.batch_keys == ()


def test_vqvae_encode_keys_are_indices_even_for_level_names():
    torch.manual_seed(0)
    cfg = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, width=8, depth=1)
    vq = VQVAE({i: VQVAELevelModel(cfg, i).eval() for i in range(2)}, 22050)
    codes = vq.encode(torch.randn(1, 1, 1024), levels=["top", "bottom"])
    assert sorted(codes) == [0, 1] and codes[1].shape == (1, 64)
