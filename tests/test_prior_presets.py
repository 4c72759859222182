"""The released models' prior shapes, built on the meta device, have the reference's exact parameter counts."""

import torch

from jukebox_pl.prior.conditioners import LabelConditioner, UpperLevelConditioner
from jukebox_pl.prior.transformer import AutoregressiveTransformer


def count(*modules) -> int:
    seen, total = set(), 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def test_released_and_small_parameter_counts():
    with torch.device("meta"):
        prior_5b = AutoregressiveTransformer(2048, 8192, 4800, 72, 8, 2, 128, y_cond=True, tie_embeddings=False)
        labels_5b = LabelConditioner(4111, 120, 4800, 8192, 5, t_bins=128)
        upsampler = AutoregressiveTransformer(2048, 8192, 1920, 72, 1, 2, 128, y_cond=True)
        labels_up = LabelConditioner(4111, 120, 1920, 8192, 5, include_time_signal=False)
        cond_up = UpperLevelConditioner(
            2048, 1920, 2, 2, 1024, 16, dilation_growth_rate=3, dilation_cycle=8, res_scale=True
        )
        small_prior = AutoregressiveTransformer(1024, 8192, 1024, 48, 1, 2, 64)
    assert count(prior_5b, labels_5b) == 5_060_452_800
    assert count(upsampler, labels_up, cond_up) == 981_298_176
    assert count(small_prior) == 160_814_080
    # about 3 * width^2 * depth for the transformer body
    body = count(small_prior.transformer)
    assert abs(body - 3 * 1024**2 * 48) / body < 0.02
