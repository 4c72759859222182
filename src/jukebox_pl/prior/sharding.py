"""FSDP for the large priors: torch's `fully_shard` (FSDP2) applied per transformer block, then to the rest.

Each `ResAttnBlock` becomes one unit (its weights gathered just before it runs and freed after, so a 5B prior
never holds more than a block or two of full weights per GPU); the label tables, lyrics encoder and output head
form the outermost unit. The EMA copy is sharded the same way, so its update is a local, shard-by-shard lerp
and validation runs it like the live weights. `fully_shard` runs on CUDA (NCCL) and on CPU (gloo), which is how
the tests step it. Activation checkpointing is the prior's own (`prior.<level>.checkpoint_res`), inside each unit.
"""

from __future__ import annotations

import torch
from torch import nn

HALF = {"bf16": torch.bfloat16, "16": torch.float16}


def mixed_precision(precision: str | int | None):
    """FSDP's policy for a Trainer precision: `bf16-mixed` / `16-mixed` gather weights and compute in half
    precision, reduce gradients in fp32 (the master weights and Adam stay fp32); anything else: None."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = HALF.get(str(precision).split("-")[0]) if str(precision).endswith("-mixed") else None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype is not None else None


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_prior(model: nn.Module, mesh, policy=None) -> None:
    """Shard `model` over the data-parallel `mesh`: one FSDP unit per transformer block, one for the rest."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from jukebox_pl.prior.transformer import ResAttnBlock

    policy = policy or MixedPrecisionPolicy()
    blocks = [m for m in model.modules() if isinstance(m, ResAttnBlock)]
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
