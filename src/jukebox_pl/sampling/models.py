"""The trained pieces a sampler needs, loaded from a run folder or explicit checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from jukebox_pl.config.levels import Levels, level_index, level_name
from jukebox_pl.config.typed import plain
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.errors import MissingInputError, UserValueError
from jukebox_pl.hub.folder import resolve_folder
from jukebox_pl.hub.weights import load_assigned
from jukebox_pl.prior.model import JukeboxPrior, build_prior
from jukebox_pl.training.checkpoints.read_write import load_any
from jukebox_pl.vqvae.fingerprint import check_pairing
from jukebox_pl.vqvae.vqvae import VQVAE, level_checkpoint

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}  # --weights: priors stored and computed in half precision


def load_prior(path: str | Path, weights: str = "fp32") -> tuple[JukeboxPrior, dict]:
    """A prior (the EMA weights when the checkpoint has them) in eval mode, and its hyperparameters; `path` may
    also be a folder in the Hub layout (`save_pretrained`)."""
    if Path(path).is_dir():
        model = JukeboxPrior.load_folder(path)
        return for_sampling(model, weights), folder_hparams(model)
    info = load_any(path)
    if info["kind"] != "prior":
        raise UserValueError(f"{path} holds a {info['kind']} checkpoint, not a prior")
    hp = info["hparams"]
    levels = Levels.from_vqvae(hp["vqvae_cfg"], hp["sample_rate"])
    with torch.device("meta"):  # no memory: the file's tensors become the parameters (see load_assigned)
        model = build_prior(levels, hp["level"], hp["prior"], hp["y_bins"])
    state = info["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    weights_of = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    ranks = {v.shape[0] for k, v in weights_of.items() if k.endswith(".lora_a")}
    adapted = bool(ranks)
    if adapted:  # a LoRA fine-tuning run: its adapters are merged into plain weights for sampling
        from jukebox_pl.prior.lora import add_lora

        add_lora(model, ranks.pop())
    load_assigned(model, weights_of, path, "its prior")
    if adapted:
        from jukebox_pl.prior.lora import merge_lora

        merge_lora(model)
    # which VQ-VAE's codes it learned (None in files older than the record), checked by `check_vqvae`
    model.vqvae_fingerprint = info["meta"].get("vqvae_fingerprint")
    model.vocab = hp.get("vocab")
    return for_sampling(model, weights), hp


def folder_hparams(model: JukeboxPrior) -> dict:
    """The hyperparameters a checkpoint would hold, for a prior loaded from a Hub-layout folder."""
    return {"prior": plain(model.cfg), "level": model.level, "sample_rate": model.sample_rate,
            "y_bins": list(model.y_bins) if model.y_bins else None, "vocab": model.vocab, "config": None}  # fmt: skip


def for_sampling(model: JukeboxPrior, weights: str) -> JukeboxPrior:
    """A loaded prior in eval mode, frozen, in the precision `--weights` asks for."""
    if weights in HALF:  # GPU sampling: fp16 weights as stored (the released 5B priors') stay, uncopied
        model.to(HALF[weights])
        if weights == "bf16":  # one row at a time on a CPU: its matrix-vector kernel
            from jukebox_pl.prior.quantize import use_vector_kernel

            use_vector_kernel(model)
    elif any(p.dtype != torch.float32 for p in model.parameters()):
        model.float()  # stored fp16, computed in fp32 (then int8 if asked, below)
    model.eval().requires_grad_(False)
    if weights not in ("fp32", *HALF):
        from jukebox_pl.prior.quantize import quantize_weights

        quantize_weights(model, weights)
    return model


def check_vqvae(prior: JukeboxPrior, vqvae: VQVAE, prior_path, vqvae_what: str, allow: bool = False) -> None:
    """A prior is sampled only with the VQ-VAE whose codes it learned (`jukebox_pl.vqvae.fingerprint`)."""
    hint = ", or pass --allow-mismatch to use them together anyway"
    check_pairing(getattr(prior, "vqvae_fingerprint", None), vqvae, prior.level, str(prior_path), vqvae_what,
                  allow, hint)  # fmt: skip


def vocab_of(hp: dict) -> LabelVocab | None:
    """The label vocabulary a prior was trained with: saved in its checkpoint, else its shards' vocab.json."""
    if hp.get("vocab"):
        return LabelVocab.from_dict(hp["vocab"], "the prior checkpoint's vocab")
    data = (hp.get("config") or {}).get("data", {})
    for candidate in (data.get("vocab"), data.get("shards") and str(Path(data["shards"]) / "vocab.json")):
        if candidate and Path(candidate).is_file():
            return LabelVocab.load(candidate)
    return None


