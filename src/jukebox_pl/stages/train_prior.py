"""Train one level's prior through the Lightning Trainer (what `jukebox-pl train prior` runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
from lightning_utilities.core.rank_zero import rank_zero_info

from jukebox_pl.config.levels import level_index, level_name
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.lightning import PriorModule, check_prior_level
from jukebox_pl.prior.trainable import LABEL_TABLES
from jukebox_pl.stages.datamodules import check_shard_rate, prior_datamodule
from jukebox_pl.stages.finetune_labels import fine_tuning_labels, rows_from_artist
from jukebox_pl.training.callbacks import Throughput
from jukebox_pl.training.checkpoints.read_write import load_any
from jukebox_pl.training.distributed import ddp_strategy, fully_sharded_strategy
from jukebox_pl.training.runner import (
    build_trainer,
    fit,
    prepare_stage,
    refusal_leaves_no_trace,
    stage_request,
)
from jukebox_pl.vqvae.fingerprint import VQVAEMismatch, check_pairing, encoder_sha1
from jukebox_pl.vqvae.vqvae import level_checkpoint


def training_strategy(name: str):
    """DDP without buffer broadcasts, or FSDP (for the 1B/5B presets) with the prior sharding itself per
    transformer block (`PriorTraining.configure_model`, `jukebox_pl.training.distributed`)."""
    if name == "fsdp":
        return fully_sharded_strategy()
    return ddp_strategy(name)


def relative_to_run(path: str | Path, run_dir: str | Path) -> str:
    """How a checkpoint records another stage's file: relative to the run folder when it lies inside it (so a
    moved or copied run folder still loads), absolute otherwise."""
    path, root = Path(path).resolve(), Path(run_dir).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def vqvae_checkpoints(run_dir: Path, name: str, levels: int, explicit: list[str] | None) -> list[str]:
    """The frozen VQ-VAE levels a prior needs: its own level and, for upsamplers, the level above."""
    if explicit:
        return [str(p) for p in explicit]
    idx = level_index(name, levels)
    needed = [idx] + ([idx + 1] if idx < levels - 1 else [])
    return [str(level_checkpoint(run_dir, level_name(i, levels))) for i in needed]


def load_prior_weights(
    module: PriorModule, path: str | Path, new_rows_from: dict[str, int] | None = None, info: dict | None = None
) -> dict:
    """Start from another run's prior weights (fine-tuning): same level; label tables may have grown.

    Artist/genre rows the old vocabulary had are copied (their ids are kept: see `finetune_labels`); new rows
    (new artists, genres) start from the mean of the old rows, or from the row `new_rows_from[table]` (e.g. a
    similar artist's). `info`: the file already read by `load_any`. Returns {label table: (old rows, rows now)}."""
    info = info if info is not None else load_any(path)
    check_prior_level({**info["meta"], "kind": info["kind"]}, module.level, module.vcfg.levels, str(path))
    state = info["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    own = module.model.state_dict()
    loaded, skipped, grew = {}, [], {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name not in own:
            skipped.append(name)
        elif own[name].shape == value.shape:
            loaded[name] = value
            if name in LABEL_TABLES:
                grew[name] = (value.shape[0], value.shape[0])
        elif (
            name.startswith("y_emb.") and value.shape[1:] == own[name].shape[1:] and value.shape[0] < own[name].shape[0]
        ):
            grown = own[name].clone()
            grown[: value.shape[0]] = value
            source = (new_rows_from or {}).get(name)
            grown[value.shape[0] :] = value[source] if source is not None else value.float().mean(0).to(value.dtype)
            loaded[name] = grown
            grew[name] = (value.shape[0], own[name].shape[0])
        else:
            raise UserValueError(
                f"{path}: {name} has shape {tuple(value.shape)}, this prior needs {tuple(own[name].shape)}"
            )
    missing = [k for k in own if k not in loaded]
    if missing or skipped:
        raise UserValueError(f"{path} does not fit this prior: missing {missing[:5]}, unexpected {skipped[:5]}")
    module.model.load_state_dict(loaded)
    if module.ema_model is not None:
        module.ema_model.load_state_dict(loaded)
    return grew


def check_same_vqvae(vqvae, level: int, ckpts: list, manifest: dict | None, shards, base: dict | None, init) -> None:
    """A prior learns the codes of the VQ-VAE it is given: code shards written by `encode-shards` with another
    VQ-VAE, or a base prior (`--init`, fine-tuning) that learned another one's codes, would teach it codes that
    mean something else. Refused in one line naming both sides (`jukebox_pl.vqvae.fingerprint`)."""
    files = " and ".join(map(str, ckpts))
    recorded = ((manifest or {}).get("vqvae") or {}).get("encoder_sha1") or {}
    for idx in (level, level + 1):
        if idx >= vqvae.n_levels or idx not in vqvae.available():
            continue
        name = level_name(idx, vqvae.n_levels)
        own = encoder_sha1(vqvae.level(idx).state_dict())
        if name in recorded and recorded[name] != own:
            raise VQVAEMismatch(
                f"the code shards {shards} were encoded by another VQ-VAE than {files} ({name} encoder "
                f"{recorded[name]} vs {own}); encode them again with this one (`jukebox-pl encode-shards`)"
            )
    if base is not None:
        check_pairing(base["meta"].get("vqvae_fingerprint"), vqvae, level, str(init), files)


def start_from_base(module: PriorModule, stage: Path, resume: bool, base, init, init_artist, added) -> dict:
    """Load a fine-tuning's base weights into `module` (label tables grown by name) and record what grew in
    `finetune.json`; returns the base's row counts per label table, the rows that stay as they were."""
    if base is None:
        if resume and (stage / "finetune.json").is_file():
            return {k: v[0] for k, v in json.loads((stage / "finetune.json").read_text())["tables"].items()}
        return {}
    grew = load_prior_weights(module, init, rows_from_artist(base, init, init_artist), info=base)
    report = {"init": str(init), "added": added, "tables": {k: list(v) for k, v in grew.items()},
              "new_rows": f"artists from {init_artist!r}'s row, genres from the mean of the base rows"
              if init_artist else "mean of the base rows"}  # fmt: skip
    path = stage / "finetune.json"  # (finetune adds the base's held-out figure before and the best one after)
    held = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**held, **report}, indent=2) + "\n")
    rank_zero_info(f"fine-tuning from {init}: " + (", ".join(f"{k} {a} -> {b} rows" for k, (a, b) in grew.items())
                   or "label tables unchanged") + (f"; new names {added}" if added else ""))  # fmt: skip
    return {k: old for k, (old, _) in grew.items()}


