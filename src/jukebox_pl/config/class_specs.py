"""Loggers and callbacks named in a config, as LightningCLI spells them: `{class_path: ..., init_args: {...}}`.

`trainer.logger` is `true` (the default: TensorBoard in `RUN/<stage>/logs`), `false` (no logging), one entry or a
list of entries (several loggers at once); `trainer.callbacks` is one entry or a list. An entry is a mapping with
`class_path` and optional `init_args`, or just the class path as a string. Lightning's own loggers may be named
short (`csv`, `tensorboard`, `wandb`, `mlflow`, or the bare class name `CSVLogger`), its callbacks by bare class
name (`LearningRateMonitor`).

A class path is code to import, so it follows the rule of every class a file names
(`jukebox_pl.config.conditioner_targets`): Lightning's own logger and callback modules and
`jukebox_pl.training.callbacks` are trusted; any other class is imported only when typed on this invocation's
command line or allowed (`--allow-class`, `allow_classes`). Everything is checked when the config is loaded, before
a run folder is written: the shape (`shape_problem`, from `config.checks`), the trust, that the class imports and
is a Lightning Logger / Callback, and that its `init_args` are arguments of that class. `training.loggers` builds
the objects.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from jukebox_pl.config.conditioner_targets import allow_classes, class_allowed


@dataclass(frozen=True)
class Kind:
    """What a config key holds: its base class (module, name) and the modules trusted without asking."""

    key: str
    noun: str
    base_module: str
    base_name: str
    trusted: tuple[str, ...]
    short: Mapping[str, str] = field(default_factory=dict)


LOGGER = Kind(
    "trainer.logger",
    "logger",
    "pytorch_lightning.loggers",
    "Logger",
    ("pytorch_lightning.loggers", "lightning.pytorch.loggers"),
    {"csv": "CSVLogger", "tensorboard": "TensorBoardLogger", "wandb": "WandbLogger", "mlflow": "MLFlowLogger"},
)
CALLBACK = Kind(
    "trainer.callbacks",
    "callback",
    "pytorch_lightning.callbacks",
    "Callback",
    ("pytorch_lightning.callbacks", "lightning.pytorch.callbacks", "jukebox_pl.training.callbacks"),
)
KINDS = {LOGGER.key: LOGGER, CALLBACK.key: CALLBACK}

# Lightning's loggers for services import their client only when built: say which package to install first.
NEEDS = {"WandbLogger": "wandb", "MLFlowLogger": "mlflow", "CometLogger": "comet_ml", "NeptuneLogger": "neptune"}
PIP_NAMES = {"comet_ml": "comet-ml"}
# init args holding a folder: a relative one lies inside the stage folder, and `save_dir` defaults to it.
PATH_ARGS = ("save_dir", "dirpath")
ENTRY_KEYS = ("class_path", "init_args")
ENTRY_WORDS = "{class_path: package.module.Class, init_args: {...}} or a class path"


class ClassSpecError(ValueError):
    """A class spec that cannot be used: `key` is the dotted config key, the message says why in one line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ClassSpec:
    """One entry: its dotted key (`trainer.logger.1`), the full class path, the init args (plain data)."""

    key: str
    class_path: str
    init_args: dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _entry_problem(entry: Any) -> tuple[str, Any, str] | None:
    """(sub-key, value, what is allowed) for an entry of the wrong shape, else None."""
    if isinstance(entry, str):
        return None if entry.strip() else ("", entry, f"a non-empty class path or {ENTRY_WORDS}")
    if not isinstance(entry, Mapping):
        return "", entry, ENTRY_WORDS
    for key in entry:
        if key not in ENTRY_KEYS:
            return str(key), entry[key], "absent: an entry holds only class_path and init_args"
    if not isinstance(entry.get("class_path"), str) or not entry["class_path"].strip():
        return "class_path", entry.get("class_path"), "a class path such as pytorch_lightning.loggers.CSVLogger"
    args = entry.get("init_args")
    if args is not None and not (isinstance(args, Mapping) and all(isinstance(k, str) for k in args)):
        return "init_args", args, "a mapping of argument names to values"
    return None


