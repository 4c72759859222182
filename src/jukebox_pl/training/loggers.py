"""The loggers and callbacks of `trainer.logger` / `trainer.callbacks`, built for one stage folder.

The config names classes (`jukebox_pl.config.class_specs`, checked when it was loaded); here they become objects:
relative folders (`save_dir`, `dirpath`) lie inside the stage folder, and a logger's `save_dir` defaults to it, so
every run keeps its logs beside its checkpoints. `trainer.logger: true` is TensorBoard in `RUN/<stage>/logs`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from jukebox_pl.config.class_specs import (
    CALLBACK,
    LOGGER,
    PATH_ARGS,
    ClassSpec,
    ClassSpecError,
    Kind,
    check_init_args,
    load_class,
    refusal,
    specs,
)
from jukebox_pl.config.conditioner_targets import class_allowed
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.errors import UnsafeFileError


def default_logger(stage_dir: str | Path) -> TensorBoardLogger:
    """TensorBoard in `<stage_dir>/logs` (no version folders: a resumed run appends to the same event files' folder)."""
    return TensorBoardLogger(save_dir=str(stage_dir), name="logs", version="")


def build_loggers(value: Any, stage_dir: str | Path) -> list[Logger] | bool:
    """`trainer.logger` as the Trainer's `logger` argument: False, or the list of loggers (true/null: TensorBoard)."""
    if value is False:
        return False
    if value is None or value is True:
        return [default_logger(stage_dir)]
    return [build(spec, LOGGER, stage_dir) for spec in specs(LOGGER, value)]


def build_callbacks(value: Any, stage_dir: str | Path) -> list[Callback]:
    """`trainer.callbacks` as Callback objects, in the order the config lists them."""
    return [build(spec, CALLBACK, stage_dir) for spec in specs(CALLBACK, value)]


def resolved_args(cls: type, spec: ClassSpec, stage_dir: str | Path) -> dict[str, Any]:
    """`spec.init_args` with relative folders inside `stage_dir`, and `save_dir` set to it when the class takes one
    and the config gives none."""
    args = dict(spec.init_args)
    try:
        takes = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes = {}
    if PATH_ARGS[0] in takes and args.get(PATH_ARGS[0]) is None:
        args[PATH_ARGS[0]] = str(stage_dir)
    for name in PATH_ARGS:
        value = args.get(name)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            args[name] = str(Path(stage_dir) / value)
    return args


def build(spec: ClassSpec, kind: Kind, stage_dir: str | Path) -> Any:
    """One logger or callback. The allow-list is asked again (a config built in Python never went through the
    loader); a class that refuses its arguments is one line naming the key and the class."""
    if not class_allowed(spec.class_path, kind.trusted):
        raise UnsafeFileError(refusal(spec, kind, "the config"))
    try:
        cls = load_class(spec, kind)
        check_init_args(cls, spec)
    except ClassSpecError as err:
        raise ConfigError(str(err)) from None
    try:
        return cls(**resolved_args(cls, spec, stage_dir))
    except (TypeError, ValueError, ImportError, ModuleNotFoundError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"{kind.noun} {spec.class_path} (config key {spec.key}) cannot be built: {detail}") from None
