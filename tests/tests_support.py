"""Helpers shared by the conditioner tests: the toy tempo conditioner's config and sampling models using it."""

from __future__ import annotations

import torch
from sampling_models import SR, VOCAB

from jukebox_pl.config import load_config
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.prior.model import JukeboxPrior
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.vqvae.model import VQVAELevelModel
from jukebox_pl.vqvae.vqvae import VQVAE

TEMPO = "{tempo: {target: toy_conditioner.TempoConditioner, column: extra.bpm}}"


def tiny_models_with_tempo() -> SamplingModels:
    torch.manual_seed(0)
    vcfg = vqvae_config(levels=3, l_bins=32, emb_width=8, width=8, depth=1)
    vqvae = VQVAE({i: VQVAELevelModel(vcfg, i).eval() for i in range(3)}, SR)
    cfg = load_config("tiny", [f"prior.top.conditioners={TEMPO}"]).prior.top
    small = {"n_ctx": 32, "blocks": 4, "width": 32, "depth": 4, "n_tokens": 8, "prime_blocks": 2}
    top = JukeboxPrior({**cfg, **small}, 2, 3, 32, 128, SR, y_bins=(3, 3)).eval()
    return SamplingModels(vqvae, {2: top}, VOCAB, SR)
