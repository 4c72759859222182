"""Learning-rate schedules: linear warm-up, then constant, linear or cosine decay (as multipliers of lr)."""

from __future__ import annotations

import math

import torch

from jukebox_pl.errors import UserValueError


def lr_multiplier(step: int, warmup: int, decay: str, decay_steps: int, min_factor: float) -> float:
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if decay == "none" or decay_steps <= 0:
        return warm
    progress = min(1.0, max(0, step - warmup) / max(1, decay_steps - warmup))
    if decay == "linear":
        factor = 1.0 - progress
    elif decay == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise UserValueError(f"unknown lr decay {decay!r}; choose none, linear or cosine")
    return warm * (min_factor + (1.0 - min_factor) * factor)


def build_optimizer(params, optim_cfg, max_steps: int):
    """Adam (AdamW when weight_decay > 0) with the warm-up/decay schedule stepped every optimizer step."""
    kind = torch.optim.AdamW if optim_cfg.weight_decay > 0 else torch.optim.Adam
    opt = kind(
        params, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay
    )
    decay_steps = optim_cfg.decay_steps or max(0, max_steps)
    if optim_cfg.decay not in ("none", "linear", "cosine"):
        raise UserValueError(f"optim.decay={optim_cfg.decay!r}; choose none, linear or cosine")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: lr_multiplier(step, optim_cfg.warmup_steps, optim_cfg.decay, decay_steps, optim_cfg.min_lr_factor),
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def module_optimizer(module, params, optim_section) -> dict:
    """What a LightningModule's `configure_optimizers` returns: `optim_section` (a `*.optim` config, missing keys
    at their defaults) over the run's `trainer.max_steps` (-1 when no Trainer is attached, e.g. in a test)."""
    from omegaconf import OmegaConf

    from jukebox_pl.config.schema import OptimConfig

    if not isinstance(optim_section, OptimConfig):  # a dict or DictConfig from a user's own module
        optim_section = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(OptimConfig), optim_section))
    optim = optim_section
    trainer = getattr(module, "_trainer", None)
    return build_optimizer(params, optim, trainer.max_steps if trainer is not None else -1)
