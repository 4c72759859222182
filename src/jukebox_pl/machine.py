"""What this machine has, for bounding inputs up front: a batch, a crop or a decoded file that cannot fit is
refused with its estimate instead of exhausting memory (or swap) deep inside a run."""

from __future__ import annotations

import os


def ram_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def gpu_bytes() -> int | None:
    """Memory of the first CUDA device, only when CUDA is already initialised in this process (asking would
    otherwise initialise it, which breaks Lightning's fork-based strategies)."""
    import sys

    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # no usable device: fall back to RAM
        return None
    return None


def memory_limit() -> tuple[int | None, str]:
    """The most memory one run can use here and what it is ("RAM" or "GPU memory"): the larger of the two."""
    ram, gpu = ram_bytes(), gpu_bytes()
    if gpu is not None and (ram is None or gpu > ram):
        return gpu, "GPU memory"
    return ram, "RAM"


def gib(n: float) -> str:
    """Bytes as GiB for messages."""
    return f"{n / 2**30:.3g} GiB"
