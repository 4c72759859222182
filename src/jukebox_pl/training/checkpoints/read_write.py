"""Training checkpoints (`.ckpt`, resumable) vs weights-only exports (`.pt`, for inference and fine-tuning).

Both carry the resolved config, so either can rebuild its model; loaders accept both and say clearly what a
file is when it is neither.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from jukebox_pl.config.conditioner_targets import check_file_conditioners
from jukebox_pl.errors import (
    DiskFullError,
    DivergedError,
    MissingInputError,
    UnsafeFileError,
    UserValueError,
    is_disk_full,
)
from jukebox_pl.training.checkpoints.checksums import ChecksumMismatch, verify_checksums, with_checksums

EXPORT_FORMAT = "jukebox-pl/weights-v1"


MAX_NAMED = 5  # keys named in a message before "and N more"


def nonfinite_keys(state: Mapping[str, object]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold a NaN or an infinity."""
    bad = []
    for key, value in state.items():
        usable = isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type != "meta"
        if usable and value.numel() and not bool(torch.isfinite(value).all()):
            bad.append(key)
    return bad


def describe_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_NAMED])
    return shown + (f" and {len(keys) - MAX_NAMED} more" if len(keys) > MAX_NAMED else "")


def check_finite(state: Mapping[str, object], what: str) -> None:
    """Refuse weights holding NaN or infinity, naming the file (`what`) and the tensors: a model trained into
    NaN encodes everything to code 0 and samples silence without a word otherwise."""
    bad = nonfinite_keys(state)
    if bad:
        raise DivergedError(
            f"{what} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s): {describe_keys(bad)}; "
            "it comes from a diverged run and is refused (use an earlier checkpoint of that run)"
        )


TEMP_SUFFIX = ".tmp"
INTERRUPTED_SAVE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # `.last.ckpt.k2j4x0_q.tmp`: mkstemp's name for a save


