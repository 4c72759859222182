"""Turning next-token logits into tokens: temperature, top-k and nucleus (top-p) filtering."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Keep the `top_k` most likely tokens and/or the smallest set whose probability exceeds `top_p`.

    The reference's rules (`jukebox/transformer/ops.py` `filter_logits`): top-k keeps every token tied with the
    k-th; top-p drops a token when the probability of the more likely tokens before it already exceeds top_p
    (strictly), and always keeps the most likely one. Unlike the reference, both may be set (top-k first)."""
    logits = logits.float()
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p > 0.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        beyond = sorted_logits.softmax(-1).cumsum(-1) > top_p
        drop = torch.cat([torch.zeros_like(beyond[..., :1]), beyond[..., :-1]], dim=-1)  # the one crossing stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, bins) logits -> (B,) sampled ids; temperature 0 = greedy. Half-precision logits (a prior held in
    bf16/fp16) are filtered and normalised in fp32."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
