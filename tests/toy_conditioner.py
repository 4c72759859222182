"""A user's own conditioner, written outside the package: a tempo (beats per minute) from a metadata column.

Everything it needs is declared here: the batch key it reads, the track field the DataModules copy into
batches, and its contribution (a start-token embedding of the binned tempo). Nothing in jukebox_pl is edited.
"""

from __future__ import annotations

from torch import nn

from jukebox_pl.prior.conditioning import Conditioner, Contribution, Window


class TempoConditioner(Conditioner):
    batch_keys = ("tempo",)
    describes = "the tempo in beats per minute"

    def __init__(self, width: int, n_ctx: int, column: str = "extra.bpm", bins: int = 16, low: float = 40.0,
                 high: float = 240.0):  # fmt: skip
        super().__init__()
        self.bins, self.low, self.high = bins, low, high
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.5)

    @classmethod
    def track_fields(cls, column: str = "extra.bpm", **_) -> dict[str, dict]:
        return {"tempo": {"path": column, "default": None, "dtype": "float"}}

    def contribute(self, inputs: dict, window: Window) -> Contribution:
        tempo = inputs["tempo"].float().reshape(-1)
        idx = ((tempo - self.low) / (self.high - self.low) * self.bins).long().clamp(0, self.bins - 1)
        return Contribution(start=self.emb(idx)[:, None])
