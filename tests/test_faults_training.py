"""Training under faults: stopped by a signal and resumed it equals the uninterrupted run; diverging, it skips
non-finite steps and stops; starving, it stops naming the shards; damaged checkpoints fall back loudly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from jukebox_pl.errors import DataStarvedError, DivergedError, StopRequested
from jukebox_pl.stages.train_vqvae import train_vqvae

TINY = [
    "vqvae.l_bins=32",
    "vqvae.width=8",
    "vqvae.depth=2",
    "vqvae.sample_length=2048",
    "vqvae.batch_size=2",
    "vqvae.bandwidth_batches=1",
    "data.epoch_length=6",  # 3 batches per epoch: the runs below cross epoch boundaries
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "run.log_audio_every_n_steps=0",
    "trainer.log_every_n_steps=1",
]


class Record(pl.Callback):
    """Loss and crop keys of every training step."""

    def __init__(self):
        self.steps: dict[int, tuple] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[trainer.global_step] = (float(outputs["loss"]), list(batch["key"]), batch["audio"].sum().item())


class SignalAt(pl.Callback):
    """Sends `signum` to this process at step `step`: inside the step (before the optimiser step), or before the
    step begins (this callback runs before GracefulStop marks the step as started)."""

    def __init__(self, step: int, inside: bool, signum: int = signal.SIGTERM):
        self.step, self.inside, self.signum = step, inside, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.inside and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.inside and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def codebook(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "vqvae_bottom" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if "bottleneck" in k or k == "bandwidth"}


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "inside", "stop_step"), [(0, True, 5), (2, False, 4)])
def test_stopped_and_resumed_equals_the_uninterrupted_run(shards, tmp_path, workers, inside, stop_step):
    """Same losses, same crops and the same codebook, bit for bit: every random draw of a step is seeded from
    (seed, rank, step) and the data stream restarts at the epoch and batch it stopped in, on the same CPU
    kernels, so nothing is left to differ (a tolerance would hide a stream that resumed one batch off). A signal
    inside step 5 stops after it; one between steps 4 and 5 stops at once."""
    common = TINY + ["trainer.max_steps=8", f"data.num_workers={workers}", "run.checkpoint_every_n_steps=100"]
    whole = Record()
    train_vqvae(tmp_path / "a", "bottom", "tiny", str(shards), common, callbacks=[whole])
    first, second = Record(), Record()
    expected = rf"stopped by SIGTERM at step {stop_step}; .*last\.ckpt holds step {stop_step}"
    with pytest.raises(StopRequested, match=expected) as stop:
        train_vqvae(tmp_path / "b", "bottom", "tiny", str(shards), common, callbacks=[first, SignalAt(4, inside)])
    assert stop.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler or callable(signal.getsignal(signal.SIGTERM))
    train_vqvae(tmp_path / "b", "bottom", "tiny", str(shards), [], resume=True, callbacks=[second])
    assert sorted(first.steps) == list(range(1, stop_step + 1)) and sorted(second.steps) == list(range(stop_step + 1, 9))
    assert {**first.steps, **second.steps} == whole.steps
    a, b = codebook(tmp_path / "a"), codebook(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CLI_TRAIN = [sys.executable, "-m", "jukebox_pl.cli", "train", "vqvae", "--level", "bottom", "--preset", "tiny"]


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_and_exits_with_the_shells_code(shards, tmp_path, signum, code):
    run = tmp_path / "run"
    args = TINY + ["trainer.max_steps=100000", "run.checkpoint_every_n_steps=2"]
    proc = subprocess.Popen(
        [*CLI_TRAIN, "--run", str(run), "--data", str(shards), *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    _wait_for(run / "vqvae_bottom" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in err and "continue with --resume" in err
    saved = torch.load(run / "vqvae_bottom" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] >= 2


@pytest.mark.slow
def test_sigterm_is_honoured_while_waiting_for_data_that_never_comes(tmp_path):
    """Every shard unreadable: no step ever ends, yet SIGTERM stops the run at once (exit 143)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"s{i}.tar").write_bytes(b"not a tar file" * 100)
    args = TINY + [f"data.train_urls={bad}/s{{0..2}}.tar", "data.max_skips_in_a_row=100000000"]
    args += ["data.starve_seconds=100000", "trainer.limit_val_batches=0"]
    proc = subprocess.Popen(
        [*CLI_TRAIN, "--run", str(tmp_path / "run"), *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    _wait_for(tmp_path / "run" / "vqvae_bottom" / "skipped.tsv", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err


def test_starving_data_stops_naming_the_shards_and_reasons(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"s{i}.tar").write_bytes(b"\0" * 3000)
    args = TINY + [f"data.train_urls={bad}/s{{0..1}}.tar", "data.max_skips_in_a_row=50", "trainer.max_steps=2"]
    args += ["trainer.limit_val_batches=0"]
    with pytest.raises(DataStarvedError) as err:
        train_vqvae(tmp_path / "run", "bottom", "tiny", None, args)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    assert "50 samples in a row were unusable" in text and "s0.tar" in text and "s1.tar" in text
    listed = (tmp_path / "run" / "vqvae_bottom" / "skipped.tsv").read_text().splitlines()
    assert len(listed) >= 50 and all(line.count("\t") == 3 for line in listed)


def test_a_diverging_run_skips_non_finite_steps_then_stops(shards, tmp_path):
    run = tmp_path / "run"
    args = TINY + ["vqvae.optim.lr=1e6", "vqvae.optim.warmup_steps=0", "trainer.max_steps=200"]
    args += ["run.max_nonfinite_steps_in_a_row=3", "run.checkpoint_every_n_steps=1", "data.epoch_length=400"]
    with pytest.raises(DivergedError, match=r"3 training steps in a row .* non-finite"):
        train_vqvae(run, "bottom", "tiny", str(shards), args)
    folder = run / "vqvae_bottom" / "checkpoints"
    for path in folder.glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path
    assert (folder / "last.ckpt").is_file()
