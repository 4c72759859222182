"""A CRC-32 of every tensor a file holds, written beside them and checked when the file is read back.

A byte flipped on a disk, in a copy or a download leaves a torch file that still opens and loads: the weights
are simply wrong, and a model trained or sampled from them fails without a word. Each tensor's bytes are
summed when a checkpoint or export is written (`with_checksums`) and compared when it is loaded
(`verify_checksums`), so such a file is refused naming the tensor. CRC-32 finds accidents (about 2 GB/s here);
it is not a signature: whoever can edit a file can recompute it, which is why loading stays tensors-only.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from jukebox_pl.errors import UserValueError

CHECKSUM_KEY = "tensor_checksums"  # top-level key of a saved dict: {dotted path of a tensor: "crc32:XXXXXXXX"}
CHUNK = 1 << 26  # bytes summed at a time: a multi-GB memory-mapped tensor is never copied whole


class ChecksumMismatch(UserValueError):
    """A tensor's bytes differ from what was written: the file was damaged after it was saved."""


def tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted path, tensor) of every tensor in nested dicts, lists and tuples, in a stable order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if key != CHECKSUM_KEY:
                yield from tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from tensors(value, f"{prefix}.{i}" if prefix else str(i))


def tensor_crc(tensor: torch.Tensor) -> str | None:
    """CRC-32 of a tensor's values as laid out in row-major order (independent of strides and storage sharing);
    None for tensors without bytes to read (meta, sparse, quantised)."""
    if tensor.device.type == "meta" or tensor.layout != torch.strided or tensor.is_quantized:
        return None
    flat = tensor.detach().reshape(-1)
    data = flat.contiguous().cpu().view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)
    crc = 0
    for start in range(0, data.numel(), CHUNK):
        crc = zlib.crc32(data[start : start + CHUNK].numpy(), crc)
    return f"crc32:{crc:08x}"


def checksums(obj: Any) -> dict[str, str]:
    return {path: crc for path, t in tensors(obj) if (crc := tensor_crc(t)) is not None}


def with_checksums(obj: Any) -> Any:
    """A shallow copy of a dict with the checksums of its tensors added; anything else (or a dict holding no
    tensor) unchanged."""
    if not isinstance(obj, dict):
        return obj
    sums = checksums(obj)
    return {**obj, CHECKSUM_KEY: sums} if sums else obj


def damaged_tensors(obj: Any, only: Callable[[str], bool] | None = None) -> list[str]:
    """Paths of the tensors whose bytes differ from the checksums the dict was written with ("(missing)" after
    a path that is gone); empty for a dict written without checksums (before they existed, or by another
    program). `only`: check just the paths it accepts (a partial load reads no other tensor's pages)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get(CHECKSUM_KEY), Mapping):
        return []
    found = dict(tensors(obj))
    bad = []
    for path, crc in obj[CHECKSUM_KEY].items():
        if only is not None and not only(path):
            continue
        tensor = found.get(path)
        if tensor is None:
            bad.append(f"{path} (missing)")
        elif tensor_crc(tensor) not in (crc, None):
            bad.append(path)
    return bad


def describe_damage(bad: list[str]) -> str:
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return f"{len(bad)} tensor(s) differ from the checksums written with them ({shown})"


def verify_checksums(obj: Any, what: str, only: Callable[[str], bool] | None = None) -> None:
    """Refuse a loaded dict whose tensors (those `only` accepts) differ from the checksums it was written with,
    naming the file (`what`) and the tensors."""
    bad = damaged_tensors(obj, only)
    if bad:
        raise ChecksumMismatch(
            f"{what} is damaged: {describe_damage(bad)}; copy or download it again, or use an earlier checkpoint"
        )
