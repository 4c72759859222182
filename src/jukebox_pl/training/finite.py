"""Healthy or drop the step, then stop: a diverging run keeps its last healthy state, stops after too many bad
steps in a row, and never writes (or loads) weights holding NaN or infinity.

A learning rate far too high, a corrupt batch or an fp16 overflow ruins a run in one step. A NaN loss is the easy
case; the treacherous one is a finite loss whose update throws the weights to 1e18 (lr=1e20): every later step
is then NaN, and "the last finite weights" are the ruined ones. So each optimiser step is judged before it is
taken, and a bad one is dropped (its gradients are set to None, so the optimiser leaves every weight and its
state untouched):

- the batch is bad when its loss or gradient is not finite, or its loss is over `max_loss_jump` times the median
  of the recent accepted losses (a corrupt batch); the module's buffers (the codebook and its EMA statistics,
  which the forward pass updated) are then put back as they were before the batch;
- the update is bad when it would move the trainable weights by over `max_update_ratio` times their norm
  (||w_after - w_before|| / ||w_before||, over all of them), or its size is not finite. The update is predicted,
  not made and undone: for torch.optim.Adam and AdamW (what our runs build, `training/schedules.py`) it is
  computed from the gradient, each group's lr, betas, eps, weight_decay, amsgrad and maximize and each weight's
  `step`, `exp_avg`, `exp_avg_sq` (`max_exp_avg_sq`) as torch computes it, in chunks of `CHUNK_ELEMENTS`, so
  the temporaries stay bounded (a few hundred MB at most) whatever the model's size. Lightning calls this hook
  before gradient clipping, so the prediction uses the unclipped gradient: Adam's update is nearly invariant to
  the gradient's scale (exactly so on the first step; later the clipped gradient only weighs less in the
  moments), so clipping cannot turn an exploding update into a small one. The buffers stay: the forward pass
  that updated them ran on the healthy weights. Any other optimiser gets no update check (warned once); its
  bad batches are still dropped.

What is copied: the buffers only (small next to the weights), before each forward pass. Neither the weights nor
the optimiser state are ever copied. The prior's EMA copy follows the weights inside the optimiser step
(`PriorModule.optimizer_step`): on a dropped step it moves toward the unchanged, healthy weights, as after a
step with a zero update, which is harmless (it stays a mean of healthy weights). An accepted predicted update
keeps every weight within ||w|| + ||dw||; when that fits the weights' dtype the step cannot overflow and nothing
more is read. Otherwise (another optimiser, the check off, a bound beyond the dtype) the weights are read after
the step, and one left non-finite stops the run at once with `DivergedError` naming it; such weights are never
saved (`checkpoints.check_finite`).

`max_update_ratio=0` turns the update check off (bad batches are still dropped). `max_in_a_row` bad steps in a
row stop the run with `DivergedError`; the state is then the healthy one before them, and `last.ckpt` holds it.
On a resume the configured learning rate wins over the one saved in the checkpoint's optimiser and scheduler,
so that the stop message's advice (lower the rate, then `--resume`) works.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from statistics import median

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from pytorch_lightning.callbacks import Callback

from jukebox_pl.errors import DivergedError
from jukebox_pl.training.distributed import local

log = logging.getLogger(__name__)

LOSS_WINDOW = 50  # accepted losses whose median is the yardstick of a loss jump
LOSS_WARMUP = 10  # accepted losses needed before a jump is judged
# elements per chunk of the update's prediction; it holds at most 4 temporaries of this size (the two moments and,
# with maximize or Adam's L2 weight decay, the gradient), so at most 64M elements (256 MB in fp32) at a time
CHUNK_ELEMENTS = 1 << 24


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


def _squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squares of all `tensors` (float64 on the CPU; one fused norm per device)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if t.numel():
            by_device.setdefault(t.device, []).append(t)
    total = torch.zeros((), dtype=torch.float64)
    for group in by_device.values():
        norms = torch._foreach_norm(group, 2.0)
        total = total + torch.stack([n.double() ** 2 for n in norms]).sum().cpu()
    return total


def predicts_update(optimizer) -> bool:
    """Whether `predicted_update` knows this optimiser's maths (exactly Adam or AdamW, not a subclass)."""
    return type(optimizer) in (torch.optim.Adam, torch.optim.AdamW)