def prior_checkpoint(run_dir: str | Path, name: str) -> Path:
    """A run's prior of one level: its export, else the best checkpoint early stopping kept (`finetune`), else the
    last one."""
    stage = Path(run_dir) / f"prior_{name}"
    for candidate in (stage / "export.pt", stage / "checkpoints" / "best.ckpt", stage / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    if (stage / "model.safetensors").is_file():  # a run in the Hub layout (`export --format hub`)
        return stage
    raise MissingInputError(
        f"no trained {name} prior in {run_dir} (looked for {stage}/export.pt, checkpoints/best.ckpt, last.ckpt "
        f"and model.safetensors); train it with `make train-level LEVEL={name} STAGE=prior`"
    )


@dataclass
class SamplingModels:
    """The models one `sample` run needs: the VQ-VAE (codes <-> audio at `sample_rate` Hz), the prior of each level
    index to sample, and the label vocabularies their `--artist` / `--genre` names are looked up in."""

    vqvae: VQVAE
    priors: dict[int, JukeboxPrior]  # level index -> prior
    vocab: LabelVocab  # the names --artist / --genre are checked against: the top prior's
    sample_rate: int
    # level index -> that prior's own vocabulary, where it has one (the released 1B top prior reads the
    # reference's v3 ids, its upsamplers v2 ids: the same names give each level its own ids)
    vocabs: dict[int, LabelVocab] = field(default_factory=dict)

    @staticmethod
    def main_vocab(vocabs: dict[int, LabelVocab]) -> LabelVocab:
        return vocabs[max(vocabs)] if vocabs else LabelVocab()

    @property
    def n_levels(self) -> int:
        return self.vqvae.n_levels

    def name(self, level: int) -> str:
        return level_name(level, self.n_levels)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, levels: int | None = None, weights: str = "fp32", allow_mismatch: bool = False
    ) -> SamplingModels:
        """The VQ-VAE levels and the priors of the top `levels` levels (all by default) of a run folder; a prior
        that learned another VQ-VAE's codes is refused unless `allow_mismatch`."""
        vqvae = VQVAE.from_run(run_dir)
        n = vqvae.n_levels
        wanted = list(range(n - (levels or n), n))
        if levels is not None and not 1 <= levels <= n:
            raise UserValueError(f"--levels {levels}: this run has {n} levels")
        missing = [level_name(i, n) for i in wanted if i not in vqvae.available()]
        if missing:
            raise MissingInputError(f"the VQ-VAE levels {missing} are not trained in {run_dir}")
        priors, vocabs = {}, {}
        for i in wanted:
            path = prior_checkpoint(run_dir, level_name(i, n))
            prior, hp = load_prior(path, weights)
            vq_files = [str(level_checkpoint(run_dir, level_name(j, n))) for j in (i, i + 1) if j in vqvae.available()]
            check_vqvae(prior, vqvae, path, " and ".join(vq_files), allow_mismatch)
            priors[i] = prior
            if (vocab := vocab_of(hp)) is not None:
                vocabs[i] = vocab
        return cls(vqvae, priors, cls.main_vocab(vocabs), vqvae.sample_rate, vocabs)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, levels: int | None = None, weights: str = "fp32", allow_mismatch: bool = False,
        **fetch,
    ) -> SamplingModels:  # fmt: skip
        """A whole run in the Hub layout (`save_pretrained`, `jukebox-pl export --format hub`): a local folder or
        a Hub id (`owner/name`; `fetch`: revision, cache_dir, token, local_files_only, force_download)."""
        from jukebox_pl.sampling.pretrained_run import run_folder

        folder, config = run_folder(resolve_folder(name_or_path, **fetch))
        return cls.from_run(folder, levels or len(config["priors"]), weights, allow_mismatch)

    def save_pretrained(self, out: str | Path, **card) -> Path:
        """Write this set as a run in the Hub layout (see `jukebox_pl.sampling.pretrained_run.save_run`)."""
        from jukebox_pl.sampling.pretrained_run import save_run

        return save_run(self, out, **card)

    @classmethod
    def from_checkpoints(
        cls, vqvae: list[str], priors: list[str], weights: str = "fp32", allow_mismatch: bool = False
    ) -> SamplingModels:
        """Explicit VQ-VAE level and prior checkpoints (or exports), e.g. a released set fine-tuned elsewhere; a
        prior that learned another VQ-VAE's codes is refused unless `allow_mismatch`."""
        container = VQVAE.from_checkpoints(vqvae)
        loaded, vocabs = {}, {}
        for path in priors:
            prior, hp = load_prior(path, weights)
            if prior.level in loaded:
                raise UserValueError(f"two prior checkpoints for level {prior.level}: {path}")
            if prior.levels != container.n_levels:
                raise UserValueError(
                    f"{path} is a prior for a {prior.levels}-level VQ-VAE, the VQ-VAE has {container.n_levels}"
                )
            check_vqvae(prior, container, path, " and ".join(map(str, vqvae)), allow_mismatch)
            loaded[prior.level] = prior
            if (vocab := vocab_of(hp)) is not None:
                vocabs[prior.level] = vocab
        n = container.n_levels
        have = sorted(loaded, reverse=True)
        if have != list(range(n - 1, n - 1 - len(have), -1)):
            raise UserValueError(
                f"priors must cover the top levels without gaps; got {[level_name(i, n) for i in have]}"
            )
        return cls(container, loaded, cls.main_vocab(vocabs), container.sample_rate, vocabs)

    def level(self, name: str | int) -> int:
        return level_index(name, self.n_levels)


def to_device(models: SamplingModels, device: str | torch.device) -> SamplingModels:
    models.vqvae.to(device)
    for prior in models.priors.values():
        prior.to(device)
    return models
