"""Distributed strategies the stages use: DDP without buffer broadcasts, and FSDP for the priors."""

from __future__ import annotations


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
