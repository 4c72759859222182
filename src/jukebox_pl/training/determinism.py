"""Randomness of a training step as a function of (seed, rank, step), so a resumed run draws what the
uninterrupted one would have.

Dropout, the codebook's random restarts and any other draw from torch's global generator depend on everything
drawn before them: after a resume (new process, new DataLoader iterators, a validation pass at another time)
they would differ. Reseeding at the start of every step removes that history.
"""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import Callback


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed per (run seed, rank, step), well spread (splitmix64 of the packed triple)."""
    x = (seed * 1_000_003 + rank) * 0x9E3779B97F4A7C15 + step
    x &= (1 << 64) - 1
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (x ^ (x >> 31)) >> 1


class StepSeeds(Callback):
    """Seeds torch's generators (CPU and every CUDA device) from (seed, rank, global step) before each step."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.global_rank, trainer.global_step))
