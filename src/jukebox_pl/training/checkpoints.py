"""Training checkpoints (`.ckpt`, resumable) vs weights-only exports (`.pt`, for inference and fine-tuning).

Both carry the resolved config, so either can rebuild its model; loaders accept both and say clearly what a
file is when it is neither.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from jukebox_pl.errors import DivergedError, MissingInputError, UnsafeFileError, UserValueError

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


def unsafe_global(err: pickle.UnpicklingError) -> str | None:
    """The global a `weights_only` load refused ("Unsupported global: GLOBAL os.system"), None for other errors."""
    text = str(err)
    start = text.find("Unsupported global")
    return text[start:].split(" was not an allowed global")[0] if start >= 0 else None


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
    tensors and plain data only (`weights_only=True`), so a crafted pickle is refused before any of it runs."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist")
    try:
        return load_mapped(path)
    except pickle.UnpicklingError as err:
        detail = unsafe_global(err)
        if detail is None:  # not a pickle at all (an audio file, a truncated download): a plain bad file
            raise UserValueError(f"{what} {path} is not a readable torch file: {str(err).splitlines()[0]}") from None
        raise UnsafeFileError(
            f"{what} {path} is refused: it holds Python objects beyond tensors and plain data ({detail}); "
            "files written by jukebox-pl never do — it was made by another program or tampered with"
        ) from None
    except Exception as err:  # a truncated or foreign file: a user problem, named
        raise UserValueError(f"{what} {path} is not a readable torch file: {type(err).__name__}: {err}") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    obj = safe_load(path, "checkpoint")
    if not isinstance(obj, dict):
        raise UserValueError(f"{path} holds a {type(obj).__name__}, not a jukebox-pl checkpoint")
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
    except (UnsafeFileError, MissingInputError):
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
