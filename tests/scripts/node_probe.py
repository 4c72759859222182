"""Run by tests/test_multinode.py: one node (or SLURM task) of a 2-node CPU run of a tiny VQ-VAE level or prior.

    python node_probe.py vqvae|prior SHARDS RUN OUT MAX_STEPS [resume] [usr1-at=N] [key=value ...]

The launcher sets the environment (NODE_RANK + MASTER_ADDR/PORT, torchrun's variables, or SLURM's). Each rank
writes what it trained on, the step it started from, the step it ended at and its full state (weights, EMA,
codebook) to OUT/<tag>_rank<R>.pt; `usr1-at=N` sends this process SIGUSR1 when step N ends, as SLURM's
`--signal=USR1` would.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prior_settings import PRIOR, VQVAE  # noqa: E402

from jukebox_pl.errors import StopRequested  # noqa: E402
from jukebox_pl.stages.train_prior import train_prior  # noqa: E402
from jukebox_pl.stages.train_vqvae import train_vqvae  # noqa: E402


class Dump(pl.Callback):
    def __init__(self, out: Path, usr1_at: int | None):
        self.out, self.usr1_at, self.keys, self.start = out, usr1_at, [], None

    def on_train_start(self, trainer, pl_module):
        self.start = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys += batch["key"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.usr1_at is not None and trainer.global_step == self.usr1_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        self.dump(trainer, pl_module)

    def dump(self, trainer, pl_module):
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        record = {"state": state, "keys": self.keys, "start": self.start, "step": trainer.global_step,
                  "world": trainer.world_size, "nodes": trainer.num_nodes}  # fmt: skip
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def main(stage: str, shards: str, run: str, out: str, max_steps: str, *rest: str) -> None:
    resume = "resume" in rest
    usr1 = [int(r.split("=")[1]) for r in rest if r.startswith("usr1-at=")]
    extra = [r for r in rest if "=" in r and not r.startswith("usr1-at=")]
    overrides = [
        *VQVAE, *PRIOR, "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2",
        "trainer.strategy=ddp", f"trainer.max_steps={max_steps}", "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false", "data.epoch_length=64", "run.log_audio_every_n_steps=0",
        "run.checkpoint_every_n_steps=1", *extra,
    ]  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    train = train_vqvae if stage == "vqvae" else train_prior
    try:
        train(
            run, "top", "tiny", shards, overrides, resume=resume, callbacks=[Dump(Path(out), usr1[0] if usr1 else None)]
        )
    except StopRequested as err:
        print(f"stopped: {err}", flush=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main(*sys.argv[1:])
