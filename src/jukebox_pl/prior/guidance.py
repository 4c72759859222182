"""Classifier-free guidance for the priors' artist, genre and lyrics conditioning.

Training replaces each example's artist, genres and lyrics, each with its own probability (`cfg_drop` in the
prior's config), by their null values: artist id 0 ("unknown"), a genre bag holding only id 0 ("unknown"), and
lyrics of only the blank character (id 0). These are learned rows that every prior already has, ours and the
released ones, so an imported model learns its null by fine-tuning with dropout and needs no new weights. Timing
and the codes of the level above are never dropped.

Sampling runs the conditional rows and their null-conditioned copies as one batch (2B rows through one forward
pass and one KV cache per step) and draws from

    uncond + scale * (cond - uncond)

so scale 1 is plain conditional sampling (run without the second half), 0 the null-conditioned model, and
scales above 1 push the samples towards what the labels and lyrics ask for.
"""

from __future__ import annotations

import torch

GUIDED_INPUTS = ("artist", "genre", "lyrics")
_KEY = {"artist": "artist", "genre": "genres", "lyrics": "lyrics"}  # input name -> batch key


def null_value(name: str, value: torch.Tensor) -> torch.Tensor:
    """The null of one input, shaped like `value`: id 0 for the artist and the lyric characters, a genre bag of
    id 0 alone (the other slots empty, -1)."""
    if name == "genre":
        null = torch.full_like(value, -1)
        null[..., 0] = 0
        return null
    return torch.zeros_like(value)


def drop_conditions(inputs: dict, probs: dict[str, float], generator: torch.Generator | None = None) -> dict:
    """A copy of a batch's conditioning inputs with each example's artist / genres / lyrics replaced by its null
    with that input's probability (drawn independently per example and input)."""
    out = dict(inputs)
    for name, p in probs.items():
        value = inputs.get(_KEY[name])
        if p <= 0.0 or value is None:
            continue
        draw = torch.rand(value.shape[0], generator=generator, device=generator.device if generator else "cpu")
        drop = (draw < p).to(value.device).view(-1, *([1] * (value.dim() - 1)))
        out[_KEY[name]] = torch.where(drop, null_value(name, value), value)
    return out


def with_nulls(inputs: dict, names: tuple[str, ...]) -> dict:
    """`inputs` with the rows doubled: the given rows, then a copy with the named inputs set to their nulls."""
    out = {}
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        name = next((n for n in names if _KEY[n] == key), None)
        out[key] = torch.cat([value, value if name is None else null_value(name, value)])
    return out


def guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Logits (2B, ..., bins) of conditional rows then their null-conditioned copies -> guided logits (B, ...,
    bins) in fp32: uncond + scale * (cond - uncond)."""
    cond, uncond = logits.float().chunk(2)
    return uncond + scale * (cond - uncond)
