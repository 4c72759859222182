"""Lightning's own `LightningCLI` over our LightningModules and DataModules, for users who drive training the
Lightning way (a YAML of `trainer:`, `model: class_path/init_args`, `data: class_path/init_args`):

    python -m jukebox_pl.lightning_cli fit --config run.yaml
    python -m jukebox_pl.lightning_cli --lightning-package lightning fit --config run.yaml

`--lightning-package` (first, before the subcommand) picks the Trainer: `pytorch_lightning` (the default, with
`jukebox_pl.VQVAELevel` ...) or the unified `lightning` (with `jukebox_pl.unified_lightning.VQVAELevel` ...;
short names such as `class_path: VQVAELevel` work with either). Everything after it is LightningCLI's own
(`fit`, `validate`, `--print_config`, `--trainer.max_steps=...`).

`model` is one of VQVAELevel, HierarchicalVQVAEModule or PriorModule and `data` one of AudioDataModule or
CodeDataModule: any other `class_path` is refused before anything is imported, and a class of the other package
is refused naming the one to use. Sections (`vqvae:`, `prior:`, `cfg:` for data) go through the same checks as
everywhere else (one line naming the key). Shard URLs that run a program or fetch (`allow_urls`) and a
VQ-VAE object (`vqvae`) cannot come from here: use local shards, and give a prior `vqvae_checkpoints` or code
shards. Like any LightningCLI config, `trainer.callbacks` / `trainer.logger` name classes that get imported:
run only YAML files you wrote or trust as you would a script. Mistakes print one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jukebox_pl.config.loader import read_config_file
from jukebox_pl.errors import JukeboxError, RefusedError, UnsafeFileError, UserValueError

PACKAGES = ("pytorch_lightning", "lightning")
SECTIONS = {
    "model": ("VQVAELevel", "HierarchicalVQVAEModule", "PriorModule"),
    "data": ("AudioDataModule", "CodeDataModule"),
}
DEFINED_IN = {  # where each pytorch_lightning-bound class is defined (the unified ones: jukebox_pl.unified_lightning)
    "VQVAELevel": "jukebox_pl.vqvae.lightning",
    "HierarchicalVQVAEModule": "jukebox_pl.vqvae.lightning",
    "PriorModule": "jukebox_pl.prior.lightning",
    "AudioDataModule": "jukebox_pl.data.datamodule",
    "CodeDataModule": "jukebox_pl.data.code_datamodule",
}
NOT_FROM_CONFIG = {  # (section, init argument) -> why it cannot be set here; for the model only a prior's
    ("data", "allow_urls"): "shard URLs that run a program or fetch are opened only from `jukebox-pl train` command "
    "lines; use local shard paths here",
    ("model", "vqvae"): "a prior here reads its frozen VQ-VAE from `vqvae_checkpoints: [PATH, ...]` or trains on "
    "code shards (CodeDataModule)",
}


def class_paths(package: str, name: str) -> set[str]:
    """Every spelling of our class `name` bound to `package`."""
    if package == "lightning":
        return {name, f"jukebox_pl.unified_lightning.{name}"}
    return {name, f"jukebox_pl.{name}", f"{DEFINED_IN[name]}.{name}"}


def check_class_path(section: str, value: str, package: str) -> None:
    """RefusedError unless `value` names one of our `section` classes bound to `package`."""
    allowed = SECTIONS[section]
    if any(value in class_paths(package, name) for name in allowed):
        return
    other = PACKAGES[1 - PACKAGES.index(package)]
    for name in allowed:
        if value in class_paths(other, name) and value != name:
            flag = "" if package == "lightning" else " --lightning-package lightning"
            raise RefusedError(
                f"{section}.class_path {value} is a {other} class; with a {package}.Trainer use "
                f"{sorted(class_paths(package, name) - {name})[0]} (or the short name {name}), or run "
                f"`python -m jukebox_pl.lightning_cli{flag} ...` for {other}"
            )
    raise RefusedError(
        f"{section}.class_path {value!r} is refused: jukebox_pl.lightning_cli trains {', '.join(allowed)} "
        "(a config never chooses other code to import)"
    )


def _flag_values(args: Sequence[str], flag: str) -> Iterator[str]:
    """Values of `--flag X` and `--flag=X` in an argument list."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            yield args[i + 1]
        elif arg.startswith(flag + "="):
            yield arg[len(flag) + 1 :]


def _is_file(value: str) -> bool:
    return value.endswith((".yaml", ".yml", ".json")) or Path(value).is_file()


def _sections_of(config: Any) -> Iterator[tuple[str, Any]]:
    """(section, value) for the model/data entries of a config file, at its top or under a subcommand."""
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        if key in SECTIONS:
            yield key, value
        elif key in ("fit", "validate", "test", "predict"):
            yield from _sections_of(value)


def _read(path: str) -> Any:
    node = read_config_file(path)  # one line for a missing, oversized or tagged (`!!python/...`) file
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node


