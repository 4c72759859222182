"""`jukebox-pl import-openai`: the reference's checkpoint files -> a self-contained jukebox-pl run folder.

RUN/vqvae_<level>/export.pt (the reference's one three-level VQ-VAE split into our level files),
RUN/prior_<level>/export.pt, a config.yaml per stage, RUN/vocab.json (from the reference's id tables, with
--ids) and RUN/import.json (what came from where). `jukebox-pl sample --run RUN`, `train prior --init` and
fine-tuning read these directly; nothing in the run points outside it.

Every key of a file is placed or the import is refused with the list of what could not be placed and what of
ours was left unfilled. A prior's weights are never copied: the reference's (n_in, n_out) Conv1D weights are
written as transposed views of the memory-mapped source, in the source's dtype (the 5B models' fp16), so
converting a 10 GB file holds no second copy of it in RAM.
"""

from __future__ import annotations

import json
import pickle
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from jukebox_pl.config.loader import save_config
from jukebox_pl.config.schema import RunConfig
from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.errors import MissingInputError, RefusedError, UnsafeFileError, UserKeyError, UserValueError
from jukebox_pl.interop.openai_hps import ModelSpec, read_hps, spec_from_hps
from jukebox_pl.interop.reference_prior import reference_key
from jukebox_pl.interop.reference_vqvae import load_reference_level, reference_levels, strip_module_prefix
from jukebox_pl.training.checkpoints import (
    EXPORT_FORMAT,
    atomic_torch_save,
    load_mapped,
    torch_error_text,
    unsafe_global,
)
from jukebox_pl.vqvae.fingerprint import codes_fingerprint, level_print
from jukebox_pl.vqvae.model import VQVAELevelModel, hop_lengths, level_index, level_name

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
        model = VQVAELevelModel(cfg, level)
        try:
            load_reference_level(model, state)
        except (UserKeyError, RuntimeError) as err:
            raise ImportRefused(f"{where}, level {level_name(level, levels)}: {err}") from None
        prefixes = (f"encoders.{level}.", f"decoders.{level}.")
        placed |= {k for k in state if k.startswith(prefixes)} | {f"bottleneck.level_blocks.{level}.k"}
        out[level] = {k: v for k, v in model.state_dict().items() if not k.startswith("spectral.")}
    left = set(state) - placed
    if left:
        raise ImportRefused(f"{where}: {len(left)} keys could not be placed in our VQ-VAE levels: {_listing(left)}")
    return out


def prior_model(spec: ModelSpec, device: str = "meta"):
    """Our prior for a spec (on the meta device by default: shapes without memory)."""
    from jukebox_pl.prior.model import JukeboxPrior

    v = spec.vqvae
    levels, idx = v["levels"], level_index(spec.level, v["levels"])
    hops = hop_lengths(v["downs_t"], v["strides_t"])
    upper = None if idx == levels - 1 else (v["downs_t"][idx + 1], v["strides_t"][idx + 1])
    y_bins = spec.prior.get("y_bins")
    with torch.device(device):
        return JukeboxPrior(spec.prior, idx, levels, v["l_bins"], hops[idx], spec.sample_rate, upper, y_bins)


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


# -- writing the run -------------------------------------------------------------------------------------------
def stage_config(spec: ModelSpec) -> Any:
    """A full run config for one imported stage (what `train prior --init` and fine-tuning start from)."""
    cfg = OmegaConf.structured(RunConfig)
    cfg.preset = "imported"
    cfg.data.sample_rate = spec.sample_rate
    cfg.vqvae = vqvae_config(spec.vqvae)
    if spec.prior is not None:
        cfg.prior[spec.level] = prior_config(spec.prior)
    return cfg


def write_vqvae(run: Path, levels: dict[int, dict], spec: ModelSpec, source: str) -> list[Path]:
    written = []
    n = spec.vqvae["levels"]
    hops = hop_lengths(spec.vqvae["downs_t"], spec.vqvae["strides_t"])
    vcfg = OmegaConf.to_container(vqvae_config(spec.vqvae), resolve=True)
    for level, state in levels.items():
        name = level_name(level, n)
        export = {
            "format": EXPORT_FORMAT,
            "kind": "vqvae-level",
            "hparams": {"vqvae": vcfg, "level": level, "sample_rate": spec.sample_rate, "config": None},
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "meta": {"kind": "vqvae-level", "level": level, "level_name": name, "sample_rate": spec.sample_rate,
                     "hop_length": hops[level], "imported_from": source, "hps": spec.source},
        }  # fmt: skip
        written.append(atomic_torch_save(export, run / f"vqvae_{name}" / "export.pt"))
        save_config(stage_config(spec), run / f"vqvae_{name}" / "config.yaml")
    return written


def write_prior(run: Path, state: dict, spec: ModelSpec, source: str, vocab, fingerprint: dict | None = None) -> Path:
    v = spec.vqvae
    idx = level_index(spec.level, v["levels"])
    hp = {
        "prior": OmegaConf.to_container(prior_config(spec.prior), resolve=True),
        "level": idx,
        "vqvae_cfg": OmegaConf.to_container(vqvae_config(v), resolve=True),
        "sample_rate": spec.sample_rate,
        "y_bins": spec.prior.get("y_bins"),
        "vqvae_checkpoints": None,
        "config": None,
        "vocab": vocab.to_dict() if vocab is not None else None,
    }
    export = {
        "format": EXPORT_FORMAT,
        "kind": "prior",
        "hparams": hp,
        "state_dict": {f"model.{k}": t for k, t in state.items()},
        "meta": {"kind": "prior", "level": idx, "level_name": spec.level, "levels": v["levels"],
                 "sample_rate": spec.sample_rate, "n_ctx": spec.prior["n_ctx"], "imported_from": source,
                 "hps": spec.source, "vqvae_fingerprint": fingerprint},
    }  # fmt: skip
    path = atomic_torch_save(export, run / f"prior_{spec.level}" / "export.pt")
    save_config(stage_config(spec), run / f"prior_{spec.level}" / "config.yaml")
    return path


