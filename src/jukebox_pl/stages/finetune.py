"""`jukebox-pl finetune`: a prior of a trained (or imported) run, fine-tuned on a new artist's songs, as a new
run that samples by the new name with nothing else.

The new run links the base run's VQ-VAE levels and its other priors (relative symbolic links, so the two folders
move together) and trains only the chosen level's prior: from the base's weights, with the label vocabularies
merged by name (`finetune_labels`), only what `--train` names learning (`prior.trainable`), validation on the
held-out songs of the new shards, early stopping on their bits/token, and the best checkpoint kept as
`checkpoints/best.ckpt`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_info
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from jukebox_pl.config.loader import load_config
from jukebox_pl.config.typed import run_config
from jukebox_pl.errors import MissingInputError, RefusedError, UserValueError
from jukebox_pl.sampling.models import prior_checkpoint
from jukebox_pl.stages.datamodules import check_shard_rate
from jukebox_pl.stages.train_prior import train_prior
from jukebox_pl.training.runner import CONFIG_FILE, refusal_leaves_no_trace

MONITOR = "val/music_bits_per_token"
REPORT_FILE = "finetune.json"  # what a fine-tuning started from, grew and reached (train_prior writes its part)


def stage_of(checkpoint: Path) -> Path:
    """The stage folder of a checkpoint (`RUN/prior_<level>/checkpoints/x.ckpt`) or an export (`.../export.pt`)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def base_of(source: str | Path, level: str) -> tuple[Path, Path]:
    """(the base prior's checkpoint, the base run folder) from a run folder or a prior checkpoint/export inside
    one (`RUN/prior_<level>/checkpoints/last.ckpt`, `RUN/prior_<level>/export.pt`)."""
    source = Path(source)
    if source.is_dir():
        return prior_checkpoint(source, level), source
    if not source.is_file():
        raise MissingInputError(f"--from {source}: no such run folder or checkpoint")
    stage = stage_of(source)
    if not stage.name.startswith("prior_"):
        raise UserValueError(f"--from {source}: expected a run folder or a file inside RUN/prior_<level>/")
    return source, stage.parent


def stage_config(checkpoint: Path) -> Path:
    """The config a prior checkpoint's stage was trained with (every stage folder keeps one)."""
    path = stage_of(checkpoint) / CONFIG_FILE
    if not path.is_file():
        raise MissingInputError(f"the prior's config {path} does not exist (a run folder keeps one per stage)")
    return path


def link_base_stages(base_run: Path, run: Path, level: str) -> list[str]:
    """Link every stage of the base run except the prior being fine-tuned into the new run (relative links)."""
    run.mkdir(parents=True, exist_ok=True)
    linked = []
    for stage in sorted(base_run.iterdir()):
        if not stage.is_dir() or not stage.name.startswith(("vqvae_", "prior_")) or stage.name == f"prior_{level}":
            continue
        target = run / stage.name
        relative = os.path.relpath(stage.resolve(), run.resolve())
        if target.is_symlink() and os.readlink(target) == relative:
            continue
        if target.exists() or target.is_symlink():
            raise RefusedError(f"{target} already exists and is not a link to {stage}; choose another --run")
        target.symlink_to(relative, target_is_directory=True)
        linked.append(stage.name)
    return linked


def finetune(
    source: str | Path,
    data: str,
    run_dir: str | Path,
    level: str = "top",
    train: str = "all",
    init_artist: str | None = None,
    overrides: list[str] = (),
    resume: bool = False,
    patience: int = 5,
    callbacks: list | None = None,
    print_config: bool = False,
):
    """Fine-tune the `level` prior of `source` on the shards `data` into the new run `run_dir`."""
    ckpt, base_run = base_of(source, level)
    preset = stage_config(ckpt)
    run = Path(run_dir)
    with refusal_leaves_no_trace(run):  # a refused start (before the first step) leaves no new run folder
        check_shard_rate(run_config(load_config(str(preset), [*overrides, f"data.shards={data}"])), str(preset))
        link_base_stages(base_run, run, level)
        return _finetune(
            ckpt, preset, data, run, level, train, init_artist, overrides, resume, patience, callbacks, print_config
        )


def _finetune(ckpt, preset, data, run, level, train, init_artist, overrides, resume, patience, callbacks, print_config):
    """The prior stage of the new run: early stopping on the held-out songs, the best checkpoint kept."""
    stop = EarlyStopping(monitor=MONITOR, patience=max(1, patience), mode="min", strict=False, check_finite=True)
    best = ModelCheckpoint(
        dirpath=run / f"prior_{level}" / "checkpoints", filename="best", monitor=MONITOR, mode="min", save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False,
    )  # fmt: skip
    # labels are merged by name unless a vocabulary is given here (the base's own data.vocab does not carry over)
    keep_vocab = any(o.startswith("data.vocab=") for o in overrides)
    settings = [f"prior.{level}.trainable={train}", *([] if keep_vocab else ["data.vocab=null"]), *overrides]
    report = run / f"prior_{level}" / REPORT_FILE
    if not resume and rank_of_process() == 0:  # the "before" figure: the base on the new held-out songs
        from jukebox_pl.stages.evaluate import evaluate_prior  # (evaluate reads run folders the way this does)

        figures = evaluate_prior(ckpt, data, level, overrides)
        record(report, base_val=figures)
        rank_zero_info(f"the base prior on the held-out songs of {data} at step 0: {figures}")
    module = train_prior(
        run, level, str(preset), data, settings, resume, callbacks=[stop, best, *(callbacks or [])],
        init=None if resume else str(ckpt), init_artist=init_artist, print_config=print_config,
    )  # fmt: skip
    if best.best_model_score is not None and rank_of_process() == 0:
        record(report, best_val={MONITOR.removeprefix("val/"): float(best.best_model_score)},
               best_checkpoint=str(best.best_model_path))  # fmt: skip
    return module


def record(report: Path, **entries) -> None:
    """Add entries to the stage's finetune.json (created when missing), keeping what is there."""
    report.parent.mkdir(parents=True, exist_ok=True)
    held = json.loads(report.read_text()) if report.is_file() else {}
    report.write_text(json.dumps({**held, **entries}, indent=2) + "\n")


def rank_of_process() -> int:
    """This process's global rank in a launched multi-process run (0 when launched alone)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
