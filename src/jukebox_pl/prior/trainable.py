"""What a fine-tuning run trains (`prior.<level>.trainable`); everything else is frozen and left out of the
optimiser.

- `all`: every weight (the default, and what training from scratch does);
- `embeddings`: the artist and genre tables only;
- `top-layers:N`: the last N transformer blocks and the label tables;
- `lora:R`: rank-R adapters on every attention and MLP projection (`jukebox_pl.prior.lora`) and the label tables.
In every mode but `all` the rows the base model already had (its artists and genres) stay exactly as they were:
only a new artist's rows learn, so old artists sample as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.lora import add_lora, lora_parameters

LABEL_TABLES = ("y_emb.artist_emb.emb.weight", "y_emb.bow_genre_emb.emb.weight")
PATTERN = re.compile(r"^(all|embeddings|top-layers:(\d+)|lora:(\d+))$")


@dataclass(frozen=True)
class Trainable:
    kind: str  # all, embeddings, top-layers, lora
    count: int = 0  # N of top-layers:N, R of lora:R

    @classmethod
    def parse(cls, text: str) -> Trainable:
        match = PATTERN.match(str(text))
        if match is None or (match.group(2) or match.group(3) or "1") == "0":
            raise UserValueError(
                f"prior.<level>.trainable={text!r}: choose all, embeddings, top-layers:N or lora:RANK (N, RANK >= 1)"
            )
        kind = str(text).split(":")[0]
        return cls(kind, int(match.group(2) or match.group(3) or 0))


def select(model: nn.Module, mode: Trainable) -> list[nn.Parameter]:
    """Set requires_grad on `model` (a JukeboxPrior) for `mode` and return the parameters that learn; LoRA
    adapters are added here (after the base weights are loaded, so the base keeps its key names)."""
    if mode.kind == "all":
        return [p.requires_grad_(True) for p in model.parameters()]
    if mode.kind == "lora":
        add_lora(model, mode.count)
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    learn = [params[name] for name in LABEL_TABLES if name in params]
    if mode.kind == "top-layers":
        blocks = model.prior.transformer._attn_mods
        if mode.count > len(blocks):
            raise UserValueError(f"trainable=top-layers:{mode.count}, but the prior has {len(blocks)} blocks")
        learn += [p for block in list(blocks)[-mode.count :] for p in block.parameters()]
    elif mode.kind == "lora":
        learn += lora_parameters(model)
    for p in learn:
        p.requires_grad_(True)
    return learn
