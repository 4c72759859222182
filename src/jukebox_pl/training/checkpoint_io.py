"""How a training checkpoint reaches the disk: finite weights only, and atomically.

A process killed while writing `last.ckpt` must not leave half a file where the only resume point was (the
file is written beside its target and renamed over it, which POSIX makes atomic), and a diverged run must not
replace good weights with NaN (refused before anything is written).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from jukebox_pl.training.checkpoints import check_finite


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file in the target's folder, flushed to disk, then renamed over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, refusing non-finite weights; local files are streamed to a temporary file
    and renamed (Lightning's own writer first serialises the whole checkpoint in memory, twice the size of a big
    prior); remote URLs (`s3://...`) keep Lightning's fsspec transaction."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        check_finite(checkpoint.get("state_dict", {}), f"the checkpoint for {path} (not written)")
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
