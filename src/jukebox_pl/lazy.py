"""Lazy package exports: `import jukebox_pl` costs nothing; each exported name imports its module on first use."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package` for `exports` (name -> defining module)."""
    module = sys.modules[package]

    def __getattr__(name: str) -> object:
        if name in exports:
            value = getattr(import_module(exports[name]), name)
            setattr(module, name, value)  # cached: later lookups are plain attribute reads
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__
