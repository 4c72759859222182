"""`model.safetensors`: a model's weights as tensors and nothing else, so a shared folder can never run code.

Written atomically with a CRC-32 of each tensor in the file's metadata (found again when it is read, as for every
checkpoint); a tensor a model ties to another (a head to its embedding) is stored once and named as an alias.
Read back only with safetensors: a pickle under that name is refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from jukebox_pl.errors import DiskFullError, UnsafeFileError, UserValueError
from jukebox_pl.training.checkpoints.checksums import ChecksumMismatch, describe_damage, tensor_crc
from jukebox_pl.training.checkpoints.read_write import check_finite, current_umask, disk_full_in
from jukebox_pl.user_files import check_input_file

WEIGHTS_NAME = "model.safetensors"
FORMAT = "jukebox-pl/hub-v1"
# How a torch.save file (zip archive) or a bare pickle begins: either would have to be unpickled to be read.
PICKLE_STARTS = (b"PK\x03\x04", b"\x80")
MAX_HEADER = 100 << 20  # bytes of safetensors header (names, shapes, metadata) read before any tensor


def _storage_key(tensor: torch.Tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))


def split_shared(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors to store, {alias: stored name}): a tensor seen under a second name is stored once; one that only
    overlaps another's memory is copied (safetensors stores no shared memory)."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = _storage_key(tensor)
        if key in seen and tensor.dtype == stored[seen[key]].dtype:
            aliases[name] = seen[key]
            continue
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in storages and tensor.numel():
            tensor = tensor.clone()
        seen.setdefault(key, name)
        storages.add(ptr)
        stored[name] = tensor.contiguous()
    return stored, aliases


def atomic_write(path: Path, write) -> Path:
    """`write(temporary path)` in the target's folder, flushed to disk, then renamed over `path`; a full disk is
    one line saying what was kept. The file gets the mode the umask gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if disk_full_in(err):
            kept = f"{path} keeps what it held before" if path.exists() else f"{path} was not written"
            raise DiskFullError(f"no space left on the disk while writing {path}: {kept}; free some space") from None
        raise
    return path


def write_weights(path: str | Path, state: Mapping[str, torch.Tensor]) -> Path:
    """Write a state dict as safetensors (atomic, checksummed, tied tensors stored once)."""
    stored, aliases = split_shared(state)
    stored = {name: t.cpu() for name, t in stored.items()}
    sums = {name: crc for name, t in stored.items() if (crc := tensor_crc(t)) is not None}
    metadata = {"format": FORMAT, "aliases": json.dumps(aliases), "checksums": json.dumps(sums)}
    return atomic_write(Path(path), lambda tmp: save_file(stored, tmp, metadata=metadata))


def _check_header(path: Path) -> None:
    """Refuse a file that is no safetensors file before safetensors reads it: a pickle (a torch.save file) by
    name, anything else as unreadable."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if 2 <= size <= min(MAX_HEADER, path.stat().st_size - 8) and head[8:9] == b"{":
        return
    if head.startswith(PICKLE_STARTS):
        raise UnsafeFileError(
            f"{path} is refused: it is a pickle (a torch.save file), not safetensors; a Hub folder's weights are "
            "read as tensors only, never unpickled (convert it with `jukebox-pl export --format hub`)"
        )
    raise UserValueError(f"{path} is not a safetensors file (its header is unreadable); fetch or export it again")


def _meta_json(meta: Mapping[str, str], key: str, path: Path) -> dict:
    try:
        value = json.loads(meta.get(key) or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise UserValueError(f"{path}: the metadata entry {key!r} is not a mapping of names; export it again")
    return value


def read_weights(
    path: str | Path, what: str = "weights file", keep: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a `model.safetensors` (aliases filled in), checked against their checksums and for NaN or
    infinity; a pickle, a damaged or foreign file is one error line naming it. `keep`: read, check and return only
    the tensors whose names it accepts (the others' bytes are never read)."""
    path = check_input_file(path, what)
    _check_header(path)
    wanted = (lambda name: True) if keep is None else keep
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            aliases = _meta_json(meta, "aliases", path)
            needed = {aliases.get(name, name) for name in [*f.keys(), *aliases] if wanted(name)}  # noqa: SIM118
            state = {name: f.get_tensor(name) for name in f.keys() if name in needed}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise UserValueError(f"{what} {path} is not a readable safetensors file: {str(err).splitlines()[0]}") from None
    sums = {name: crc for name, crc in _meta_json(meta, "checksums", path).items() if name in needed}
    bad = [name for name, crc in sums.items() if name not in state or tensor_crc(state[name]) not in (crc, None)]
    if bad:
        raise ChecksumMismatch(f"{what} {path} is damaged: {describe_damage(bad)}; fetch or export it again")
    for alias, source in aliases.items():
        if not wanted(alias):
            continue
        if source not in state:
            raise UserValueError(f"{what} {path}: {alias!r} is an alias of {source!r}, which the file lacks")
        state[alias] = state[source]
    state = {name: t for name, t in state.items() if wanted(name)}
    check_finite(state, f"{what} {path}")
    return state


def load_assigned(model: torch.nn.Module, state: dict[str, torch.Tensor], path, what: str = "its model") -> None:
    """Load `state` into a model (built on the meta device where memory matters) by adopting its tensors
    instead of copying them: a 5B prior is held once in RAM, not twice. Weights the model shares (a head tied
    to its embedding) are shared again afterwards."""
    shared = {}
    seen: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            shared[name] = seen[id(param)]
        else:
            seen[id(param)] = name
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise UserValueError(f"{path} does not fit {what}: {str(err).splitlines()[0]} ...") from None
    for name, source in shared.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner), attr, model.get_parameter(source))
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise UserValueError(f"{path} lacks weights for {left[:5]}")
