"""Which classes named by dotted path this process may import: those the user of this invocation named (on the
command line, with `--allow-class` / `--allow-conditioner`, or in Python with `allow_classes`), never those a file
names.

One allow-list serves every class a config names by path: extra conditioners
(`prior.<level>.conditioners.<name>.target`) and the loggers and callbacks of `trainer.logger` /
`trainer.callbacks` (`jukebox_pl.config.class_specs`). A checkpoint's hyper-parameters or a saved config can name
`some.module.Class`; importing it would run that module. Files are checked here before any model is built from
them (`check_file_conditioners`), and `jukebox_pl.prior.conditioning.resolve_target` checks again before it
imports.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

from jukebox_pl.errors import UnsafeFileError

# Class paths this process may import (`allow_classes`): named by the user of this invocation, never by a file.
_ALLOWED: set[str] = set()


def _normal(target: str) -> str:
    return str(target).replace(":", ".")


def allow_classes(*targets: str) -> None:
    """Allow these classes (`package.module.ClassName`) to be imported in this process when a config or checkpoint
    names them: what `--allow-class` (`--allow-conditioner`) and command-line overrides naming a class call. Use it
    in library code before loading a checkpoint or config that names your own conditioner, logger or callback."""
    _ALLOWED.update(_normal(t) for t in targets if t)


def allow_conditioners(*targets: str) -> None:
    """Allow these conditioner targets (`package.module.ClassName`): `allow_classes` under the name that
    `--allow-conditioner` and `jukebox_pl.prior.conditioning` have always used."""
    allow_classes(*targets)


def class_allowed(target: str, trusted_modules: Iterable[str] = ()) -> bool:
    """True when this invocation allowed `target`, or its module is one of `trusted_modules` (or inside one)."""
    target = _normal(target)
    module = target.rpartition(".")[0]
    return target in _ALLOWED or any(module == m or module.startswith(m + ".") for m in trusted_modules)


def conditioner_allowed(target: str) -> bool:
    """True when resolving `target` imports nothing the user did not allow: it was allowed, its module is
    already imported, or it is jukebox_pl's own."""
    module = _normal(target).rpartition(".")[0]
    return class_allowed(target) or module in sys.modules or module.split(".")[0] == "jukebox_pl"


def refusal(target: str, key: str, source: str) -> str:
    """The one-line message for a target a file names but this invocation did not allow."""
    return (
        f"conditioner target {target!r} (config key {key}, from {source}) is refused: a file may not choose code "
        f"to import; if you trust it, pass --allow-conditioner {_normal(target)} (in Python: "
        f"jukebox_pl.prior.conditioning.allow_conditioners({_normal(target)!r})) or set it on the command line"
    )


def named_targets(tree: object, path: str = "") -> Iterable[tuple[str, str]]:
    """(dotted key, target) of every `conditioners: {name: {target: ...}}` entry in a plain tree (a config, a
    checkpoint's hyper-parameters); tensors and other leaves are not entered."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "conditioners" and isinstance(value, Mapping):
                for name, spec in value.items():
                    if isinstance(spec, Mapping) and isinstance(spec.get("target"), str):
                        yield f"{here}.{name}.target", spec["target"]
            elif isinstance(value, Mapping | list | tuple):
                yield from named_targets(value, here)
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            if isinstance(value, Mapping | list | tuple):
                yield from named_targets(value, f"{path}.{i}" if path else str(i))


def check_file_conditioners(tree: object, source: str) -> None:
    """Refuse a file (checkpoint, export, config) naming a conditioner this invocation did not allow, before
    anything builds a model from it: UnsafeFileError naming the key, the target and the file."""
    for key, target in named_targets(tree):
        if not conditioner_allowed(target):
            raise UnsafeFileError(refusal(target, key, source))