def imported_fingerprint(run: Path, spec: ModelSpec, codebooks: dict[int, dict]) -> dict | None:
    """The fingerprint of the VQ-VAE levels an imported prior reads: from the VQ-VAE imported with it, else from
    the one already in the run folder; None (sampling then warns) when the run has none yet."""
    n = spec.vqvae["levels"]
    idx = level_index(spec.level, n)
    needed = [i for i in (idx, idx + 1) if i < n]
    if not all(i in codebooks for i in needed):
        if not all((run / f"vqvae_{level_name(i, n)}" / "export.pt").is_file() for i in needed):
            return None
        from jukebox_pl.vqvae.container import VQVAE

        vqvae = VQVAE.from_checkpoints([run / f"vqvae_{level_name(i, n)}" / "export.pt" for i in needed])
        return codes_fingerprint(vqvae, idx)
    return {level_name(i, n): codebooks[i] for i in needed}


@dataclass
class ImportItem:
    """One file to import: `kind` "vqvae" or "prior", its `--hps` (None: the file's own), a prior's level."""

    kind: str
    path: str
    hps: str | None = None
    level: str | None = None


@dataclass
class ImportReport:
    run: Path
    written: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def resolve_spec(item: ImportItem, file_hps: dict | None) -> ModelSpec:
    if item.hps is None and file_hps is None:
        raise UserValueError(
            f"{item.path} carries no hparams: say which set it is with --hps NAME (vqvae, 5b, 5b_lyrics, "
            "1b_lyrics, upsampler_level_0, upsampler_level_1) or --hps FILE.json"
        )
    hps = read_hps(item.hps) if item.hps is not None else file_hps
    spec = spec_from_hps(hps, item.kind, item.path)
    if item.level is not None and spec.kind == "prior" and item.level != spec.level:
        raise UserValueError(f"--level {item.level} for {item.path}, but its hparams ({spec.source}) make it the "
                             f"{spec.level} prior")  # fmt: skip
    return spec


def import_openai(
    out: str | Path, items: list[ImportItem], ids: str | Path | None = None, trust_pickle: bool = False,
    overwrite: bool = False,
) -> ImportReport:  # fmt: skip
    """Convert every item into the run folder `out` (see the module docstring)."""
    run = Path(out)
    if not items:
        raise UserValueError("nothing to import: give --vqvae FILE and/or --prior FILE")
    taken = [p for p in run.glob("*/export.pt")] if run.is_dir() else []
    if taken and not overwrite:
        raise RefusedError(f"{run} already holds imported or trained models ({taken[0]}); choose another --out")
    report = ImportReport(run)
    levels_seen: dict[str, str] = {}
    tables: dict[str, Any] = {}  # label version -> the reference's id tables, read once
    top_vocab = (-1, None)  # (level index, vocabulary) of the highest prior: the run's vocab.json
    codebooks: dict[int, dict] = {}  # level -> its fingerprint entry, from the VQ-VAE imported here
    # the VQ-VAE first, so that every prior records the codebooks it is paired with (`vqvae.fingerprint`)
    for item in sorted(items, key=lambda i: i.kind != "vqvae"):
        state, file_hps = read_reference_file(item.path, trust_pickle)
        spec = resolve_spec(item, file_hps)
        if spec.kind == "vqvae":
            converted = convert_vqvae(state, spec, item.path)
            hops = hop_lengths(spec.vqvae["downs_t"], spec.vqvae["strides_t"])
            codebooks.update({lv: level_print(st, hops[lv]) for lv, st in converted.items()})
            report.written += write_vqvae(run, converted, spec, str(item.path))
            report.lines.append(f"{item.path}: VQ-VAE ({spec.source}), {len(state)} keys -> {len(converted)} levels")
            continue
        if spec.level in levels_seen:
            raise UserValueError(f"two priors for the {spec.level} level: {levels_seen[spec.level]} and {item.path}")
        levels_seen[spec.level] = item.path
        vocab = None
        if ids is not None and spec.prior.get("labels"):
            from jukebox_pl.interop.ids import read_reference_ids

            version = "v3" if spec.prior.get("lyrics_vocab") == "v3" else "v2"  # the 1B model's labels are v3
            if version not in tables:
                tables[version] = read_reference_ids(ids, version)
            vocab = tables[version]
            idx = level_index(spec.level, spec.vqvae["levels"])
            top_vocab = max(top_vocab, (idx, vocab), key=lambda pair: pair[0])
        mapped = convert_prior(state, spec, item.path)
        fingerprint = imported_fingerprint(run, spec, codebooks)
        report.written.append(write_prior(run, mapped, spec, str(item.path), vocab, fingerprint))
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in mapped.values()})
        report.lines.append(
            f"{item.path}: {spec.level} prior ({spec.source}), {len(state)} keys placed, weights {'/'.join(dtypes)}"
            + (f", {len(vocab.artists)} artist and {len(vocab.genres)} genre names" if vocab is not None else "")
        )
    if top_vocab[1] is not None:  # the names `sample --artist` is checked against: the top prior's
        top_vocab[1].save(run / "vocab.json")
    record = {"items": [vars(i) for i in items], "ids": str(ids) if ids else None,
              "written": [str(p.relative_to(run)) for p in report.written]}  # fmt: skip
    (run / "import.json").write_text(json.dumps(record, indent=2) + "\n")
    return report
