"""Tear the process group down while the interpreter is still whole.

Lightning destroys the process group at exit only for NCCL. A gloo group left to interpreter finalisation can
abort the process ("terminate called without an active exception", exit -6) after a run that finished fine:
gloo's worker threads still hold work objects whose tensors need the GIL that finalisation is taking away.
"""

from __future__ import annotations

import atexit

import torch.distributed as dist

_registered = False


def destroy_at_exit() -> None:
    """Register (once) an exit handler that destroys the default process group if it is still up."""
    global _registered
    if _registered:
        return
    _registered = True
    atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
