"""Run folders and the Trainer factory: one folder per stage, resumable, with its resolved config.

A run folder holds every stage of one model: `RUN/vqvae_bottom`, `RUN/vqvae_top`, `RUN/prior_top`, ... Each
stage folder has `config.yaml` (the resolved config), `checkpoints/` (`last.ckpt` + every-N-step ones) and
`logs/` (TensorBoard; `trainer.logger` chooses other loggers, `training.loggers`).
"""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import signal
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from lightning_utilities.core.rank_zero import rank_zero_info
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from jukebox_pl.config.levels import Levels
from jukebox_pl.config.loader import changes, load_config, save_config, to_yaml
from jukebox_pl.config.schema import RunConfig
from jukebox_pl.config.typed import plain, run_config
from jukebox_pl.errors import (
    DiskFullError,
    DivergedError,
    JukeboxError,
    RefusedError,
    StopRequested,
    UnsafeFileError,
)
from jukebox_pl.training.checkpoints.lightning_io import SafeCheckpointIO
from jukebox_pl.training.checkpoints.read_write import clean_interrupted_saves, unsafe_global
from jukebox_pl.training.checkpoints.resume import resume_checkpoint
from jukebox_pl.training.determinism import StepSeeds
from jukebox_pl.training.finite import FiniteGuard
from jukebox_pl.training.loggers import build_callbacks, build_loggers
from jukebox_pl.training.run_lock import holds, lock_folder, release
from jukebox_pl.training.slurm import restart_count, slurm_environment
from jukebox_pl.training.stopping import GracefulStop

CONFIG_FILE = "config.yaml"

# Lightning 2.6 + torch 2.13 print this deprecation (from Lightning's own code) on every step.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class RunExists(RefusedError):
    """A stage folder already has a checkpoint and --resume was not asked for."""


@dataclass
class StageRun:
    cfg: RunConfig  # typed and checked (`jukebox_pl.config.typed`); what was saved as the stage's config.yaml
    dir: Path
    ckpt_path: str | None  # what to resume from

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def skip_log(self) -> Path:
        """Every training sample the stage could not use: shard, key, reason, detail (tab-separated)."""
        return self.dir / "skipped.tsv"


def stage_request(preset: str, overrides: list[str], data: str | None, level: str | int):
    """What a stage command asked for, before its folder is touched: the overrides with `--data` folded in
    (`data.shards=...`), the config they resolve to, and the level's name in that config's VQ-VAE."""
    overrides = list(overrides) + ([f"data.shards={data}"] if data else [])
    asked = run_config(load_config(preset, overrides))
    levels = Levels.from_config(asked)
    return overrides, asked, levels.name(levels.index(level))


@contextmanager
def refusal_leaves_no_trace(*folders: str | Path):
    """The folders among `folders` that this start creates are removed again when it is refused (a JukeboxError
    before training begins), so a refused `train` or `finetune` leaves no half-made run folder behind. A folder
    that existed before, or one that holds a checkpoint, is never touched."""
    paths = [Path(f) for f in folders]
    new = [p for p in paths if not p.exists() and not p.is_symlink()]
    try:
        yield
    except JukeboxError:
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
            for folder in new:
                if folder.is_dir() and not any(folder.rglob("*.ckpt")):
                    release(folder)
                    shutil.rmtree(folder, ignore_errors=True)
        raise


def prepare_stage(
    run_dir: str | Path, stage: str, preset: str, overrides: list[str], resume: bool, print_config: bool = False
) -> StageRun:
    """Resolve the config of one stage and decide whether it starts or resumes; never overwrite silently.

    Everything is checked before anything is written (a refused `--resume` leaves `config.yaml` as it was), and
    the stage folder is locked for the rest of the process (`run_lock`): a second process on it is refused."""
    stage_dir = Path(run_dir) / stage
    held = holds(stage_dir)
    try:
        return _prepare_stage(stage_dir, stage, preset, overrides, resume, print_config)
    except BaseException:
        if not held:  # a refused start does not keep the folder locked
            release(stage_dir)
        raise


def _prepare_stage(
    stage_dir: Path, stage: str, preset: str, overrides: list[str], resume: bool, print_config: bool
) -> StageRun:
    if stage_dir.is_dir():  # another process on it is named before anything else is said about the folder
        lock_folder(stage_dir, "stage folder")
        if holds(stage_dir):  # (rank 0 only) no save into it is under way: what is there was interrupted
            for tmp in clean_interrupted_saves(stage_dir / "checkpoints"):
                rank_zero_info(f"removed {tmp}, left by a save that was interrupted")
    last = stage_dir / "checkpoints" / "last.ckpt"
    if not resume and restart_count() and last.is_file():
        rank_zero_info(f"requeued SLURM job (restart {restart_count()}): resuming {stage} from {last}")
        resume = True
    if resume:
        ckpt = str(resume_checkpoint(stage_dir / "checkpoints"))
        saved = stage_dir / CONFIG_FILE
        cfg = load_config(str(saved), overrides) if saved.is_file() else load_config(preset, overrides)
        if saved.is_file():
            check_resume_config(load_config(str(saved)), cfg, stage, saved)
        rank_zero_info(describe_step_limit(cfg, saved, overrides))
    else:
        if last.is_file():
            raise RunExists(
                f"{stage_dir} already has a trained checkpoint ({last}); pass --resume (RESUME=1) to continue it, "
                "or choose another --run folder"
            )
        cfg = load_config(preset, overrides)
        ckpt = None
    saved = stage_dir / CONFIG_FILE
    base, named = (saved, "the saved config") if resume and saved.is_file() else (preset, f"preset {preset}")
    what = f"{stage} ({'resuming ' + ckpt if ckpt else 'new run'})"
    told = f"resolved config of {what}:\n{to_yaml(cfg)}" if print_config else None
    told = told or config_summary(load_config(str(base)), cfg, what, named, saved)
    lock_folder(stage_dir, "stage folder")  # creates the folder
    save_config(cfg, saved)
    rank_zero_info(told)
    return StageRun(run_config(cfg), stage_dir, ckpt)


