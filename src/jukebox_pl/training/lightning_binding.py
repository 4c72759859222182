"""Which Lightning package a class is bound to, and the one-line refusal when a Trainer of the other one is given.

`pytorch_lightning` and the unified `lightning` package each accept only their own classes; handed the other's,
Lightning fails deep inside with "Expected a parent". Our classes are bound to both (`jukebox_pl.VQVAELevel` ...
for `pytorch_lightning`, `jukebox_pl.unified_lightning.VQVAELevel` ... for `lightning`), so the refusal names the
class to import instead. Nothing here imports either package.
"""

from __future__ import annotations

from jukebox_pl.errors import RefusedError

PACKAGES = {"pytorch_lightning": "pytorch_lightning", "lightning.pytorch": "lightning"}
"""Module prefix of a Lightning class -> the package a user imports."""

BOUND = ("VQVAELevel", "HierarchicalVQVAEModule", "PriorModule", "AudioDataModule", "CodeDataModule")
"""Our classes bound to both packages (`jukebox_pl.X` and `jukebox_pl.unified_lightning.X`)."""


def lightning_package(cls: type) -> str | None:
    """'pytorch_lightning' or 'lightning' for the first Lightning class in `cls`'s bases, None for neither."""
    for base in cls.__mro__:
        for prefix, package in PACKAGES.items():
            if base.__module__ == prefix or base.__module__.startswith(prefix + "."):
                return package
    return None


def binding_for(cls: type, package: str) -> str:
    """The import path of our class behind `cls` bound to `package` (or what to subclass, for a user subclass)."""
    ours = next(
        (b.__name__ for b in cls.__mro__ if b.__module__.startswith("jukebox_pl.") and b.__name__ in BOUND), None
    )
    if ours is None:
        return f"a {package} class"
    path = f"jukebox_pl.unified_lightning.{ours}" if package == "lightning" else f"jukebox_pl.{ours}"
    return path if ours == cls.__name__ else f"a subclass of {path}"


def check_same_package(obj: object, trainer: object) -> None:
    """RefusedError (one line) when `obj` (our module or datamodule) and `trainer` come from different packages."""
    ours, theirs = lightning_package(type(obj)), lightning_package(type(trainer))
    if ours is None or theirs is None or ours == theirs:
        return
    name = type(obj).__name__
    raise RefusedError(
        f"{name} is a {ours} class; with a {theirs}.Trainer use {binding_for(type(obj), theirs)} "
        f"(the same class bound to {theirs})"
    )