def check_arguments(args: Sequence[str], package: str) -> None:
    """Before LightningCLI imports anything: every model/data class named in the config files or flags is ours
    and bound to `package`, and no init argument that must not come from a file is set there."""
    named: list[tuple[str, Any]] = []
    for flag in ("--config", "-c"):
        for path in _flag_values(args, flag):
            named += list(_sections_of(_read(path)))
    for section in SECTIONS:
        for value in _flag_values(args, f"--{section}"):
            named.append((section, _read(value) if _is_file(value) else {"class_path": value}))
        for value in _flag_values(args, f"--{section}.class_path"):
            named.append((section, {"class_path": value}))
    priors = False
    for section, value in named:
        if isinstance(value, str):
            value = {"class_path": value}
        if not isinstance(value, dict):
            continue
        path = str(value.get("class_path") or "")
        if path:
            check_class_path(section, path, package)
            priors |= path.rsplit(".", 1)[-1] == "PriorModule"
        init_args = value.get("init_args") or {}
        for (where, key), why in NOT_FROM_CONFIG.items():
            applies = where == section and (section == "data" or path.endswith("PriorModule"))
            if applies and isinstance(init_args, dict) and init_args.get(key) not in (None, [], ()):
                raise UnsafeFileError(f"{section}.init_args.{key} cannot be set for jukebox_pl.lightning_cli: {why}")
    for (section, key), why in NOT_FROM_CONFIG.items():
        if section == "model" and not priors:
            continue
        for flag in (f"--{section}.{key}", f"--{section}.init_args.{key}"):
            if any(True for _ in _flag_values(args, flag)):
                raise UnsafeFileError(f"{flag} cannot be set for jukebox_pl.lightning_cli: {why}")


def _bases(package: str) -> tuple[type, type, Any]:
    """(LightningModule, LightningDataModule, LightningCLI) of `package`, with our classes bound to it imported
    so that short names (`class_path: VQVAELevel`) resolve."""
    if package == "lightning":
        importlib.import_module("jukebox_pl.unified_lightning")
        import lightning.pytorch as lp
        from lightning.pytorch.cli import LightningCLI
    else:
        for module in set(DEFINED_IN.values()):
            importlib.import_module(module)
        import pytorch_lightning as lp
        from pytorch_lightning.cli import LightningCLI
    return lp.LightningModule, lp.LightningDataModule, LightningCLI


def split_package(argv: Sequence[str]) -> tuple[str, list[str]]:
    """`--lightning-package NAME` (first) -> (NAME, the rest for LightningCLI); pytorch_lightning by default."""
    args = list(argv)
    package = "pytorch_lightning"
    if args and args[0].startswith("--lightning-package"):
        if "=" in args[0]:
            package, args = args[0].split("=", 1)[1], args[1:]
        elif len(args) > 1:
            package, args = args[1], args[2:]
        else:
            raise UserValueError(f"--lightning-package needs a value: one of {', '.join(PACKAGES)}")
    if package not in PACKAGES:
        raise UserValueError(f"--lightning-package {package!r} is not one of {', '.join(PACKAGES)}")
    return package, args


def _one_line(err: BaseException) -> str:
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


def run(argv: Sequence[str], **cli_kwargs: Any):
    """LightningCLI over our classes (raises our errors and jsonargparse's ArgumentError); returns the CLI."""
    package, args = split_package(argv)
    check_arguments(args, package)
    module_base, data_base, lightning_cli = _bases(package)
    quiet = {"exit_on_error": False}
    kwargs: dict[str, Any] = {"parser_kwargs": {**quiet, **{cmd: dict(quiet) for cmd in lightning_cli.subcommands()}}}
    kwargs.update(cli_kwargs)
    program, sys.argv = sys.argv, sys.argv[:1]  # the arguments are `args` (LightningCLI warns when sys.argv has more)
    try:
        return lightning_cli(
            module_base, data_base, subclass_mode_model=True, subclass_mode_data=True, args=args, **kwargs
        )
    finally:
        sys.argv = program


def main(argv: Sequence[str] | None = None) -> int:
    """The command: 0 when LightningCLI finished, 2 (one line on stderr) for a mistake in the config or flags."""
    from jsonargparse import ArgumentError

    try:
        run(sys.argv[1:] if argv is None else argv)
    except ArgumentError as err:
        print(f"error: {_one_line(err)} (see --help)", file=sys.stderr)
        return 2
    except Exception as err:
        ours = user_error(err)
        if ours is None:
            raise
        print(f"error: {_one_line(ours)}", file=sys.stderr)
        return 2
    return 0


def user_error(err: BaseException) -> JukeboxError | None:
    """Our user error behind `err`: jsonargparse wraps what an `__init__` raises ("Does not validate against any
    of the Union subtypes"), with ours as the cause."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, JukeboxError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
