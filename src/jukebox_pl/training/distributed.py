"""How a run is spread over ranks, in one place: DDP without buffer broadcasts, FSDP (torch's `fully_shard`,
FSDP2) applied per transformer block, and reading sharded tensors rank-locally.

FSDP for the large priors: each block (`ResAttnBlock`) becomes one unit (its weights gathered just before it
runs and freed after, so a 5B prior never holds more than a block or two of full weights per GPU); the label
tables, lyrics encoder and output head form the outermost unit. The EMA copy is sharded the same way, so its
update is a local, shard-by-shard lerp and validation runs it like the live weights. `fully_shard` runs on CUDA
(NCCL) and on CPU (gloo), which is how the tests step it. Activation checkpointing is the prior's own
(`prior.<level>.checkpoint_res`), inside each unit. Code that works rank-locally (the EMA lerp, the finite
check) reads each rank's own part of a sharded tensor (`local`, `local_rows`).
"""

from __future__ import annotations

import torch
from torch import nn

HALF = {"bf16": torch.bfloat16, "16": torch.float16}


# -- strategies ------------------------------------------------------------------------------------------------
def ddp_strategy(name: str):
    """DDP without buffer broadcasts: the codebook stays in sync through its own all-reduce, and rank 0's
    buffers must never overwrite the EMA state the other ranks computed."""
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from pytorch_lightning.strategies import DDPStrategy

        start = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}[name]
        return DDPStrategy(start_method=start, broadcast_buffers=False)
    return None


def fully_sharded_strategy():
    """`trainer.strategy=fsdp`: Lightning's ModelParallelStrategy (torch's `fully_shard`, on CUDA and on CPU with
    gloo; Lightning's FSDPStrategy is FSDP1 and CUDA only) sharding over every rank of every node, with
    checkpoints gathered into one ordinary file (it resumes under FSDP or DDP and loads in one process for
    sampling). The module applies `fully_shard` itself in `configure_model`."""
    from pytorch_lightning.strategies import ModelParallelStrategy

    class FullyShardedStrategy(ModelParallelStrategy):
        def setup_environment(self) -> None:
            # one data-parallel dimension over all ranks (Lightning's "auto" is one per node, for tensor parallelism)
            self._data_parallel_size = self.num_nodes * self.num_processes
            super().setup_environment()

    return FullyShardedStrategy(tensor_parallel_size=1, save_distributed_checkpoint=False)


# -- FSDP ---------------------------------------------------------------------------------------------------------
def mixed_precision(precision: str | int | None):
    """FSDP's policy for a Trainer precision: `bf16-mixed` / `16-mixed` gather weights and compute in half
    precision, reduce gradients in fp32 (the master weights and Adam stay fp32); anything else: None."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = HALF.get(str(precision).split("-")[0]) if str(precision).endswith("-mixed") else None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype is not None else None


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_per_block(model: nn.Module, block: type[nn.Module], mesh, policy=None) -> None:
    """Shard `model` over the data-parallel `mesh`: one FSDP unit per `block` module (a prior's `ResAttnBlock`),
    one for the rest."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = policy or MixedPrecisionPolicy()
    blocks = [m for m in model.modules() if isinstance(m, block)]
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


# -- sharded tensors, read rank-locally ----------------------------------------------------------------------------
def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (a DTensor's local shard); a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def local_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This rank's rows of a tensor sharded along dim 0 (FSDP) and the global index of the first; a plain
    tensor is all its rows, from 0."""
    if not hasattr(tensor, "to_local"):
        return tensor, 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    return tensor.to_local(), int(offset[0])
