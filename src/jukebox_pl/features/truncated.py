"""A top prior cut after its first `depth` transformer blocks, built and loaded without the rest.

Feature extraction reads a layer L of the top prior and never the blocks above it, the head or (below its first
cross-attention layer) the lyrics encoder. The full architecture is built on the meta device (no memory), cut,
and only the kept modules adopt tensors from the file: a checkpoint is memory-mapped and a `model.safetensors`
read tensor by tensor, so neither the dropped tensors' bytes nor their checksums are ever read, and memory grows
with L, not with the model's depth (the 5B prior at layer 36 holds half its blocks).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jukebox_pl.config.levels import Levels
from jukebox_pl.errors import JukeboxError, UserValueError
from jukebox_pl.hub.folder import CONFIG_NAME, read_config
from jukebox_pl.hub.mixin import named_error
from jukebox_pl.hub.weights import WEIGHTS_NAME, load_assigned, read_weights
from jukebox_pl.prior.model import JukeboxPrior, build_prior
from jukebox_pl.training.checkpoints.checksums import verify_checksums
from jukebox_pl.training.checkpoints.read_write import check_finite, describe, read_checkpoint


def truncate(prior: JukeboxPrior, depth: int) -> JukeboxPrior:
    """Keep the first `depth` blocks of `prior`'s transformer and drop its head, in place (works on the meta
    device). The lyrics encoder is dropped too when no kept block attends to it."""
    blocks = prior.prior.transformer._attn_mods
    if not 1 <= depth <= len(blocks):
        raise UserValueError(f"layer {depth} does not exist: this prior has layers 1..{len(blocks)}")
    transformer = prior.prior.transformer
    transformer._attn_mods = nn.ModuleList(list(blocks)[:depth])
    transformer.kinds = transformer.kinds[:depth]
    if hasattr(prior.prior, "x_out"):
        del prior.prior.x_out
    prior.prior.only_encode = True
    encoder = prior.lyrics_encoder
    if encoder is not None and "cross" not in transformer.kinds:  # a flat conditioner: its children sit on the prior
        prior._conditioners = [c for c in prior._conditioners if c is not encoder]
        for name, _ in encoder.named_children():
            delattr(prior, name)
    prior.kept_depth = depth
    return prior


def _kept(model: nn.Module):
    names = set(model.state_dict(keep_vars=True))
    return lambda key: key in names


def load_truncated_prior(path: str | Path, depth: int, weights: str = "fp32") -> tuple[JukeboxPrior, dict]:
    """The first `depth` blocks of the prior in `path` (a checkpoint, an export or a Hub-layout folder) with its
    embeddings and conditioners, in eval mode and in the `weights` precision sampling offers (fp32, bf16, fp16,
    int8, ...), and the prior's hyperparameters (as `sampling.models.load_prior` gives them)."""
    from jukebox_pl.sampling.models import folder_hparams, for_sampling

    path = Path(path)
    if path.is_dir():
        config_path = path / CONFIG_NAME
        config = read_config(config_path, (JukeboxPrior.pretrained_kind,))
        try:
            with torch.device("meta"):
                model = JukeboxPrior.from_pretrained_config(config, config_path)
        except JukeboxError as err:
            raise named_error(err, config_path) from None
        with torch.device("meta"):
            truncate(model, depth)
        file = path / WEIGHTS_NAME
        load_assigned(model, read_weights(file, keep=_kept(model)), file, f"the first {depth} layers of its prior")
        model.adopt_pretrained_config(config)
        return for_sampling(model.eval(), weights), folder_hparams(model)
    obj = read_checkpoint(path, only=lambda dotted: False)  # memory-mapped; the kept tensors are checked below
    info = describe(obj)
    if info["kind"] != "prior":
        raise UserValueError(f"{path} holds a {info['kind']} checkpoint, not a prior")
    hp, state = info["hparams"], info["state_dict"]
    levels = Levels.from_vqvae(hp["vqvae_cfg"], hp["sample_rate"])
    with torch.device("meta"):
        model = truncate(build_prior(levels, hp["level"], hp["prior"], hp["y_bins"]), depth)
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    ranks = {v.shape[0] for k, v in state.items() if k.startswith(prefix) and k.endswith(".lora_a")}
    if ranks:  # a LoRA fine-tuning run: its adapters are merged into plain weights, as for sampling
        from jukebox_pl.prior.lora import add_lora

        add_lora(model, ranks.pop())
    kept = _kept(model)
    wanted = {k: k[len(prefix) :] for k in state if k.startswith(prefix) and kept(k[len(prefix) :])}
    verify_checksums(obj, f"checkpoint {path}", only=lambda dotted: dotted.removeprefix("state_dict.") in wanted)
    weights_of = {name: state[k] for k, name in wanted.items()}
    check_finite(weights_of, f"checkpoint {path}")
    load_assigned(model, weights_of, path, f"the first {depth} layers of its prior")
    if any(n.endswith(".lora_a") for n in weights_of):
        from jukebox_pl.prior.lora import merge_lora

        merge_lora(model)
    model.vqvae_fingerprint = info["meta"].get("vqvae_fingerprint")
    model.vocab = hp.get("vocab")
    return for_sampling(model.eval(), weights), hp
