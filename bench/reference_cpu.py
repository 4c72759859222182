"""The reference implementation (openai/jukebox), imported from a checkout named on the command line and made
to run on this CPU, for side-by-side timing. Nothing of it is copied: shims stand in for its CUDA-only calls
(`.cuda()` is the identity, its asserts name `torch.cuda.LongTensor`, its samplers make tensors with
device="cuda") and for librosa, which it imports but the timed paths never call."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

# the tensor factories its code calls with device="cuda"
FACTORIES = ("zeros", "ones", "arange", "empty", "randn", "randint", "tensor", "full", "rand")


def use_reference(checkout: str | Path) -> None:
    """Put the checkout first on the import path, with the CPU shims in place (idempotent): S1-S3."""
    path = str(Path(checkout).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    sys.modules.setdefault("librosa", types.ModuleType("librosa"))
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.LongTensor = torch.LongTensor  # its asserts name the CUDA type


def install_cpu_factories() -> None:
    """S4: torch's tensor factories called with device="cuda" make the tensor on the CPU instead (idempotent).
    Each wrapper keeps torch's own function as `__wrapped__`."""

    def on_cpu(factory):
        def wrapped(*args, **kwargs):
            device = kwargs.get("device")
            if device is not None and torch.device(device).type == "cuda":
                kwargs["device"] = "cpu"
            return factory(*args, **kwargs)

        wrapped.__wrapped__ = factory
        return wrapped

    for name in FACTORIES:
        if not hasattr(getattr(torch, name), "__wrapped__"):
            setattr(torch, name, on_cpu(getattr(torch, name)))


def single_process() -> None:
    """S5: the reference's distributed adapter answers as one process without a process group (rank 0)."""
    import jukebox.utils.dist_adapter as dist_adapter

    dist_adapter.is_available = lambda: False
