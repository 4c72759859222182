"""`PriorModule`: one level's prior as a LightningModule (frozen VQ-VAE encoding, bits/token, EMA weights).

Batches are either audio crops (the frozen VQ-VAE levels encode them on the fly, without gradients, into this
level's codes and, for upsamplers, the codes of the level above) or pre-encoded code crops from
`jukebox-pl encode-shards` (keys `codes` / `upper_codes`). Either way the rest of the batch carries the labels:
`artist`, `genres`, `total_length`, `offset` (samples) and `lyrics`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from jukebox_pl.config.levels import Levels, level_name
from jukebox_pl.config.schema import PriorConfig, VQVAEConfig
from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.errors import MissingInputError, UserValueError
from jukebox_pl.prior.guidance import drop_conditions
from jukebox_pl.prior.model import JukeboxPrior, build_prior
from jukebox_pl.prior.transformer import ResAttnBlock
from jukebox_pl.training.checkpoints.read_write import check_finite
from jukebox_pl.training.distributed import is_sharded, local, local_rows, mixed_precision, shard_per_block
from jukebox_pl.training.frozen import hide_eval_warning, keep_frozen_in_eval, show_eval_warning
from jukebox_pl.training.schedules import module_optimizer
from jukebox_pl.vqvae.fingerprint import check_pairing, codes_fingerprint


class PriorTraining:
    """Trains the prior of one level; plug it into any Lightning project with your own DataModule.

    The training logic without a Lightning base class: `PriorModule` binds it to `pytorch_lightning`,
    `jukebox_pl.unified_lightning.PriorModule` to the unified `lightning` package.

    `vqvae` (a `jukebox_pl.vqvae.vqvae.VQVAE` with this level and, for upsamplers, the level above) is
    needed only for audio batches; it stays frozen, is never saved in the prior's checkpoints, and is reloaded
    from `vqvae_checkpoints` when a checkpoint is restored.
    """

    FROZEN = ("ema_model",)
    """Sub-modules that are never trained: kept in eval mode, and Lightning's eval-mode warning is not raised for
    them (`jukebox_pl.training.frozen`)."""

    def __init__(
        self,
        prior: Mapping[str, Any] | PriorConfig,
        level: int | str,
        vqvae_cfg: Mapping[str, Any] | VQVAEConfig,
        sample_rate: int,
        y_bins: tuple[int, int] | list[int] | None = None,
        vqvae_checkpoints: list[str] | None = None,
        vqvae=None,
        config: dict | None = None,
        vocab: dict | None = None,
    ):
        super().__init__()
        pcfg, vcfg = prior_config(prior), vqvae_config(vqvae_cfg)
        self.levels = Levels.from_vqvae(vcfg, sample_rate)
        idx = self.levels.index(level)
        self.save_hyperparameters(
            {
                "prior": plain(pcfg),
                "level": idx,
                "vqvae_cfg": plain(vcfg),
                "sample_rate": sample_rate,
                "y_bins": list(y_bins) if y_bins is not None else None,
                "vqvae_checkpoints": [str(p) for p in vqvae_checkpoints] if vqvae_checkpoints else None,
                "config": config,
                # the artist/genre names behind the label ids, so that sampling can resolve names
                "vocab": vocab,
            }
        )
        self.cfg, self.vcfg, self.level, self.sample_rate = pcfg, vcfg, idx, sample_rate
        self.hop_length = self.levels.hop(idx)
        self.model = build_prior(self.levels, idx, pcfg, y_bins)
        self.ema_model: nn.Module | None = None
        if pcfg.ema_decay is not None:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()  # frozen: see FROZEN
        self.__dict__["_vqvae"] = vqvae  # not a submodule: frozen, not trained, not in the checkpoint
        # which VQ-VAE's codes this prior learns (recorded in its checkpoints; sampling checks the pairing)
        self.vqvae_fingerprint: dict | None = codes_fingerprint(vqvae, idx) if vqvae is not None else None
        self.__dict__["_vqvae_device"] = None
        self._kept_rows: dict[str, int] = {}  # label table -> leading rows that never change (fine-tuning)
        self._free_null: set[str] = set()  # tables whose row 0 learns all the same (the guidance null)
        self._kept_values: dict[str, torch.Tensor] = {}

    # -- frozen sub-modules -----------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_in_eval(self, self.FROZEN)
        return self

    def on_fit_start(self) -> None:
        hide_eval_warning(self, self.FROZEN)  # only the frozen EMA copy in eval mode: no warning for it

    def on_train_start(self) -> None:
        show_eval_warning(self)  # Lightning's check has run

    def teardown(self, stage: str) -> None:
        show_eval_warning(self)

    # -- fine-tuning ----------------------------------------------------------------------------------------
    def set_trainable(self, mode: str | None = None, kept_rows: dict[str, int] | None = None) -> int:
        """Freeze all but what `mode` (default `prior.<level>.trainable`) trains; LoRA adapters are added to the
        weights and to their EMA copy alike. `kept_rows` (table -> rows the base model had) stay exactly as they
        are in every mode but `all`. Call after loading the base weights. Returns the trainable count."""
        from jukebox_pl.prior.lora import add_lora
        from jukebox_pl.prior.trainable import Trainable, select

        parsed = Trainable.parse(mode or self.cfg.trainable)
        learn = select(self.model, parsed)
        if parsed.kind == "lora" and self.ema_model is not None:
            add_lora(self.ema_model, parsed.count)
            self.ema_model.load_state_dict(self.model.state_dict())
            self.ema_model.requires_grad_(False).eval()
        self._kept_rows = dict(kept_rows or {}) if parsed.kind != "all" else {}
        self._kept_values = {}
        # under label dropout (guidance) row 0, the null ("unknown"), must learn: it is not kept
        nulls = {"artist_emb": "artist", "bow_genre_emb": "genre"}
        self._free_null = {name for name in self._kept_rows for table, what in nulls.items()
                           if table in name and what in self.model.cfg_drop}  # fmt: skip
        return sum(p.numel() for p in learn)

    @torch.no_grad()
    def _keep_rows(self) -> None:
        """Put the base model's label rows back after an optimiser step (weight decay and Adam's momentum
        would otherwise move them even without a gradient)."""
        params = dict(self.model.named_parameters())
        for name, n in self._kept_rows.items():
            rows, first = local_rows(params[name])  # under FSDP: this rank's shard of the table
            start = 1 if name in self._free_null else 0
            kept = rows[max(0, start - first) : max(0, min(rows.shape[0], n - first))]
            if name not in self._kept_values:
                self._kept_values[name] = kept.detach().clone()
            kept.copy_(self._kept_values[name])

    # -- helpers ------------------------------------------------------------------------------------------
    @property
    def level_name(self) -> str:
        return self.levels.name(self.level)

    @property
    def sample_length(self) -> int:
        return self.model.sample_length

    @property
    def inference_model(self) -> JukeboxPrior:
        """The weights used for validation, sampling and export: the EMA copy when there is one."""
        return self.ema_model if self.ema_model is not None else self.model

    @property
    def vqvae(self):
        if self._vqvae is None:
            paths = self.hparams.get("vqvae_checkpoints")
            if not paths:
                raise UserValueError(
                    "audio batches need the frozen VQ-VAE: pass vqvae=VQVAE.from_run(RUN) (or vqvae_checkpoints), "
                    "or train on code shards from `jukebox-pl encode-shards`"
                )
            from jukebox_pl.vqvae.vqvae import VQVAE

            self.__dict__["_vqvae"] = VQVAE.from_checkpoints([self._find_stage_file(p) for p in paths])
        return self._vqvae

    def _find_stage_file(self, path: str) -> Path:
        """A VQ-VAE checkpoint recorded relative to the run folder (`vqvae_top/checkpoints/last.ckpt`): found
        beside this prior's own checkpoint wherever the run folder was moved or copied; absolute paths as is."""
        p = Path(path)
        if p.is_absolute():
            return p
        tried = []
        own = self.__dict__.get("_checkpoint_path")
        roots = list(Path(own).resolve().parents)[:3] if own else []
        for root in [*roots, Path.cwd()]:
            candidate = root / p
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
        raise MissingInputError(f"the prior's VQ-VAE checkpoint {path} was not found (looked at {', '.join(tried)})")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's loader, remembering where the file is so the VQ-VAE levels are found relative to it."""
        kwargs.setdefault("weights_only", True)  # tensors and plain data only: a crafted pickle never runs
        module = super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        module.__dict__["_checkpoint_path"] = str(checkpoint_path)
        return module

    def throughput_units(self, batch) -> float:
        """Tokens in a batch (for the throughput callback)."""
        return float(self._batch_size(batch) * self.cfg.n_ctx)

    @staticmethod
    def _batch_size(batch) -> int:
        return (batch["codes"] if "codes" in batch else batch["audio"]).shape[0]

    # -- batches -> codes ---------------------------------------------------------------------------------
    @torch.no_grad()
    def batch_codes(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This level's codes (B, n_ctx) and the upper level's (B, n_ctx / ratio) for a batch of either kind."""
        upper_needed = self.levels.above(self.level) is not None
        if "codes" in batch:
            codes, upper = batch["codes"].long(), batch.get("upper_codes")
            if upper_needed and upper is None:
                raise UserValueError(f"the {self.level_name} upsampler needs `upper_codes` in code batches")
            return codes, (upper.long() if upper is not None else None)
        audio = batch["audio"]
        if audio.shape[-1] != self.sample_length:
            raise UserValueError(
                f"audio crops of {audio.shape[-1]} samples, but the {self.level_name} prior needs n_ctx x hop = "
                f"{self.cfg.n_ctx} x {self.hop_length} = {self.sample_length} samples (the prior stage's DataModule "
                "cuts crops of that length: `jukebox_pl.stages.datamodules.prior_datamodule`)"
            )
        vqvae = self.vqvae
        if self._vqvae_device != self.device:  # moved once, not on every step
            vqvae.to(self.device)
            self.__dict__["_vqvae_device"] = self.device
        if audio.shape[1] != 1:
            audio = audio.mean(1, keepdim=True)
        codes = vqvae.level(self.level).encode(audio)
        upper = vqvae.level(self.level + 1).encode(audio) if upper_needed else None
        return codes, upper

    def labels(self, batch: dict, upper: torch.Tensor | None) -> dict[str, Any]:
        """The batch keys this prior's conditioners read (`JukeboxPrior.batch_keys`), with the upper codes."""
        batch = {**batch, "upper_codes": upper} if upper is not None else batch
        missing = [k for k in self.model.batch_keys if k not in batch]
        if missing:
            hint = {
                "lyrics": f" (build the DataModule with n_lyric_tokens={self.model.n_tokens}; the prior stage does)"
            }
            raise UserValueError(
                f"the {self.level_name} prior's conditioners read {', '.join(self.model.batch_keys)} but the batch "
                f"has no {', '.join(missing)}{''.join(hint.get(k, '') for k in missing)}"
            )
        return {k: batch[k] for k in self.model.batch_keys}

    def _step(self, batch: dict, model: JukeboxPrior, train: bool = False):
        codes, upper = self.batch_codes(batch)
        labels = self.labels(batch, upper)
        if train and model.cfg_drop:  # classifier-free guidance: some examples see the null labels / lyrics
            labels = drop_conditions(labels, model.cfg_drop)
        return model(codes, **labels)

    def _log_parts(self, split: str, out, n: int) -> None:
        sync = split == "val"
        self.log(f"{split}/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(
            f"{split}/music_bits_per_token", out.music_bits, prog_bar=split == "train", batch_size=n, sync_dist=sync
        )
        if out.lyric_bits is not None:
            self.log(f"{split}/lyric_bits_per_token", out.lyric_bits, batch_size=n, sync_dist=sync)

    # -- steps --------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        out = self._step(batch, self.model, train=True)
        n = self._batch_size(batch)
        self._log_parts("train", out, n)
        opt = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if opt is not None:
            self.log("train/lr", opt.param_groups[0]["lr"], batch_size=n)
        return out.loss

    def validation_step(self, batch, batch_idx):
        out = self._step(batch, self.inference_model)
        self._log_parts("val", out, self._batch_size(batch))
        return out.loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimiser step, then the EMA weights follow it: inside the step, so a checkpoint written at the
        step's end (callbacks run before the module's `on_train_batch_end`) holds an EMA that matches the weights,
        and accumulated micro-batches do not each move the EMA. Kept label rows are restored first."""
        if self._kept_rows and not self._kept_values:
            self._keep_rows()  # the rows as they are before the first step
        super().optimizer_step(*args, **kwargs)
        if self._kept_rows:
            self._keep_rows()
        self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema_model is None:
            return
        decay = self.cfg.ema_decay
        # under FSDP both copies are sharded alike: each rank moves its own shard
        ema = [local(p) for p in self.ema_model.parameters()]
        live = [local(p.detach()) for p in self.model.parameters()]
        torch._foreach_lerp_(ema, live, 1.0 - decay)

    def configure_model(self) -> None:
        """Under `trainer.strategy=fsdp` (Lightning's ModelParallelStrategy, which hands the module a device mesh)
        shard the weights and the EMA copy per transformer block (`jukebox_pl.training.distributed`); with any other
        strategy nothing happens."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None or is_sharded(self.model):
            return
        trainer = self._trainer
        policy = mixed_precision(trainer.precision if trainer is not None else None)
        mesh = mesh["data_parallel"] if mesh.mesh_dim_names and "data_parallel" in mesh.mesh_dim_names else mesh
        shard_per_block(self.model, ResAttnBlock, mesh, policy)
        if self.ema_model is not None:
            shard_per_block(self.ema_model, ResAttnBlock, mesh, policy)

    def configure_optimizers(self):
        return module_optimizer(self, [p for p in self.model.parameters() if p.requires_grad], self.cfg.optim)

    # -- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["jukebox_pl"] = {
            "kind": "prior",
            "level": self.level,
            "level_name": self.level_name,
            "levels": self.vcfg.levels,
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "n_ctx": self.cfg.n_ctx,
            "vqvae_fingerprint": self._codes_fingerprint(),
        }

    def _codes_fingerprint(self) -> dict | None:
        if self.vqvae_fingerprint is None and self._vqvae is not None:  # loaded on demand from vqvae_checkpoints
            self.vqvae_fingerprint = codes_fingerprint(self._vqvae, self.level)
        return self.vqvae_fingerprint

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("jukebox_pl", {})
        check_prior_level(meta, self.level, self.vcfg.levels, "this checkpoint")
        check_finite(checkpoint.get("state_dict", {}), "this checkpoint")
        recorded, own = meta.get("vqvae_fingerprint"), self._codes_fingerprint()
        where = self.__dict__.get("_checkpoint_path") or "the checkpoint resumed from"
        if recorded and own:  # a resumed prior keeps learning the codes it learned, never another VQ-VAE's
            what = ", ".join(self.hparams.get("vqvae_checkpoints") or []) or "the VQ-VAE it is given"
            check_pairing(recorded, self._vqvae, self.level, str(where), what)
        elif recorded:
            self.vqvae_fingerprint = recorded


class PriorModule(PriorTraining, pl.LightningModule):
    """`PriorTraining` as a `pytorch_lightning.LightningModule` (see there for the arguments)."""


def check_prior_level(meta: dict, level: int, levels: int, what: str) -> None:
    """A prior checkpoint must belong to the level (and level count) it is loaded for."""
    if meta.get("kind") not in (None, "prior"):
        raise UserValueError(f"{what} holds a {meta['kind']} checkpoint, not a prior")
    saved = meta.get("level")
    if saved is not None and (saved != level or meta.get("levels", levels) != levels):
        raise UserValueError(
            f"{what} is a prior trained for the {meta.get('level_name', saved)} level (index {saved} of "
            f"{meta.get('levels', '?')}), not for the {level_name(level, levels)} level (index {level} of {levels})"
        )