def config_summary(base, cfg, what: str, named: str, path: Path) -> str:
    """What a stage's config changes from its preset (or, resumed, from its saved config), one key a line: the
    whole resolved config is in `path` (and on screen with --print-config)."""
    changed = changes(base, cfg)
    lines = [f"config of {what}: {named}" + (f" with {len(changed)} change(s):" if changed else ", unchanged")]
    lines += [f"  {key} = {after!r}" + (f" (was {before!r})" if before is not None else "") for key, before, after in
              changed]  # fmt: skip
    lines.append(f"the whole resolved config: {path} (print it with --print-config)")
    return "\n".join(lines)


# What the weights' shapes (or the meaning of the codes) depend on: a resumed stage may not change these.
VQVAE_SHAPE_KEYS = (
    "levels", "downs_t", "strides_t", "emb_width", "l_bins", "width", "depth", "m_conv", "dilation_growth_rate",
    "dilation_cycle", "multipliers", "channels", "reverse_decoder_dilation",
)  # fmt: skip
PRIOR_SHAPE_KEYS = (
    "arch", "n_ctx", "width", "depth", "heads", "attn_order", "blocks", "m_attn", "m_mlp", "merged_decoder", "labels",
    "y_bins", "t_bins", "lyrics", "n_tokens", "lyrics_vocab", "prime_width", "prime_depth", "prime_heads",
    "prime_attn_order", "prime_blocks", "prime_m_attn", "prime_m_mlp", "cond_width", "cond_depth", "cond_m_conv",
    "cond_dilation_growth_rate", "cond_dilation_cycle", "conditioners", "ema_decay",
)  # fmt: skip


def shape_keys(stage: str) -> list[str]:
    """The config keys a stage's checkpoint is shaped by: the VQ-VAE's (a prior reads its codes) and, for a prior
    stage, its own level's."""
    keys = ["data.sample_rate", *(f"vqvae.{k}" for k in VQVAE_SHAPE_KEYS)]
    if stage.startswith("prior_"):
        keys += [f"prior.{stage.removeprefix('prior_')}.{k}" for k in PRIOR_SHAPE_KEYS]
    return keys


def check_resume_config(saved: DictConfig, cfg: DictConfig, stage: str, path: Path) -> None:
    """A resume may change the schedule, the data and the logging, never what the saved weights are shaped by:
    refused (one line naming the key, both values and the saved config) before anything is written."""
    for key in shape_keys(stage):
        before, now = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if isinstance(before, DictConfig | ListConfig):
            before = OmegaConf.to_container(before, resolve=True)
        if isinstance(now, DictConfig | ListConfig):
            now = OmegaConf.to_container(now, resolve=True)
        if before != now:
            raise RefusedError(
                f"--resume cannot change {key} ({before!r} in {path}, {now!r} asked): the saved weights are shaped "
                "by it; resume without that override, or start a new run in another --run folder"
            )


def describe_step_limit(cfg: DictConfig | RunConfig, saved: Path, overrides: list[str]) -> str:
    """What a resumed stage will train to, and where that limit comes from (a resume never switches silently to
    another step count)."""
    limit = cfg.trainer.max_steps
    if any(o.split("=", 1)[0].lstrip("+") == "trainer.max_steps" for o in overrides):
        return f"resuming with trainer.max_steps={limit} from the command line"
    if limit in (-1, None):
        return "resuming with no step limit (trainer.max_steps is -1)"
    return f"resuming to trainer.max_steps={limit} as saved in {saved} (pass trainer.max_steps=N to change it)"


class SaveLast(Callback):
    """Keep `last.ckpt` current: every N steps, when training ends, and when a single-process run stops on an
    error (or any run on divergence, where every rank stops at the same step), so `--resume` continues from
    the latest state. Stops by signal are `GracefulStop`'s."""

    def __init__(self, path: Path, every_n_steps: int):
        self.path, self.every_n_steps = path, max(1, every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, StopRequested) or trainer.global_step == 0:
            return
        if trainer.world_size == 1 or isinstance(exception, DivergedError):
            try:
                trainer.save_checkpoint(self.path, weights_only=False)
            except DivergedError as err:  # non-finite weights are never written: the previous last.ckpt stays
                rank_zero_info(f"{self.path} not updated: {err}")


