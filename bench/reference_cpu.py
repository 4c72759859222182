"""The reference implementation (openai/jukebox), imported from a checkout named on the command line and made
to run on this CPU, for side-by-side timing. Nothing of it is copied: shims stand in for its CUDA-only calls
(`.cuda()` is the identity, its asserts name `torch.cuda.LongTensor`) and for librosa, which it imports but the
timed paths never call."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch


def use_reference(checkout: str | Path) -> None:
    """Put the checkout first on the import path, with the CPU shims in place (idempotent)."""
    path = str(Path(checkout).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    sys.modules.setdefault("librosa", types.ModuleType("librosa"))
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.LongTensor = torch.LongTensor  # its asserts name the CUDA type
