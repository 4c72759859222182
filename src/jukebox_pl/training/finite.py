"""Finite or stop: a diverging run skips its non-finite steps, stops after too many in a row, and never writes
(or loads) weights holding NaN or infinity.

A learning rate far too high, a corrupt batch or an fp16 overflow turns the loss into NaN; left alone, one such
step poisons every weight, the codebook and the EMA copy, and the run goes on "training" for days. Here a step
whose loss or gradient is not finite leaves the weights untouched (its gradients are dropped before the
optimiser sees them) and is counted; `run.max_nonfinite_steps_in_a_row` such steps in a row stop the run with
`DivergedError`, and `last.ckpt` keeps the last finite state.
"""

from __future__ import annotations

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from pytorch_lightning.callbacks import Callback

from jukebox_pl.errors import DivergedError
from jukebox_pl.training.sharded import local


def grads_finite(parameters) -> torch.Tensor:
    """A 0-d bool tensor: every gradient is finite (one fused max-abs per device, no host sync here)."""
    grads = [local(p.grad) for p in parameters if p.grad is not None]  # a shard's part under FSDP
    grads = [g for g in grads if g.numel()]  # (a shard may be empty: a bias smaller than the number of ranks)
    if not grads:
        return torch.tensor(True)
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    flags = []
    for device_grads in by_device.values():
        norms = torch._foreach_norm(device_grads, float("inf"))  # NaN propagates through the max
        flags.append(torch.isfinite(torch.stack([n.float() for n in norms])).all().cpu())
    return torch.stack(flags).all()


class FiniteGuard(Callback):
    """Skips optimiser steps whose loss or gradient is not finite, counts them (logged as
    `train/nonfinite_steps`), and stops the run after `max_in_a_row` of them in a row.

    The decision is taken after DDP has averaged the gradients (a NaN on one rank reaches all of them), and
    the losses' verdicts are combined across ranks, so every rank skips the same steps. Under fp16 mixed
    precision the GradScaler already skips overflowing steps and lowers its scale; there only a non-finite
    loss counts here.
    """

    def __init__(self, max_in_a_row: int = 10):
        self.max_in_a_row = max(1, int(max_in_a_row))
        self.in_a_row = 0
        self.total = 0
        self._loss: torch.Tensor | None = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss_ok = torch.isfinite(self._loss).all() if self._loss is not None else torch.tensor(True)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        ok = loss_ok.cpu() if scaler is not None else (loss_ok.cpu() & grads_finite(params))
        finite = bool(ok)
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self.in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)  # the optimiser skips parameters without a gradient
        self.in_a_row += 1
        self.total += 1
        what = "loss" if not bool(loss_ok) else "gradient"
        step = trainer.global_step
        if self.in_a_row >= self.max_in_a_row:
            raise DivergedError(
                f"{self.in_a_row} training steps in a row (up to step {step}) had a non-finite {what}; the run is "
                f"stopped ({self.total} non-finite steps in all). The weights are those of the last finite step "
                "and last.ckpt holds them. Lower the learning rate (vqvae.optim.lr / prior.<level>.optim.lr), "
                "add gradient clipping (trainer.gradient_clip_val) or check the data, then resume; "
                "run.max_nonfinite_steps_in_a_row sets how many are tolerated"
            )
        rank_zero_warn(
            f"step {step}: non-finite {what}; the step is skipped (weights unchanged), {self.in_a_row} in a row, "
            f"{self.total} in all; the run stops after {self.max_in_a_row} in a row"
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("train/nonfinite_steps", float(self.total), batch_size=1)

    def state_dict(self) -> dict:
        return {"in_a_row": self.in_a_row, "total": self.total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.in_a_row = int(state_dict.get("in_a_row", 0))
        self.total = int(state_dict.get("total", 0))
