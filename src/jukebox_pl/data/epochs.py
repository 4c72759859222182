"""The training loader as numbered epochs, so that a resumed run reads exactly the batches it would have read.

Each iteration of the training pipeline is one pass whose content is a fixed function of (seed, rank, worker,
pass number) (see `build_pipeline`); the DataLoader takes batches from its workers in a fixed round-robin
order. So "epoch e, batch b" names one batch for ever: a run stopped there starts its pipeline at pass e and
drops the b batches it had already trained on (they are read again, not trained on: at most one epoch of
data loading, `data.epoch_length` crops, for an exact resume).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class ResumePoint:
    """Where a training stream stopped: the epoch in progress and the batches of it already trained on."""

    epoch: int = 0
    batches: int = 0

    def normalised(self, batches_per_epoch: int) -> ResumePoint:
        """A position at the end of an epoch is the start of the next one."""
        epoch, batches = self.epoch, self.batches
        if batches_per_epoch > 0 and batches >= batches_per_epoch:
            epoch, batches = epoch + batches // batches_per_epoch, batches % batches_per_epoch
        return ResumePoint(epoch, batches)


class EpochLoader:
    """`batches_per_epoch` batches per iteration from loaders made by `make_loader(start_epoch)`; the first
    iteration after a resume skips the batches already trained on. `len()` is the full epoch length, as Lightning
    expects (it counts the skipped batches as done itself)."""

    def __init__(self, make_loader: Callable[[int], object], batches_per_epoch: int, resume: ResumePoint):
        resume = resume.normalised(batches_per_epoch)
        self.loader = make_loader(resume.epoch)
        self.batches_per_epoch = batches_per_epoch
        self.skip = resume.batches

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator:
        skip, self.skip = self.skip, 0
        stream = iter(self.loader)
        for index in range(self.batches_per_epoch):
            try:
                batch = next(stream)
            except StopIteration:
                return
            if index >= skip:
                yield batch