def _entries(kind: Kind, value: Any) -> list[tuple[str, Any]]:
    """(dotted key, entry) of every entry a key holds (none for true / false / null)."""
    value = _plain(value)
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, list | tuple):
        return [(f"{kind.key}.{i}", entry) for i, entry in enumerate(value)]
    return [(kind.key, value)]


def shape_problem(kind: Kind, value: Any) -> tuple[str, Any, str] | None:
    """(dotted key, value, what is allowed) when `value` is no valid `trainer.logger` / `trainer.callbacks`."""
    value = _plain(value)
    if isinstance(value, bool) and kind is CALLBACK:
        return kind.key, value, f"null, {ENTRY_WORDS}, or a list of them"
    if not isinstance(value, list | tuple | bool | Mapping | str | type(None)):
        head = "true (TensorBoard), false (none), " if kind is LOGGER else "null, "
        return kind.key, value, f"{head}{ENTRY_WORDS}, or a list of them"
    for key, entry in _entries(kind, value):
        found = _entry_problem(entry)
        if found is not None:
            sub, bad, allowed = found
            return (f"{key}.{sub}" if sub else key), bad, allowed
    return None


def full_path(kind: Kind, path: str) -> str:
    """A class path with short names expanded (`csv`, `CSVLogger` -> `pytorch_lightning.loggers.CSVLogger`) and
    Lightning's unified-package spelling (`lightning.pytorch.loggers.X`) turned into the `pytorch_lightning` class
    that jukebox-pl's Trainer takes."""
    path = path.strip().replace(":", ".")
    path = kind.short.get(path.lower(), path)
    if "." not in path:
        return f"{kind.base_module}.{path}"
    for trusted in kind.trusted:
        if trusted.startswith("lightning.pytorch.") and (path.startswith(trusted + ".")):
            return "pytorch_lightning." + path.removeprefix("lightning.pytorch.")
    return path


def specs(kind: Kind, value: Any) -> list[ClassSpec]:
    """The entries of a checked `trainer.logger` / `trainer.callbacks` value, with full class paths."""
    out = []
    for key, entry in _entries(kind, value):
        if isinstance(entry, str):
            entry = {"class_path": entry}
        out.append(ClassSpec(key, full_path(kind, entry["class_path"]), dict(entry.get("init_args") or {})))
    return out


def allow_typed(tree: Mapping) -> None:
    """Allow the classes that `trainer.logger` / `trainer.callbacks` name in a config typed on this invocation's
    command line (a plain tree)."""
    section = tree.get("trainer") if isinstance(tree, Mapping) else None
    if not isinstance(section, Mapping):
        return
    for kind in KINDS.values():
        leaf = kind.key.split(".")[1]
        if leaf in section and shape_problem(kind, section[leaf]) is None:
            allow_classes(*(spec.class_path for spec in specs(kind, section[leaf])))


def refusal(spec: ClassSpec, kind: Kind, source: str) -> str:
    """The one-line message for a class a file names but this invocation did not allow."""
    return (
        f"{kind.noun} class {spec.class_path!r} (config key {spec.key}, from {source}) is refused: a file may name "
        f"only Lightning's own {kind.noun}s ({', '.join(m + '.*' for m in kind.trusted)}); if you trust it, pass "
        f"--allow-class {spec.class_path} or set {kind.key} on the command line"
    )


def _kind_base(kind: Kind) -> type:
    return getattr(importlib.import_module(kind.base_module), kind.base_name)


