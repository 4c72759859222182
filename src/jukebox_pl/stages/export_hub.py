"""`jukebox-pl export --format hub`: a trained run, or one checkpoint, as folders in the Hugging Face Hub layout
(`model.safetensors` + `config.json` + model card), optionally pushed to a Hub repository.

A run becomes `vqvae_<level>/`, `prior_<level>/` and a top-level config.json and README.md
(`jukebox_pl.sampling.pretrained_run`), which `sample --run` and `SamplingModels.from_pretrained` read; one
checkpoint or export becomes one model's folder, which `VQVAELevelModel.from_pretrained` or
`JukeboxPrior.from_pretrained` read. The weights are those sampling uses (the EMA copy, LoRA adapters merged).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from jukebox_pl.config.levels import level_names
from jukebox_pl.errors import JukeboxError, MissingInputError, RefusedError, UserValueError
from jukebox_pl.hub.model_card import DEFAULT_LICENSE, check_license, data_summary
from jukebox_pl.sampling.models import SamplingModels, load_prior, prior_checkpoint, vocab_of
from jukebox_pl.sampling.pretrained_run import push_run, save_run
from jukebox_pl.training.checkpoints.read_write import load_any
from jukebox_pl.user_files import check_output_folder, read_input_text
from jukebox_pl.vqvae.vqvae import VQVAE, load_level

MAX_SUMMARY_BYTES = 64 << 20  # a stage's config.yaml or a shard folder's manifest.json (which lists every track)


def _read_json_or_yaml(path: Path) -> Any:
    """A file read only for the card's facts: a problem with it leaves the facts out, never stops the export."""
    try:
        text = read_input_text(path, "file", MAX_SUMMARY_BYTES)
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (JukeboxError, ValueError, yaml.YAMLError):
        return None


def training_data(config: dict | None) -> dict[str, Any]:
    """The card's training data summary from a run config (plain data) and its shard folder's manifest.json."""
    config = config if isinstance(config, dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    shards = data.get("shards")
    manifest = _read_json_or_yaml(Path(shards) / "manifest.json") if isinstance(shards, str) and shards else None
    return data_summary(config, manifest if isinstance(manifest, dict) else None)


def _trained_priors(run: Path, n: int) -> int:
    """How many levels, from the top down, have a trained prior in the run."""
    count = 0
    for name in reversed(level_names(n)):
        try:
            prior_checkpoint(run, name)
        except MissingInputError:
            break
        count += 1
    return count


def export_run(run: str | Path, out: str | Path, license: str = DEFAULT_LICENSE, levels: int | None = None,
               allow_mismatch: bool = False, repo_id: str | None = None) -> Path:  # fmt: skip
    """Every trained VQ-VAE level and the priors of the top `levels` levels (all trained ones by default) of a
    run folder, written to `out` in the Hub layout."""
    run = Path(run)
    if not run.is_dir():
        raise MissingInputError(f"--run {run} is not a folder; name a run folder written by `jukebox-pl train`")
    if levels is None:
        levels = _trained_priors(run, VQVAE.from_run(run).n_levels)
    if not levels:
        raise MissingInputError(f"no trained prior in {run}; train one with `make train-level STAGE=prior`")
    models = SamplingModels.from_run(run, levels, "fp32", allow_mismatch)
    top = models.name(max(models.priors))
    config = _read_json_or_yaml(run / f"prior_{top}" / "config.yaml")
    return save_run(models, out, license, training_data(config), repo_id)


def export_checkpoint(ckpt: str | Path, out: str | Path, license: str = DEFAULT_LICENSE,
                      repo_id: str | None = None) -> Path:  # fmt: skip
    """One VQ-VAE level or prior (a training checkpoint or an export) written to `out` as one model's folder."""
    info = load_any(ckpt)
    card = {"license": license, "data": training_data(info["hparams"].get("config")), "repo_id": repo_id}
    if info["kind"] == "vqvae-level":
        model, _ = load_level(ckpt)
    elif info["kind"] == "prior":
        model, hp = load_prior(ckpt)
        vocab = vocab_of(hp)
        model.vocab = vocab.to_dict() if vocab is not None else None
    else:
        raise UserValueError(f"{ckpt} holds a {info['kind']} checkpoint; export a VQ-VAE level or a prior")
    model.save_pretrained(out, model_card_kwargs=card)
    return Path(out)


def export_hub(out: str | Path, run: str | None = None, ckpt: str | None = None, license: str = DEFAULT_LICENSE,
               levels: int | None = None, allow_mismatch: bool = False, push_to: str | None = None,
               token: str | None = None, private: bool | None = None) -> tuple[Path, str | None]:  # fmt: skip
    """What the `export --format hub` command does: `run` or `ckpt` to the folder `out`, then, with `push_to`
    (`owner/name`), uploaded with your token. Returns the folder and the commit URL (None without a push)."""
    check_license(license)
    out = check_output_folder(out, "--out")
    if (run is None) == (ckpt is None):
        raise UserValueError("export --format hub needs exactly one of --run RUN or --ckpt FILE")
    if run is not None:
        folder = export_run(run, out, license, levels, allow_mismatch, push_to)
    else:
        if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
            raise RefusedError(f"--out {out} holds other files; name a new or empty folder (or an earlier export)")
        folder = export_checkpoint(ckpt, out, license, push_to)
    url = push_run(folder, push_to, token, private) if push_to else None
    return folder, url
