"""SIGTERM and SIGINT stop a training run cleanly: at a step boundary, with `last.ckpt` saved, exiting 143/130.

Clusters preempt with SIGTERM, people press Ctrl-C; both must leave a checkpoint that resumes to exactly the
run that would have been. A signal that arrives during a step is honoured when the step ends (the weights,
codebook and data position then agree); one that arrives between steps (waiting for data, validating) stops at
once, since that is a boundary already. With several processes the ranks first agree, at the end of every
step, whether any of them was signalled, so they all save the same step together; a rank that waits between
steps (e.g. for data that never comes) stops on its own after `grace_seconds`, without saving, leaving the last
periodic `last.ckpt`. A second signal stops at once. Under SLURM, SIGUSR1 (`--signal=USR1@90`) stops the same
way and then requeues the job (`jukebox_pl.training.slurm`).
"""

from __future__ import annotations

import _thread
import signal
import threading
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_info
from pytorch_lightning.callbacks import Checkpoint

from jukebox_pl.errors import StopRequested

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(Checkpoint):
    """Installs SIGTERM/SIGINT handlers for the duration of training (a `Checkpoint` subclass, so Lightning
    runs its step-end hook after ModelCheckpoint's: a step counts as ended once its checkpoints are written)."""

    def __init__(self, last: str | Path, grace_seconds: float = 30.0, requeue: bool = False):
        self.last = Path(last)
        self.signals = SIGNALS + ((signal.SIGUSR1,) if requeue else ())
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self.in_step = False
        self.saved = False
        self._trainer = None
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    # -- handlers --------------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning installs its own SIGTERM handler just before training starts; this one replaces it while
        # training runs (and forwards the signal to launched child processes as Lightning's does).
        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer = trainer
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        trainer = self._trainer
        again = self.signum is not None
        self.signum = signum
        launcher = getattr(trainer.strategy, "launcher", None) if trainer is not None else None
        if not again and launcher is not None and hasattr(launcher, "kill") and trainer.is_global_zero:
            launcher.kill(signum)
        single = trainer is None or trainer.world_size == 1
        if again or (not self.in_step and single):
            raise self._stop(at_boundary=not self.in_step)
        rank_zero_info(f"{signal.Signals(signum).name} received: stopping after this step, saving {self.last}")
        if not self.in_step and self._timer is None:  # a rank waiting between steps: give the others time
            self._timer = threading.Timer(self.grace_seconds, _thread.interrupt_main, args=(signum,))
            self._timer.daemon = True
            self._timer.start()

    def _stop(self, at_boundary: bool) -> StopRequested:
        name = signal.Signals(self.signum).name
        step = self._trainer.global_step if self._trainer is not None else 0
        self.saved = False
        err = StopRequested(f"stopped by {name} at step {step}", self.signum)
        err.at_boundary = at_boundary
        return err

    # -- step boundaries -------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.in_step = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same step, or none does
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            if self.signum is None:
                self.signum = signal.SIGTERM  # another rank was signalled
            self._cancel_timer()
            trainer.save_checkpoint(self.last, weights_only=False)
            err = self._stop(at_boundary=True)
            self.saved = True
            self._requeue(trainer)
            raise err
        self.in_step = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        """A stop raised between steps of a single-process run saves here (a boundary state)."""
        if not isinstance(exception, StopRequested) or self.saved:
            return
        if trainer.world_size == 1 and trainer.global_step > 0 and getattr(exception, "at_boundary", False):
            trainer.save_checkpoint(self.last, weights_only=False)
            self.saved = True
            self._requeue(trainer)

    def _requeue(self, trainer) -> None:
        """After a SIGUSR1 stop under SLURM (checkpoint saved), rank 0 requeues the job."""
        if self.signum == signal.SIGUSR1 and signal.SIGUSR1 in self.signals and trainer.is_global_zero:
            from jukebox_pl.training.slurm import requeue

            requeue()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._cancel_timer()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
