"""One process per output folder: a stage folder (`RUN/<stage>`), a sample's `--out`, ... is locked for the whole
run, so a second process started on it is refused instead of interleaving its files with the first one's.

The lock is `fcntl.flock` on `<folder>/.lock`, which holds the holder's PID. The kernel drops it when the process
ends however it ends (a crash, `kill -9`), so a stale lock never blocks a later run. The ranks of one distributed
run share their folders: only the main process (rank 0 of node 0) locks, the others write under its lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from jukebox_pl.errors import RefusedError

LOCK_FILE = ".lock"
# the rank variables of torchrun, Lightning's launchers and SLURM, set before any Trainer exists
RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")

_held: dict[str, int] = {}  # resolved folder -> the descriptor this process locks it with


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker) shares the parent's lock: closing its copies of the descriptors
    leaves the lock with the parent alone, so the parent's `release` really frees the folder."""
    for fd in _held.values():
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class FolderInUse(RefusedError):
    """Another process holds the folder's lock."""


def is_main_process() -> bool:
    """True unless a launcher marked this process as another rank than the first (the other ranks of a run
    never lock: they would refuse their own rank 0)."""
    return all(os.environ.get(var, "0").strip() in ("", "0") for var in RANK_VARS)


def lock_folder(folder: str | Path, what: str = "folder") -> Path | None:
    """Lock `folder` (created if missing) for as long as this process runs, or until `release`; FolderInUse,
    naming the holder's PID, when another process holds it. Locking a folder this process already holds is a
    no-op. Returns the lock file (None on ranks other than the first, which do not lock)."""
    folder = Path(folder)
    if not is_main_process():
        return None
    key = str(folder.resolve())
    path = folder / LOCK_FILE
    if key in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUse(
            f"{what} {folder} is in use by another jukebox-pl process (PID {holder}, lock {path}); wait for it to "
            "finish or stop it, or choose another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd
    return path


def release(folder: str | Path) -> None:
    """Give the lock of `folder` back before the process ends (nothing happens when it is not held here)."""
    fd = _held.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor of the lock drops it


def holds(folder: str | Path) -> bool:
    return str(Path(folder).resolve()) in _held
