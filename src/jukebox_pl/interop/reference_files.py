"""The reference's checkpoint files read and converted to our state dicts: `read_reference_file` (tensors and
plain data only; with `--trust-pickle`, only the reference's own classes besides), `convert_vqvae` (the one
three-level VQ-VAE split into our level files) and `convert_prior`.

Every key of a file is placed or the conversion is refused with the list of what could not be placed and what of
ours was left unfilled. A prior's weights are never copied: the reference's (n_in, n_out) Conv1D weights become
transposed views of the memory-mapped source, in the source's dtype (the 5B models' fp16), so converting a 10 GB
file holds no second copy of it in RAM. `jukebox_pl.stages.import_openai` writes the run folder.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.errors import MissingInputError, RefusedError, UnsafeFileError, UserKeyError, UserValueError
from jukebox_pl.interop.openai_hps import ModelSpec
from jukebox_pl.interop.reference_prior_weights import reference_key
from jukebox_pl.interop.reference_vqvae_weights import load_reference_level, reference_levels, strip_module_prefix
from jukebox_pl.training.checkpoints.read_write import (
    load_mapped,
    torch_error_text,
    unsafe_global,
)
from jukebox_pl.vqvae.model import build_vqvae_level

SHOWN = 10  # keys listed in a refusal before "and N more"


class ImportRefused(RefusedError):
    """A file does not fit the model its hparams describe; the message lists the keys."""


# -- reading the reference's files ---------------------------------------------------------------------------
class ReferenceObject(dict):
    """Stands in for the reference's own classes (its `Hyperparams` is a dict subclass) in a trusted pickle."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        if isinstance(state, Mapping):
            self.update(state)


# Plain containers pickle spells as globals (protocol 2 writes a set as `builtins.set` + REDUCE); everything
# else a reference file holds is a tensor (torch's own allow-list) or one of the reference's `jukebox.*` classes.
PLAIN_GLOBALS = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, bytearray, complex)}


class RefusedGlobal(pickle.UnpicklingError):
    """A trusted reference file named a global outside what such a file holds; nothing of it was called."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def trusted_global(module: str, name: str) -> Any:
    """What `--trust-pickle` lets a reference file name: its own classes (as `ReferenceObject`), plain containers,
    and exactly what torch's weights_only unpickler allows (tensor rebuilders, storages, dtypes, OrderedDict).
    Anything else (`posix.system`, `builtins.exec`, `subprocess.Popen`, `builtins.getattr`, ...) is refused by
    name before it can be called."""
    if module == "jukebox" or module.startswith("jukebox."):
        return ReferenceObject  # the reference package need not be installed
    from torch._weights_only_unpickler import _get_allowed_globals

    full = f"{module}.{name}"
    allowed = {**_get_allowed_globals(), **PLAIN_GLOBALS}
    if full in allowed:
        return allowed[full]
    raise RefusedGlobal(full)


class _ReferenceUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return trusted_global(module, name)


def _reference_load(file, **kwargs):
    """`pickle.load` through the restricted unpickler (torch calls it for the legacy format's header records)."""
    return _ReferenceUnpickler(file, **kwargs).load()


REFERENCE_PICKLE = types.SimpleNamespace(Unpickler=_ReferenceUnpickler, load=_reference_load, __name__="pickle")


def _torch_load(path: Path, weights_only: bool):
    """Memory-mapped where the format allows; with `weights_only=False`, the restricted reference unpickler."""
    return load_mapped(path, weights_only, **({} if weights_only else {"pickle_module": REFERENCE_PICKLE}))


def _unreadable(path: Path, err: BaseException) -> UserValueError:
    """A file that is no torch file at all (torch's advice to load it unsafely is left out)."""
    reason = next(iter(torch_error_text(str(err)).splitlines()), "")
    return UserValueError(f"{path} is not a readable torch file: {type(err).__name__}: {reason}")


def _refused(path: Path, name: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path} is refused, with or without --trust-pickle: it names the global {name}, which a reference "
        "checkpoint never holds (only its jukebox.* classes, tensors and plain containers); nothing of it ran"
    )


