"""Distributed strategies every stage uses (DDP without buffer broadcasts)."""

from __future__ import annotations


def ddp_strategy(name: str):
    """DDP without buffer broadcasts: the codebook stays in sync through its own all-reduce, and rank 0's
    buffers must never overwrite the EMA state the other ranks computed."""
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from pytorch_lightning.strategies import DDPStrategy

        start = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}[name]
        return DDPStrategy(start_method=start, broadcast_buffers=False)
    return None
