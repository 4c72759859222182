"""Which lyric character the music is at, read from the attention of one lyrics layer (as the reference did).

The top prior is run once more over the sampled codes, window by window, recording the attention weights of
its alignment layer and head (a cross-attention layer of the lyrics encoder design, a prime layer of the merged
design); each music token is assigned its most attended character, and the page lights the characters up as
the audio plays. Times come in steps of one top-level token.
"""

from __future__ import annotations

import numpy as np
import torch

from jukebox_pl.errors import UserValueError
from jukebox_pl.lyrics import lyric_window
from jukebox_pl.sampling.windows import window_starts


def alignment_layer(prior) -> tuple[int, int]:
    kinds = prior.prior.transformer.kinds
    lyric_layers = [i for i, k in enumerate(kinds) if k in ("cross", "prime")]
    layer = prior.cfg.alignment_layer if prior.cfg.alignment_layer is not None else lyric_layers[-1]
    if kinds[layer] not in ("cross", "prime"):
        raise UserValueError(f"alignment_layer {layer} is a {kinds[layer]} layer; lyric layers: {lyric_layers}")
    return layer, prior.cfg.alignment_head or 0


@torch.no_grad()
def lyric_alignment(sampler, level: int, n_lyrics: list[int]) -> list[dict]:
    """Per sample: {"times": seconds, "chars": index of the sung character in the lyrics} (monotone)."""
    prior = sampler.models.priors[level]
    codes = sampler.codes[level]
    total = codes.shape[1]
    layer, head = alignment_layer(prior)
    attn = prior.prior.transformer._attn_mods[layer].attn
    n = codes.shape[0]
    best = np.full((n, total), -1, dtype=np.int64)
    starts = window_starts(total, prior.n_ctx, 1.0)
    attn.record_attn = True
    try:
        for start in starts:
            length = min(prior.n_ctx, total)
            labels = sampler._labels(level, start, slice(0, n))
            window = codes[:, start : start + length]
            if length < prior.n_ctx:  # a song shorter than one window: the prior needs a full one
                window = torch.nn.functional.pad(window, (0, prior.n_ctx - length))
            device = next(prior.parameters()).device
            prior(window.to(device), **{k: v.to(device) for k, v in labels.items()})
            w = attn.last_weights[:, head]  # (B, queries, keys)
            if prior.lyrics_mode == "merged":
                w = w[:, prior.n_tokens :, : prior.n_tokens]
            picked = w[:, :length].argmax(-1).cpu().numpy()
            offset = start * prior.hop_length
            for i in range(n):
                tokens = np.asarray(sampler.spec.lyrics[i], dtype=np.int64)
                first = lyric_window(
                    tokens, prior.n_tokens, sampler.spec.total_samples, offset, prior.sample_length, float32=True
                )[1]  # the window the sampler gave the prior
                best[i, start : start + length] = first + picked[i]
    finally:
        attn.record_attn, attn.last_weights = False, None
    out = []
    step = max(1, int(0.1 * prior.sample_rate / prior.hop_length))  # about ten marks per second
    for i in range(n):
        chars = np.maximum.accumulate(np.clip(best[i], -1, max(n_lyrics[i] - 1, -1)))[::step]
        times = (np.arange(total)[::step] * prior.hop_length / prior.sample_rate).round(3)
        out.append({"times": times.tolist(), "chars": chars.tolist()})
    return out