def read_reference_file(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict without any `module.` prefix, the file's `hps` or None) of a reference checkpoint file: a dict
    with `model` (and `hps`, `step`, `opt`) or a bare state dict. Tensors and plain data only, unless the file
    needs pickle and `trust_pickle` says it may (the reference pickled its `Hyperparams` class): then only the
    reference's own classes are added to what a weights-only load allows (`trusted_global`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"reference checkpoint {path} does not exist")
    try:
        obj = _torch_load(path, weights_only=True)
    except Exception as err:  # a pickled class, a truncated download, not a torch file
        detail = unsafe_global(err)
        if detail is None:
            raise _unreadable(path, err) from None
        named = detail.removeprefix("Unsupported global: GLOBAL ") if detail.startswith("Unsupported") else None
        if named is not None and not (named.split(".")[0] == "jukebox" or named in PLAIN_GLOBALS):
            raise _refused(path, named) from None  # no reference file holds it: --trust-pickle would not help
        if not trust_pickle:
            raise UnsafeFileError(
                f"{path} needs pickle to load ({detail}): the reference wrote its files that way. If you trust "
                "where the file comes from (e.g. OpenAI's own download), pass --trust-pickle"
            ) from None
        obj = None
    if obj is None:
        try:
            obj = _torch_load(path, weights_only=False)
        except RefusedGlobal as err:
            raise _refused(path, err.name) from None
        except Exception as err:
            raise _unreadable(path, err) from None
    if not isinstance(obj, Mapping):
        raise UserValueError(f"{path} holds a {type(obj).__name__}, not a reference checkpoint")
    hps = obj.get("hps") if isinstance(obj.get("model"), Mapping) else None
    state = obj["model"] if isinstance(obj.get("model"), Mapping) else obj
    state = strip_module_prefix(state)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserValueError(f"{path}: {len(bad)} entries are not tensors ({', '.join(map(str, bad[:SHOWN]))})")
    return state, (dict(hps) if isinstance(hps, Mapping) else None)


def _listing(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


# -- conversion ------------------------------------------------------------------------------------------------
def convert_vqvae(state: Mapping[str, torch.Tensor], spec: ModelSpec, where: str) -> dict[int, dict]:
    """Our level state dicts (weights, codebook and its EMA statistics restarted from it) of a reference VQ-VAE."""
    levels = spec.vqvae["levels"]
    have = reference_levels(state)
    if have != levels:
        raise ImportRefused(f"{where} holds a {have}-level VQ-VAE, its hparams ({spec.source}) say {levels}")
    cfg = vqvae_config(spec.vqvae)
    out, placed = {}, set()
    for level in range(levels):
        model = build_vqvae_level(cfg, level)
        try:
            load_reference_level(model, state)
        except (UserKeyError, RuntimeError) as err:
            raise ImportRefused(f"{where}, level {spec.levels.name(level)}: {err}") from None
        prefixes = (f"encoders.{level}.", f"decoders.{level}.")
        placed |= {k for k in state if k.startswith(prefixes)} | {f"bottleneck.level_blocks.{level}.k"}
        out[level] = {k: v for k, v in model.state_dict().items() if not k.startswith("spectral.")}
    left = set(state) - placed
    if left:
        raise ImportRefused(f"{where}: {len(left)} keys could not be placed in our VQ-VAE levels: {_listing(left)}")
    return out


def prior_model(spec: ModelSpec, device: str = "meta"):
    """Our prior for a spec (on the meta device by default: shapes without memory)."""
    from jukebox_pl.prior.model import build_prior

    with torch.device(device):
        return build_prior(spec.levels, spec.level, spec.prior, spec.prior.get("y_bins"))


def convert_prior(state: Mapping[str, torch.Tensor], spec: ModelSpec, where: str) -> dict[str, torch.Tensor]:
    """Our prior state dict: renamed keys, Conv1D weights as transposed views (no copy), dtypes kept."""
    mapped = {}
    for key, value in state.items():
        name, transposed = reference_key(key)
        mapped[name] = value.t() if transposed else value
    expected = {k: tuple(v.shape) for k, v in prior_model(spec).state_dict().items()}
    missing = set(expected) - set(mapped)
    unexpected = set(mapped) - set(expected)
    wrong = {k for k in set(expected) & set(mapped) if tuple(mapped[k].shape) != expected[k]}
    if missing or unexpected or wrong:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} of its keys have no place in our prior: {_listing(unexpected)}")
        if missing:
            parts.append(f"{len(missing)} of our keys are not in the file: {_listing(missing)}")
        if wrong:
            shown = ", ".join(f"{k} {tuple(mapped[k].shape)} vs {expected[k]}" for k in sorted(wrong)[:SHOWN])
            parts.append(f"{len(wrong)} shapes differ (file vs ours): {shown}")
        raise ImportRefused(f"{where} does not fit the {spec.level} prior of {spec.source}: " + "; ".join(parts))
    return mapped
