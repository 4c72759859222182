"""Training checkpoints (`.ckpt`, resumable) vs weights-only exports (`.pt`, for inference and fine-tuning).

Both carry the resolved config, so either can rebuild its model; loaders accept both and say clearly what a
file is when it is neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from jukebox_pl.errors import MissingInputError, UserValueError

EXPORT_FORMAT = "jukebox-pl/weights-v1"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserValueError(f"{path} is not a readable torch checkpoint: {err}") from None
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
    try:
        return describe(read_checkpoint(path))
    except ValueError as err:
        raise UserValueError(f"{path}: {err}") from None


def export_weights(ckpt_path: str | Path, out_path: str | Path, use_ema: bool = True) -> Path:
    """Write a weights-only file (no optimizer state) from a training checkpoint.

    When the checkpoint holds an EMA of the weights (priors), the EMA weights are exported by default, as the
    reference did.
    """
    info = load_any(ckpt_path)
    state = dict(info["state_dict"])
    ema_prefix = "ema_model."
    if use_ema and any(k.startswith(ema_prefix) for k in state):
        state = {k[len(ema_prefix) :]: v for k, v in state.items() if k.startswith(ema_prefix)}
        state = {f"model.{k}" if not k.startswith("model.") else k: v for k, v in state.items()}
    else:
        state = {k: v for k, v in state.items() if not k.startswith(ema_prefix)}
    out = {
        "format": EXPORT_FORMAT,
        "kind": info["kind"],
        "hparams": info["hparams"],
        "state_dict": state,
        "meta": {**info["meta"], "exported_from": str(ckpt_path), "global_step": info.get("global_step")},
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, out_path)
    return out_path
