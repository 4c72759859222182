"""A whole run in the Hub layout: what `sample --run` needs, shareable as one Hugging Face repository.

    FOLDER/config.json          kind "run": the level count, the sample rate, which levels and priors it holds
    FOLDER/README.md            the run's model card
    FOLDER/vqvae_<level>/       each a VQ-VAE level's `save_pretrained` folder
    FOLDER/prior_<level>/       each a prior's `save_pretrained` folder (its vocabulary and VQ-VAE fingerprint)

`SamplingModels.from_run` reads it like a training run folder (the same pairing checks), and
`SamplingModels.from_pretrained` fetches one by Hub id first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jukebox_pl.config.levels import level_name
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.typed import plain
from jukebox_pl.errors import JukeboxError, RefusedError
from jukebox_pl.hub.folder import CARD_NAME, CONFIG_NAME, check_keys, read_config, write_config
from jukebox_pl.hub.mixin import parameter_counts
from jukebox_pl.hub.model_card import DEFAULT_LICENSE, CardFacts, check_license, render_card
from jukebox_pl.hub.weights import atomic_write

if TYPE_CHECKING:
    from jukebox_pl.sampling.models import SamplingModels

RUN_KIND = "run"
RUN_KEYS = ("levels", "sample_rate", "vqvae", "priors")


def run_folder(folder: Path) -> tuple[Path, dict[str, Any]]:
    """A run folder in the Hub layout and its config.json, checked (the parts it lists must be level names)."""
    path = folder / CONFIG_NAME
    config = read_config(path, (RUN_KIND,))
    check_keys(config, RUN_KEYS, path)
    levels = config.get("levels")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 8:
        raise ConfigError(f"{path}: levels={levels!r} must be an integer in [1, 8]")
    names = [level_name(i, levels) for i in range(levels)]
    for key in ("vqvae", "priors"):
        listed = config.get(key)
        if not isinstance(listed, list) or not all(name in names for name in listed):
            raise ConfigError(f"{path}: {key}={listed!r} must list level names among {names}")
    if not config["priors"]:
        raise ConfigError(f"{path}: priors=[] holds no prior to sample with")
    return folder, config


def _check_out(out: Path) -> None:
    """A new or empty folder, or an earlier export (rewritten); anything else is refused naming a file."""
    if out.exists() and not out.is_dir():
        raise RefusedError(f"--out {out} is an existing file, not a folder; name a new or empty folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        read_config(out / CONFIG_NAME, (RUN_KIND,))
    except JukeboxError:
        other = next(iter(sorted(out.iterdir())))
        raise RefusedError(
            f"--out {out} holds other files (e.g. {other.name}); name a new or empty folder (or an earlier export)"
        ) from None


def save_run(
    models: SamplingModels,
    out: str | Path,
    license: str = DEFAULT_LICENSE,
    data: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write every VQ-VAE level and prior of `models` into `out` in the Hub layout with model cards (`license`,
    `data`: the training data summary, `repo_id`: the Hub id the cards' loading snippets name)."""
    out = Path(out)
    check_license(license)
    _check_out(out)
    n = models.n_levels
    card = {"license": license, "data": data}
    vqvae_names, prior_names, parameters = [], [], {}
    for i in models.vqvae.available():
        name, level = level_name(i, n), models.vqvae.level(i)
        level.sample_rate = models.sample_rate
        level.save_pretrained(out / f"vqvae_{name}", model_card_kwargs=card)
        vqvae_names.append(name)
        parameters[f"vqvae_{name}"] = sum(parameter_counts(level).values())
    for i, prior in sorted(models.priors.items(), reverse=True):
        name = level_name(i, n)
        if i in models.vocabs:
            prior.vocab = models.vocabs[i].to_dict()
        prior.save_pretrained(out / f"prior_{name}", model_card_kwargs=card)
        prior_names.append(name)
        parameters[f"prior_{name}"] = sum(parameter_counts(prior).values())
    config = {"levels": n, "sample_rate": int(models.sample_rate), "vqvae": vqvae_names, "priors": prior_names}
    write_config(out / CONFIG_NAME, RUN_KIND, config)
    source = repo_id or "FOLDER"
    load = (
        "from jukebox_pl.sampling.models import SamplingModels\n\n"
        f"models = SamplingModels.from_pretrained({source!r})\n"
        f"# or on the command line: jukebox-pl sample --run {source if repo_id is None else 'FOLDER'} --out OUT"
    )
    details = {
        **config,
        "vqvae_config": plain(models.vqvae.level(models.vqvae.available()[0]).cfg),
        "prior_configs": {level_name(i, n): plain(p.cfg) for i, p in sorted(models.priors.items(), reverse=True)},
    }
    top = max(models.priors)
    facts = CardFacts(
        title=f"jukebox-pl run: VQ-VAE levels {', '.join(vqvae_names)}; priors {', '.join(prior_names)}",
        load=load, parameters=parameters, config=details, license=license, tags=["run"],
        vocab=models.vocabs[top].to_dict() if top in models.vocabs else None, data=data,
    )  # fmt: skip
    atomic_write(out / CARD_NAME, render_card(facts).save)
    return out


def push_run(folder: str | Path, repo_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Upload a folder written by `save_run` to the Hub repository `repo_id` (created when missing) with your
    token (argument, HF_TOKEN or `hf auth login`); returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    commit = api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(folder),
                               commit_message="jukebox-pl export --format hub")  # fmt: skip
    return str(getattr(commit, "commit_url", commit))