def load_class(spec: ClassSpec, kind: Kind, source: str | None = None) -> type:
    """Import the class of an allowed spec and check it is a Lightning Logger / Callback; ClassSpecError (one line
    naming the key, the class path and the `source` that set it) when it is not installed, absent or of the wrong
    kind."""
    module_name, _, name = spec.class_path.rpartition(".")
    where = f"{kind.noun} class {spec.class_path!r} (config key {spec.key}{f', from {source}' if source else ''})"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = getattr(err, "name", None) or module_name
        raise ClassSpecError(
            spec.key, f"{where} cannot be imported: no module named {missing!r}; install it or fix the class path"
        ) from None
    base = _kind_base(kind)
    cls = getattr(module, name, None)
    if cls is None:
        known = [n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, base) and c is not base]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ClassSpecError(spec.key, f"{where} does not exist: {module_name} has no {name!r}{hint}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        unified = isinstance(cls, type) and any(c.__module__.startswith("lightning.") for c in cls.__mro__)
        why = (
            f"it is a `lightning.pytorch` class, and jukebox-pl trains with pytorch_lightning.Trainer: subclass "
            f"{kind.base_module}.{kind.base_name}"
            if unified
            else f"it is not a subclass of {kind.base_module}.{kind.base_name}"
        )
        raise ClassSpecError(spec.key, f"{where} is not a Lightning {kind.noun}: {why}")
    needed = NEEDS.get(name) if module_name == "pytorch_lightning.loggers" else None
    if needed and importlib.util.find_spec(needed) is None:
        pip = PIP_NAMES.get(needed, needed)
        raise ClassSpecError(spec.key, f"{where} needs the {needed} package, which is not installed: pip install {pip}")
    return cls


def check_init_args(cls: type, spec: ClassSpec, source: str | None = None) -> None:
    """Every init arg is an argument of the class, and every argument without a default is given (`save_dir`
    defaults to the stage folder): ClassSpecError naming the first that is not."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a class without an inspectable signature: Lightning checks when it is built
        return
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    src = f" (from {source})" if source else ""
    for arg in spec.init_args:
        if arg not in named and not takes_any:
            close = difflib.get_close_matches(arg, named, n=2)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ClassSpecError(
                f"{spec.key}.init_args.{arg}",
                f"config key {spec.key}.init_args.{arg}{src} is not an argument of {spec.class_path}; {hint}"
                f"its arguments: {', '.join(named) or '(none)'}",
            )
    for arg, param in named.items():
        if param.default is param.empty and arg not in spec.init_args and arg not in PATH_ARGS[:1]:
            raise ClassSpecError(
                f"{spec.key}.init_args", f"{spec.class_path} (config key {spec.key}{src}) needs init_args.{arg}"
            )


def check_class_choices(tree: Mapping, origin: Any) -> None:
    """Refuse (ClassSpecError, one line) a logger or callback of a config that this invocation did not allow,
    that does not import, is of the wrong kind or gets an argument it does not take. `origin(key)` names the file
    that set a key. Nothing is imported before the class is known to be allowed."""
    section = tree.get("trainer") or {}
    for kind in KINDS.values():
        for spec in specs(kind, section.get(kind.key.split(".")[1])):
            source = origin(f"{spec.key}.class_path") or origin(spec.key) or "a config file"
            if not class_allowed(spec.class_path, kind.trusted):
                raise ClassSpecError(spec.key, refusal(spec, kind, source))
            check_init_args(load_class(spec, kind, source), spec, source)


# -- merging: a class spec set by a later source replaces the earlier one whole ------------------------------


def take_replaced(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any]]:
    """`cfg` without `trainer.logger` / `trainer.callbacks`, and their values: the loader sets those after the
    merge, so a later source replaces an entry whole (OmegaConf would merge one entry's init_args into another's,
    and refuses a list over a mapping)."""
    trainer = cfg.get("trainer") if isinstance(cfg, DictConfig) else None
    leaves = [key.split(".")[1] for key in KINDS]
    if not isinstance(trainer, DictConfig) or not any(leaf in trainer for leaf in leaves):
        return cfg, {}
    tree = OmegaConf.to_container(trainer, resolve=False)
    taken = {f"trainer.{leaf}": tree[leaf] for leaf in leaves if leaf in tree}
    cfg = copy.deepcopy(cfg)  # the source itself stays whole: messages name the file that set a key
    for leaf in leaves:
        if leaf in cfg.trainer:
            del cfg.trainer[leaf]
    return cfg, taken