def current_umask() -> int:
    """The process's umask (read without changing it where /proc allows; `os.umask` has no getter)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file in the target's folder, flushed to disk, then renamed over the target.
    A dict's tensors get their checksums (`tensor_checksums`); the file gets the mode the umask gives any new
    file (a temporary file is created 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = with_checksums(obj)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if disk_full_in(err):  # torch wraps the OSError of its writes in a RuntimeError
            kept = f"{path} keeps what it held before" if path.exists() else f"{path} was not written"
            full = DiskFullError(
                f"no space left on the disk while writing {path}: {kept}; free some space and try again"
            )
            full.what = f"no space left on the disk while writing {path}: {kept}"  # for callers that know what next
            raise full from None
        raise
    return path


def disk_full_in(err: BaseException | None) -> bool:
    """Whether a "no space left" / "quota exceeded" error is this one or what it was raised from."""
    seen = 0
    while err is not None and seen < 8:
        if is_disk_full(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def clean_interrupted_saves(folder: str | Path) -> list[Path]:
    """Remove the temporary files that saves into `folder` left when their process was killed mid-write (the
    caller holds the folder, so no save is under way); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.iterdir():
        if INTERRUPTED_SAVE.match(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# What torch's weights_only unpickler says when it refuses something a pickle asked for (its wording differs by
# case: a blocked module such as `posix`, a global outside its allow-list, a call or object of a class it does not
# know). Each is a file that wanted to run or build Python objects: refused, never "damaged".
_REFUSALS = (
    re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"),
    re.compile(r"Trying to load unsupported GLOBAL (\S+) whose module \S+ is blocked"),
    re.compile(r"(Trying to call reduce for unrecognized function [^\n]*)"),
    re.compile(r"(Can only (?:create new object|build) [^\n]*)"),
    re.compile(r"(Only persistent_load of storage is allowed[^\n]*)"),
    re.compile(r"``(torch\.\w+(?:\.\w+)*)`` must be imported"),
)
# Opcodes that import a global or build an object, which torch's unpickler reports as "Unsupported operand N"
# (STACK_GLOBAL, INST, OBJ, NEWOBJ_EX, EXT1/2/4); other unknown opcodes mean bytes that are no pickle at all.
_OBJECT_OPCODES = frozenset(b"\x93io\x92\x82\x83\x84")


def torch_error_text(text: str) -> str:
    """torch's own reason, without the advice it wraps around it (which invites an unsafe `weights_only=False`)."""
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed") and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    return text.split("\n\nCheck the documentation", 1)[0].strip()


def unsafe_global(err: BaseException) -> str | None:
    """What a `weights_only` load refused to run or build, however torch words it ("Unsupported global: GLOBAL
    posix.system", a blocked module, a REDUCE of an unknown function, an object-building opcode); None when the
    error is something else (bytes that are no torch file, a truncated archive)."""
    inner = torch_error_text(str(err))
    for i, pattern in enumerate(_REFUSALS):
        match = pattern.search(inner)
        if match is None:
            continue
        if i > 1:
            return match.group(1).rstrip(".")
        name = match.group(1)
        return f"Unsupported global: GLOBAL {name if '.' in name else 'builtins.' + name}"  # torch drops `builtins.`
    operand = re.search(r"Unsupported operand (\d+)", inner)
    if operand and int(operand.group(1)) in _OBJECT_OPCODES:
        return f"the pickle opcode {int(operand.group(1))}, which imports a global or builds an object"
    return None


def load_mapped(path: str | Path, weights_only: bool = True, **kwargs) -> Any:
    """`torch.load` memory-mapped (a big prior's weights come from the page cache instead of being copied into
    RAM first), or read whole for the legacy (pre-zip) format, which cannot be mapped."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True, **kwargs)
    except RuntimeError as err:
        if "_use_new_zipfile_serialization" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only, **kwargs)


def safe_load(path: str | Path, what: str = "file") -> Any:
    """The one loader for every file jukebox-pl reads (checkpoints, exports, codes files, sampling state):
    tensors and plain data only (`weights_only=True`), so a crafted pickle is refused before any of it runs, and
    a file naming an extra conditioner that is not allowed (`allow_conditioners`) is refused before its module is
    imported. torch's advice to retry with `weights_only=False` never reaches the user: that load would run it."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist")
    try:
        obj = load_mapped(path)
    except Exception as err:  # a crafted pickle, a truncated download, an audio file: a user problem, named
        detail = unsafe_global(err)
        if detail is not None:
            raise UnsafeFileError(
                f"{what} {path} is refused: it holds Python objects beyond tensors and plain data ({detail}); "
                "files written by jukebox-pl never do — it was made by another program or tampered with"
            ) from None
        reason = next(iter(torch_error_text(str(err)).splitlines()), "")
        raise UserValueError(f"{what} {path} is not a readable torch file: {type(err).__name__}: {reason}") from None
    check_file_conditioners(obj, f"{what} {path}")
    return obj


def read_checkpoint(path: str | Path, only: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """A checkpoint or export as a dict, its tensors (those whose dotted path `only` accepts) checked against the
    checksums written with them."""
    obj = safe_load(path, "checkpoint")
    if not isinstance(obj, dict):
        raise UserValueError(f"{path} holds a {type(obj).__name__}, not a jukebox-pl checkpoint")
    verify_checksums(obj, f"checkpoint {path}", only)
    return obj


def describe(obj: dict[str, Any]) -> dict[str, Any]:
    """Normalise a training checkpoint or an export to {kind, hparams, state_dict (module-level), meta}."""
    if obj.get("format") == EXPORT_FORMAT:
        return {"kind": obj["kind"], "hparams": obj["hparams"], "state_dict": obj["state_dict"], "meta": obj["meta"]}
    if "state_dict" in obj and "hyper_parameters" in obj:
        meta = obj.get("jukebox_pl", {})
        return {
            "kind": meta.get("kind", "unknown"),
            "hparams": obj["hyper_parameters"],
            "state_dict": obj["state_dict"],
            "meta": meta,
            "global_step": obj.get("global_step"),
        }
    if "model" in obj and "hps" in obj:
        raise UserValueError("this is a checkpoint of the reference implementation; import it with jukebox_pl.interop")
    raise UserValueError(
        "not a jukebox-pl checkpoint: expected a Lightning .ckpt or a file written by `jukebox-pl export`"
    )


def load_any(path: str | Path) -> dict[str, Any]:
    """A checkpoint or export, normalised by `describe`; crafted pickles and non-finite weights are refused."""
    try:
        info = describe(read_checkpoint(path))
    except (UnsafeFileError, MissingInputError, ChecksumMismatch):
        raise
    except ValueError as err:
        raise UserValueError(f"{path}: {err}") from None
    check_finite(info["state_dict"], f"checkpoint {path}")
    return info


def export_weights(ckpt_path: str | Path, out_path: str | Path, use_ema: bool = True, transform=None) -> Path:
    """Write a weights-only file (no optimizer state) from a training checkpoint.

    When the checkpoint holds an EMA of the weights (priors), the EMA weights are exported by default, as the
    reference did. `transform` maps the exported state dict (e.g. merging a LoRA run's adapters).
    """
    info = load_any(ckpt_path)
    state = dict(info["state_dict"])
    ema_prefix = "ema_model."
    if use_ema and any(k.startswith(ema_prefix) for k in state):
        state = {k[len(ema_prefix) :]: v for k, v in state.items() if k.startswith(ema_prefix)}
        state = {f"model.{k}" if not k.startswith("model.") else k: v for k, v in state.items()}
    else:
        state = {k: v for k, v in state.items() if not k.startswith(ema_prefix)}
    if transform is not None:
        state = transform(state)
    out = {
        "format": EXPORT_FORMAT,
        "kind": info["kind"],
        "hparams": info["hparams"],
        "state_dict": state,
        "meta": {**info["meta"], "exported_from": str(ckpt_path), "global_step": info.get("global_step")},
    }
    return atomic_torch_save(out, out_path)