def _chunks(rows: list[tuple], limit: int):
    """`rows` (parallel tensors: weight, gradient, moments...) in chunks of at most `limit` elements; a larger
    contiguous tensor is cut into flat slices (views: nothing is copied)."""
    chunk, size = [], 0
    for row in rows:
        tensors = [t for t in row[:-1] if t is not None]
        n = tensors[0].numel()
        if n > limit and all(t.is_contiguous() for t in tensors):
            flat = [t.view(-1) if t is not None else None for t in row[:-1]]
            pieces = [
                (*(t[a : a + limit] if t is not None else None for t in flat), row[-1]) for a in range(0, n, limit)
            ]
        else:
            pieces = [row]
        for piece in pieces:
            count = piece[0].numel()
            if chunk and size + count > limit:
                yield chunk
                chunk, size = [], 0
            chunk.append(piece)
            size += count
    if chunk:
        yield chunk


@torch.no_grad()
def _chunk_update(rows: list[tuple], group: dict, fresh: bool) -> torch.Tensor:
    """||update||^2 (float64, CPU) of one chunk of rows (weight, grad, exp_avg, exp_avg_sq, max_exp_avg_sq,
    step after the update), by torch 2.13's foreach Adam (`torch.optim.adam._multi_tensor_adam`); `fresh`: the
    weights have no optimiser state yet (their first step: the moments start at zero)."""
    lr, (beta1, beta2) = float(group["lr"]), (float(b) for b in group["betas"])
    eps, decay = float(group["eps"]), float(group["weight_decay"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    w, g, m, v, vmax, steps = (list(column) for column in zip(*rows, strict=True))
    if group.get("maximize", False):
        g = torch._foreach_neg(g)
    if decay != 0 and not decoupled:
        g = torch._foreach_add(g, w, alpha=decay)  # L2: the decay joins the gradient (and the moments)
    m_new = [torch.zeros_like(t) for t in g] if fresh else torch._foreach_add(m, 0.0)  # copies of this chunk
    v_new = [torch.zeros_like(t) for t in g] if fresh else torch._foreach_add(v, 0.0)
    torch._foreach_lerp_(m_new, g, 1 - beta1)
    torch._foreach_mul_(v_new, beta2)
    torch._foreach_addcmul_(v_new, g, g, 1 - beta2)
    del g
    if group.get("amsgrad", False) and not fresh:
        torch._foreach_maximum_(v_new, vmax)  # (on the first step the maximum is exp_avg_sq itself)
    step_size = [lr / (1 - beta1**s) for s in steps]
    torch._foreach_sqrt_(v_new)
    torch._foreach_div_(v_new, [(1 - beta2**s) ** 0.5 for s in steps])
    torch._foreach_add_(v_new, eps)
    torch._foreach_div_(m_new, v_new)  # the update is minus step_size x this...
    del v_new
    if decay != 0 and decoupled:  # ...and minus lr x decay x w (AdamW)
        torch._foreach_add_(m_new, torch._foreach_mul(w, [lr * decay / s for s in step_size]))
    # step_size applied to each tensor's norm in float64: an update of 1e20 per weight does not overflow
    norms = torch.stack([n.double().cpu() for n in torch._foreach_norm(m_new, 2.0)])
    return ((norms * torch.tensor(step_size, dtype=torch.float64)) ** 2).sum()


def predicted_update(optimizer: torch.optim.Optimizer, limit: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """||w_after - w_before||^2 (float64, CPU) that `optimizer.step()` (Adam or AdamW) would make with the
    gradients as they are now, computed without taking the step and without a full-size temporary: at most a few
    tensors of `limit` elements at a time. Under FSDP each rank's shard only (sum over ranks)."""
    total = torch.zeros((), dtype=torch.float64)
    for group in optimizer.param_groups:
        buckets: dict[tuple, list[tuple]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue  # the optimiser skips it
            w, grad, state = local(p.detach()), local(p.grad), optimizer.state.get(p) or {}
            if not w.numel():
                continue
            fresh = "exp_avg" not in state
            step = 1 + (0 if fresh else float(state["step"]))
            if fresh:
                moments = (None, None, None)
            else:
                ams = state.get("max_exp_avg_sq") if group.get("amsgrad", False) else None
                moments = (local(state["exp_avg"]), local(state["exp_avg_sq"]), None if ams is None else local(ams))
            buckets.setdefault((w.device, fresh), []).append((w, grad, *moments, step))
        for (_, fresh), rows in buckets.items():
            for chunk in _chunks(rows, limit):
                total = total + _chunk_update(chunk, group, fresh)
    return total


def _non_finite_weight(module: torch.nn.Module, trainable: set[int]) -> str | None:
    """The name of the first trainable weight holding NaN or infinity (this rank's shard), or None."""
    named = [(name, local(p.detach())) for name, p in module.named_parameters() if id(p) in trainable]
    named = [(name, t) for name, t in named if t.numel()]
    if not named:
        return None
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, t in named:
        by_device.setdefault(t.device, []).append((name, t))
    for pairs in by_device.values():
        norms = torch._foreach_norm([t for _, t in pairs], float("inf"))
        finite = torch.isfinite(torch.stack([n.float() for n in norms])).cpu()
        if not bool(finite.all()):
            return pairs[int((~finite).nonzero()[0])][0]
    return None


class BufferCopy:
    """A copy of a module's buffers (the codebook and its EMA statistics: small next to the weights) in
    preallocated tensors beside them; `take` and `restore` are one fused copy each."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.buffers = [local(b) for b in module.buffers()]
        self.saved = [torch.empty_like(t) for t in self.buffers]

    @torch.no_grad()
    def take(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)

    @torch.no_grad()
    def restore(self) -> None:
        if not self.buffers:
            return
        torch._foreach_copy_(self.buffers, self.saved)
        for m in self.module.modules():  # caches of buffer values (the bottleneck's "initialised")
            hook = getattr(m, "on_state_restored", None)
            if callable(hook):
                hook()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.saved)


class FiniteGuard(Callback):
    """Drops optimiser steps whose batch or (predicted) update is bad (see the module's docstring), counts them
    (logged as `train/nonfinite_steps`), and stops the run after `max_in_a_row` of them in a row.

    The decisions are taken after DDP has averaged the gradients and are combined across ranks in one sum (the
    update's norms are summed over ranks, which under FSDP sums the shards), so every rank drops the same steps.
    Under fp16 mixed precision the GradScaler already skips overflowing steps and lowers its scale; there a
    non-finite gradient alone does not count here.
    """

    def __init__(self, max_in_a_row: int = 10, max_update_ratio: float = 10.0, max_loss_jump: float = 1000.0):
        self.max_in_a_row = max(1, int(max_in_a_row))
        self.max_update_ratio = float(max_update_ratio)
        self.max_loss_jump = float(max_loss_jump)
        self.in_a_row = 0
        self.total = 0
        self.losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self._loss: torch.Tensor | None = None
        self._buffers: BufferCopy | None = None
        self._taken = False  # the copy of this accumulation window's starting buffers is taken
        self._stepped = False  # an optimiser step happened in this batch
        self._bad: str | None = None  # why this step was dropped
        self._restore_buffers = False  # the dropped step's batch was bad: its forward pass's buffers go back
        self._safe_step = False  # the accepted step's update was predicted and cannot overflow the weights
        self._pending_loss = 0.0  # this step's loss, kept among the recent ones if the step is accepted
        self._trainable: set[int] = set()  # ids of the weights the optimisers step (for the safety net)
        self._warned_optimizer = False
        self._rates: list[list[float]] | None = None

    # -- the configured learning rate wins on a resume ------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self._rates = [[g.get("initial_lr", g["lr"]) for g in opt.param_groups] for opt in trainer.optimizers]

    def on_train_start(self, trainer, pl_module) -> None:
        """After Lightning restored a checkpoint's optimiser and scheduler, which hold the saved run's rate."""
        if not self._rates:
            return
        for opt, rates in zip(trainer.optimizers, self._rates, strict=False):
            schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is opt]
            for i, (group, rate) in enumerate(zip(opt.param_groups, rates, strict=False)):
                saved = group.get("initial_lr", group["lr"])
                if saved == rate or not saved:
                    continue
                log.info("resuming with the configured learning rate %g (the checkpoint's was %g)", rate, saved)
                group["lr"] = group["lr"] * (rate / saved)  # the schedule's factor at this step stays
                if "initial_lr" in group:
                    group["initial_lr"] = rate
                for scheduler in schedulers:
                    if i < len(getattr(scheduler, "base_lrs", [])):
                        scheduler.base_lrs[i] = rate
                    last = getattr(scheduler, "_last_lr", None)
                    if last is not None and i < len(last):
                        last[i] = group["lr"]

    # -- each step ------------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stepped = False
        if self._taken:
            return
        if self._buffers is None or self._buffers.module is not pl_module:
            self._buffers = BufferCopy(pl_module)
        self._buffers.take()  # before the forward pass, which updates the codebook
        self._taken = True
        self._bad, self._restore_buffers = None, False

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Judge the batch and the update it would make, before the optimiser (and gradient clipping) runs."""
        self._stepped = True
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # (a LightningOptimizer wraps the torch one)
        self._safe_step = False
        loss = float(self._loss) if self._loss is not None else 0.0
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self._trainable.update(id(p) for p in params)
        bad, overflow = None, False
        if not math.isfinite(loss):
            bad = "a non-finite loss"
        elif not bool(grads_finite(params)):
            overflow = scaler is not None  # the scaler skips this step and lowers its scale: not counted here
            bad = None if overflow else "a non-finite gradient"
        elif self.max_loss_jump > 0 and len(self.losses) >= LOSS_WARMUP:
            typical = median(self.losses)
            if typical > 0 and loss > self.max_loss_jump * typical:
                bad = (
                    f"a loss of {loss:.3g}, over run.max_loss_jump={self.max_loss_jump:g} x the recent median "
                    f"{typical:.3g}"
                )
        check = self.max_update_ratio > 0 and predicts_update(optimizer)
        if self.max_update_ratio > 0 and not check and not self._warned_optimizer:
            self._warned_optimizer = True
            rank_zero_warn(
                f"run.max_update_ratio: the update check needs torch.optim.Adam or AdamW, not "
                f"{type(optimizer).__name__}; only non-finite and jumping losses and gradients drop a step"
            )
        change = size = torch.zeros((), dtype=torch.float64)
        if check and bad is None and not overflow:
            change = predicted_update(optimizer)
            size = _squared_norm([local(p.detach()) for p in params])
        flags = torch.tensor([bad is not None, overflow, float(change), float(size)], dtype=torch.float64)
        if trainer.world_size > 1:  # one collective: bad batches, overflows and the update's norms of all ranks
            flags = trainer.strategy.reduce(flags.to(pl_module.device), reduce_op="sum").cpu().double()
        n_bad, n_overflow, change, size = (float(v) for v in flags)
        if n_bad > 0:
            bad = bad or "a bad step on another rank"
            self._restore_buffers = True
        elif check and n_overflow == 0:
            ratio = math.sqrt(change) / math.sqrt(size) if size > 0 else 0.0
            if not math.isfinite(change) or not ratio <= self.max_update_ratio:
                limit = self.max_update_ratio
                size_of = f"{ratio:.3g} x the weights' norm"
                if not math.isfinite(ratio):
                    size_of = f"over {limit:g} x the weights' norm (its size is not finite)"
                bad = f"an update of {size_of} (run.max_update_ratio={limit:g})"
        if bad is None:
            self._pending_loss = loss
            # a predicted update keeps every weight within ||w|| + ||dw||: when that fits the weights' dtype the
            # step cannot overflow, and the safety net's pass over all the weights is not needed
            predicted = check and n_overflow == 0
            bound = math.sqrt(size) + math.sqrt(change) if predicted else math.inf
            self._safe_step = bound < min(torch.finfo(p.dtype).max for p in params)
            return
        self._bad = bad
        optimizer.zero_grad(set_to_none=True)  # the optimiser skips parameters without a gradient

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stepped:
            self._taken = False  # the next batch starts a new window
            self._check_step(trainer, pl_module)
        pl_module.log("train/nonfinite_steps", float(self.total), batch_size=1)

    def _check_step(self, trainer, pl_module) -> None:
        bad, self._bad = self._bad, None
        if bad is None:
            if not self._safe_step:  # an update that was not predicted (another optimiser, the check off)
                self._safety_net(trainer, pl_module)
            self.in_a_row = 0
            self.losses.append(self._pending_loss)
            return
        if self._restore_buffers and self._buffers is not None:
            self._buffers.restore()  # the bad batch's forward pass updated them
        self._restore_buffers = False
        self.in_a_row += 1
        self.total += 1
        step = trainer.global_step
        if self.in_a_row >= self.max_in_a_row:
            raise DivergedError(
                f"{self.in_a_row} training steps in a row (up to step {step}) were rolled back, the last for {bad}; "
                f"the run is stopped ({self.total} bad steps in all). The weights, optimiser state and codebook are "
                "those before them (never non-finite) and last.ckpt holds them. Lower the learning rate "
                "(vqvae.optim.lr / prior.<level>.optim.lr), add gradient clipping (trainer.gradient_clip_val) or check "
                "the data, then continue with --resume and the new value (e.g. --resume vqvae.optim.lr=3e-4); "
                "run.max_nonfinite_steps_in_a_row sets how many are tolerated"
            )
        rank_zero_warn(
            f"step {step}: {bad}; the step is rolled back (weights unchanged), {self.in_a_row} in a row, "
            f"{self.total} in all; the run stops after {self.max_in_a_row} in a row"
        )

    def _safety_net(self, trainer, pl_module) -> None:
        """An accepted step that left a weight non-finite (an overflow the prediction missed, or an optimiser it
        cannot predict) stops the run at once: no later step could recover, and such weights are never saved."""
        name = _non_finite_weight(pl_module, self._trainable)
        ok = name is None
        if trainer.world_size > 1:  # under FSDP another rank's shard may be the one
            ok = trainer.strategy.reduce_boolean_decision(ok, all=True)
        if ok:
            return
        where = f"weight {name}" if name else "a weight on another rank"
        raise DivergedError(
            f"step {trainer.global_step}: the optimiser step left non-finite values (NaN or infinity) in {where}; "
            "the run is stopped and these weights are not saved (last.ckpt keeps the last healthy state). Lower the "
            "learning rate (vqvae.optim.lr / prior.<level>.optim.lr) or use a wider precision "
            "(trainer.precision=32), then continue with --resume and the new value (e.g. --resume vqvae.optim.lr=3e-4)"
        )

    def state_dict(self) -> dict:
        return {"in_a_row": self.in_a_row, "total": self.total, "losses": list(self.losses)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.in_a_row = int(state_dict.get("in_a_row", 0))
        self.total = int(state_dict.get("total", 0))
        self.losses = deque((float(v) for v in state_dict.get("losses", [])), maxlen=LOSS_WINDOW)