def train_prior(
    run_dir: str | Path,
    level: str,
    preset: str = "tiny",
    data: str | None = None,
    overrides: list[str] = (),
    resume: bool = False,
    callbacks: list | None = None,
    vqvae: list[str] | None = None,
    init: str | None = None,
    init_artist: str | None = None,
    print_config: bool = False,
) -> PriorModule:
    """Train (or resume) the prior of one level on top of the run's trained VQ-VAE levels (`print_config`: the
    whole resolved config on screen, not only what differs from the preset)."""
    overrides, asked, name = stage_request(preset, overrides, data, level)
    check_shard_rate(asked, preset)
    with refusal_leaves_no_trace(run_dir, Path(run_dir) / f"prior_{name}"):
        levels = asked.vqvae.levels
        ckpts = vqvae_checkpoints(Path(run_dir), name, levels, vqvae)
        base = load_any(init) if init and not resume else None  # read (and checked) once, however big
        added = None
        if base is not None:  # label ids by name: the base's names keep theirs, new ones come after
            extra, added = fine_tuning_labels(
                base, asked.data.shards, asked.data.vocab, Path(run_dir) / f"prior_{name}", name
            )
            overrides = [*overrides, *extra]
        # The VQ-VAE the prior sits on is whatever was trained, whatever the preset says now.
        first = load_any(ckpts[0])
        # (JSON values are YAML, so lists, nulls and booleans survive the override syntax; optim is per stage)
        vq_overrides = [f"vqvae.{k}={json.dumps(v)}" for k, v in plain(vqvae_config(first["hparams"]["vqvae"])).items()
                        if k != "optim"]  # fmt: skip
        run = prepare_stage(run_dir, f"prior_{name}", preset, vq_overrides + overrides, resume, print_config)
        cfg = run.cfg
        idx = level_index(name, cfg.vqvae.levels)
        pl.seed_everything(cfg.seed + 100 + idx, workers=True)
        pcfg = getattr(cfg.prior, name)
        dm = prior_datamodule(cfg, name, skip_log=run.skip_log)
        dm.setup("fit")
        y_bins = (dm.vocab.n_genres, dm.vocab.n_artists) if dm.vocab is not None else None
        from jukebox_pl.vqvae.vqvae import VQVAE

        frozen = VQVAE.from_checkpoints(ckpts)
        check_same_vqvae(frozen, idx, ckpts, getattr(dm, "manifest", None), cfg.data.shards, base, init)
        module = PriorModule(
            pcfg, idx, cfg.vqvae, cfg.data.sample_rate, y_bins=y_bins,
            vqvae_checkpoints=[relative_to_run(c, run_dir) for c in ckpts],
            vqvae=frozen, config=plain(cfg),
            vocab=dm.vocab.to_dict() if dm.vocab is not None else None,
        )  # fmt: skip
        kept = start_from_base(module, run.dir, resume, base, init, init_artist, added)
        learning = module.set_trainable(pcfg.trainable, kept)
        if pcfg.trainable != "all":
            rank_zero_info(
                f"prior.{name}.trainable={pcfg.trainable}: {learning:,} parameters learn, the rest is frozen"
            )
        trainer = build_trainer(
            run, [Throughput("tokens"), *(callbacks or [])], strategy=training_strategy(cfg.trainer.strategy)
        )
    module.__dict__["_checkpoint_path"] = run.ckpt_path  # a resumed prior's pairing check names its file
    fit(trainer, module, dm, run.ckpt_path)
    return module
