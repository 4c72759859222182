"""Random-weight VQ-VAE levels and priors small enough to sample songs in seconds (shared by sampling tests)."""

import torch

from jukebox_pl.config import load_config
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.prior.model import JukeboxPrior
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.vqvae.model import VQVAELevelModel
from jukebox_pl.vqvae.vqvae import VQVAE

SR = 22050
VOCAB = LabelVocab().extend(["Organ Ondine", "Reed Rasmus"], ["march", "waltz"])


def tiny_models(seed: int = 0) -> SamplingModels:
    torch.manual_seed(seed)
    vcfg = vqvae_config(levels=3, l_bins=32, emb_width=8, width=8, depth=1)
    vqvae = VQVAE({i: VQVAELevelModel(vcfg, i).eval() for i in range(3)}, SR)
    cfg = load_config("tiny").prior
    small = {"n_ctx": 32, "blocks": 4, "width": 32, "depth": 3}
    priors = {
        2: JukeboxPrior({**cfg.top, **small, "depth": 4, "n_tokens": 8, "prime_blocks": 2}, 2, 3, 32, 128, SR,
                        y_bins=(3, 3)),
        1: JukeboxPrior({**cfg.middle, **small, "cond_width": 8, "cond_depth": 1}, 1, 3, 32, 32, SR, (2, 2), (3, 3)),
        0: JukeboxPrior({**cfg.bottom, **small, "cond_width": 8, "cond_depth": 1}, 0, 3, 32, 8, SR, (2, 2), (3, 3)),
    }  # fmt: skip
    for prior in priors.values():
        prior.eval()
    return SamplingModels(vqvae, priors, VOCAB, SR)