# `trainer.*` keys that name classes: `build_trainer` builds them (`training.loggers`) and passes the objects.
CLASS_KEYS = ("logger", "callbacks")


def trainer_kwargs(cfg: RunConfig) -> dict:
    """The `trainer.*` section as Trainer keyword arguments (None values dropped), less `logger` and `callbacks`,
    which `build_trainer` turns into objects."""
    kw = plain(cfg.trainer)
    return {k: v for k, v in kw.items() if v is not None and k not in CLASS_KEYS}


def build_trainer(run: StageRun, callbacks: list[Callback] | None = None, strategy=None, **extra) -> pl.Trainer:
    cfg = run.cfg
    kw = trainer_kwargs(cfg)
    slurm = slurm_environment()
    keep = cfg.run.keep_checkpoints
    ckpt = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="step{step:08d}",
        auto_insert_metric_name=False,
        every_n_train_steps=max(1, cfg.run.checkpoint_every_n_steps),
        save_top_k=keep if keep >= 0 else -1,
        monitor="step",
        mode="max",
        save_last=False,
    )
    cbs = [
        StepSeeds(cfg.seed),
        FiniteGuard(cfg.run.max_nonfinite_steps_in_a_row, cfg.run.max_update_ratio, cfg.run.max_loss_jump),
        ckpt,
        SaveLast(run.last, cfg.run.checkpoint_every_n_steps),
        GracefulStop(run.last, requeue=slurm is not None),
        *(callbacks or []),
        *build_callbacks(cfg.trainer.callbacks, run.dir),
    ]
    if kw.get("enable_progress_bar", True) and sys.stderr.isatty():
        from jukebox_pl.training.callbacks import StepsProgressBar

        cbs.append(StepsProgressBar(leave=True))
    if strategy is not None:
        kw["strategy"] = strategy
    logger = build_loggers(cfg.trainer.logger, run.dir)  # TensorBoard in RUN/<stage>/logs unless the config says
    plugins = [
        SafeCheckpointIO(verified=run.ckpt_path),
        *([slurm] if slurm is not None else []),
        *extra.pop("plugins", []),
    ]
    return pl.Trainer(**kw, callbacks=cbs, logger=logger, default_root_dir=str(run.dir), plugins=plugins, **extra)


def fit(trainer: pl.Trainer, module, datamodule, ckpt_path: str | None) -> None:
    """`trainer.fit`, resuming from `ckpt_path` as tensors and plain data only: a crafted checkpoint is refused
    (one line naming the file) and its payload never runs. The stage folder's lock (`prepare_stage`) is given
    back when the fit ends, so the same process (a notebook, a test) can hand the folder to another one."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:  # Lightning's own SIGTERM path (a signal before training started): exit 0 otherwise
        raise stopped(trainer, StopRequested("stopped by SIGTERM", signal.SIGTERM)) from None
    except StopRequested as err:
        raise stopped(trainer, err) from None
    except DiskFullError as err:  # a checkpoint could not be written: what is on disk, and how to go on
        stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
        saved = stop is not None and stop.last.is_file()
        how = "continue with --resume (RESUME=1)" if saved else "run the same command again"
        raise DiskFullError(f"{getattr(err, 'what', err)}; free some space, then {how}") from None
    except JukeboxError as err:  # raised in a DataLoader worker, it arrives wrapped in the worker's traceback
        raise unwrap_worker_error(err) from None
    except pickle.UnpicklingError as err:
        detail = unsafe_global(err)
        if detail is None or ckpt_path is None:
            raise
        raise UnsafeFileError(
            f"checkpoint {ckpt_path} is refused: it holds Python objects beyond tensors and plain data ({detail})"
        ) from None
    finally:
        release(trainer.default_root_dir)


def stopped(trainer: pl.Trainer, err: StopRequested) -> StopRequested:
    """The stop, saying what was saved and how to continue."""
    stop = next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)
    if stop is not None and stop.saved:
        what = f"{stop.last} holds step {trainer.global_step}"
    elif stop is not None and stop.last.is_file():
        what = f"{stop.last} holds the last periodic save"
    else:  # nothing to resume from: the advice to resume would fail
        return StopRequested(f"{err}; nothing was saved yet, so run the same command again to start over", err.signum)
    return StopRequested(f"{err}; {what}; continue with --resume (RESUME=1)", err.signum)


def unwrap_worker_error(err: JukeboxError) -> JukeboxError:
    """torch re-raises a worker's exception with the worker's whole traceback as its message; keep the line that
    says what went wrong, so the CLI prints one line."""
    text = str(err)
    if not text.startswith("Caught ") or "Traceback" not in text:
        return err
    marker = f"{type(err).__name__}: "
    message = text[text.rfind(marker) + len(marker) :].strip() if marker in text else text.splitlines()[-1]
    clean = copy.copy(err)
    clean.args = (message,)
    return clean
