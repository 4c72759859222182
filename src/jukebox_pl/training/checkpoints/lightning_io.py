"""How a training checkpoint reaches the disk: finite weights only, and atomically.

A process killed while writing `last.ckpt` must not leave half a file where the only resume point was (the
file is written beside its target and renamed over it, which POSIX makes atomic), and a diverged run must not
replace good weights with NaN (refused before anything is written). Every tensor's checksum is written with it
and compared when a run resumes, so a checkpoint damaged after it was written is refused naming the tensor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from jukebox_pl.training.checkpoints.checksums import verify_checksums, with_checksums
from jukebox_pl.training.checkpoints.read_write import atomic_torch_save, check_finite


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, refusing non-finite weights; local files are streamed to a temporary file
    and renamed (Lightning's own writer first serialises the whole checkpoint in memory, twice the size of a big
    prior); remote URLs (`s3://...`) keep Lightning's fsspec transaction.

    `verified`: a checkpoint whose checksums were just compared (`resume.resume_checkpoint` reads every tensor to
    choose the file to resume from); while the file is unchanged, loading it does not read and sum it again (a
    big prior's checkpoint with its Adam state is tens of GB)."""

    def __init__(self, verified: str | Path | None = None):
        super().__init__()
        self.verified = (str(verified), file_identity(verified)) if verified is not None else None

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        check_finite(checkpoint.get("state_dict", {}), f"the checkpoint for {path} (not written)")
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(with_checksums(checkpoint), path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, *args, **kwargs) -> dict[str, Any]:
        """Lightning's loader, then the checksums (unless `verified` already compared them for this file)."""
        checkpoint = super().load_checkpoint(path, *args, **kwargs)
        if self.verified != (str(path), file_identity(path)):
            verify_checksums(checkpoint, f"checkpoint {path}")
        return checkpoint


def file_identity(path: str | Path) -> tuple | None:
    """(device, inode, size, modification time) of a local file: changes when it is replaced or rewritten."""
    try:
        info = os.stat(path)
    except OSError:  # a remote URL, or gone
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
