"""Run by tests/test_prior_training.py: a tiny top prior trained by 2 CPU processes under DDP or FSDP.

    python fsdp_prior_probe.py SHARDS RUN OUT [resume] [key=value ...]

Each rank writes its loss at every step to OUT/rank<R>.json, and the number of FSDP units and transformer blocks
to OUT/units<R>.json; the checkpoints are the run's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prior_settings import COMMON, PRIOR  # noqa: E402

from jukebox_pl.stages.train_prior import train_prior  # noqa: E402


class Losses(pl.Callback):
    def __init__(self, out: Path):
        self.out, self.losses = out, {}

    def on_train_start(self, trainer, pl_module):
        from torch.distributed.fsdp import FSDPModule

        from jukebox_pl.prior.transformer import ResAttnBlock

        units = sum(isinstance(m, FSDPModule) for m in pl_module.modules())
        blocks = sum(isinstance(m, ResAttnBlock) for m in pl_module.modules())
        (self.out / f"units{trainer.global_rank}.json").write_text(json.dumps({"units": units, "blocks": blocks}))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses[trainer.global_step] = float(loss)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.losses))


def main(shards: str, run: str, out: str, *rest: str) -> None:
    overrides = [*PRIOR, *COMMON, "trainer.accelerator=cpu", "trainer.devices=2", "trainer.limit_val_batches=0",
                 "data.epoch_length=64", *[r for r in rest if "=" in r]]  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the same arithmetic under both strategies (a near-tie code may flip otherwise)
    train_prior(run, "top", "tiny", shards, overrides, resume="resume" in rest, callbacks=[Losses(Path(out))])


if __name__ == "__main__":
    main(*sys.argv[1:])
