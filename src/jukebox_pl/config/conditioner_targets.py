"""Which extra-conditioner classes this process may import: those the user of this invocation named (on the
command line, with `--allow-conditioner`, or in Python with `allow_conditioners`), never those a file names.

A checkpoint's hyper-parameters or a saved config can name `prior.<level>.conditioners.<name>.target:
some.module.Class`; importing it would run that module. Files are checked here before any model is built
from them (`check_file_conditioners`), and `jukebox_pl.prior.conditioning.resolve_target` checks again before
it imports.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

from jukebox_pl.errors import UnsafeFileError

# Targets this process may import (`allow_conditioners`): named by the user of this invocation, never by a file.
_ALLOWED: set[str] = set()


def _normal(target: str) -> str:
    return str(target).replace(":", ".")


def allow_conditioners(*targets: str) -> None:
    """Allow these conditioner targets (`package.module.ClassName`) to be imported in this process: what
    `--allow-conditioner` and command-line `prior.<level>.conditioners=...` overrides call. Use it in library
    code before loading a checkpoint or config that names your own conditioner."""
    _ALLOWED.update(_normal(t) for t in targets if t)


def conditioner_allowed(target: str) -> bool:
    """True when resolving `target` imports nothing the user did not allow: it was allowed, its module is
    already imported, or it is jukebox_pl's own."""
    module = _normal(target).rpartition(".")[0]
    return _normal(target) in _ALLOWED or module in sys.modules or module.split(".")[0] == "jukebox_pl"


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
