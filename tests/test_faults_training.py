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
from prior_settings import VQVAE

from jukebox_pl.errors import DataStarvedError, DivergedError, StopRequested
from jukebox_pl.stages.train_vqvae import train_vqvae

TINY = VQVAE + [
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
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(StopRequested, match=expected) as stop:
        train_vqvae(tmp_path / "b", "bottom", "tiny", str(shards), common, callbacks=[first, SignalAt(4, inside)])
    assert stop.value.exit_code == 143
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers given back
    train_vqvae(tmp_path / "b", "bottom", "tiny", str(shards), [], resume=True, callbacks=[second])
    assert sorted(first.steps) == list(range(1, stop_step + 1))
    assert sorted(second.steps) == list(range(stop_step + 1, 9))
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
    cmd = [*CLI_TRAIN, "--run", str(tmp_path / "run"), *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _wait_for(tmp_path / "run" / "vqvae_bottom" / "skipped.tsv", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err
    last = err.strip().splitlines()[-1]  # nothing to resume from: the advice is to start again, not to resume
    assert "nothing was saved yet, so run the same command again" in last and "--resume" not in last, last


@pytest.mark.parametrize("workers", [0, 1])
def test_starving_data_stops_naming_the_shards_and_reasons(tmp_path, workers):
    """Also from a DataLoader worker, whose errors torch re-raises wrapped in the worker's traceback."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"s{i}.tar").write_bytes(b"\0" * 3000)
    args = TINY + [f"data.train_urls={bad}/s{{0..1}}.tar", "data.max_skips_in_a_row=50", "trainer.max_steps=2"]
    args += ["trainer.limit_val_batches=0", f"data.num_workers={workers}"]
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
    # lr=1e6: the first update throws the weights far away; it is rolled back, and so is every one after it
    match = r"3 training steps in a row .* rolled back, the last for an update of .*run\.max_update_ratio"
    with pytest.raises(DivergedError, match=match), pytest.warns(UserWarning):
        train_vqvae(run, "bottom", "tiny", str(shards), args)
    folder = run / "vqvae_bottom" / "checkpoints"
    for path in folder.glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path
    assert (folder / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.ddp
def test_sigterm_stops_both_ranks_of_a_ddp_run_at_the_same_saved_step(shards, tmp_path):
    """SIGTERM to the launching process (rank 0) reaches rank 1 too; the ranks agree at the end of a step, save
    last.ckpt together and exit 143; the run resumes on two ranks."""
    run = tmp_path / "run"
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "data.epoch_length=8"]
    args = TINY + ddp + ["trainer.max_steps=100000", "run.checkpoint_every_n_steps=2"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [*CLI_TRAIN, "--run", str(run), "--data", str(shards), *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    last = run / "vqvae_bottom" / "checkpoints" / "last.ckpt"
    _wait_for(last, proc, seconds=240)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    resumed = [*CLI_TRAIN, "--run", str(run), "--data", str(shards), "--resume", f"trainer.max_steps={stopped_at + 2}"]
    done = subprocess.run(resumed, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == stopped_at + 2


@pytest.mark.slow
def test_a_damaged_last_ckpt_falls_back_to_the_newest_intact_numbered_one(shards, tmp_path):
    run = tmp_path / "run"
    train_vqvae(run, "bottom", "tiny", str(shards), TINY + ["trainer.max_steps=4", "run.checkpoint_every_n_steps=2"])
    folder = run / "vqvae_bottom" / "checkpoints"
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    seen = Record()
    with pytest.warns(UserWarning, match=r"last\.ckpt is damaged .*; resuming from .*step00000004\.ckpt \(step 4\)"):
        train_vqvae(run, "bottom", "tiny", str(shards), ["trainer.max_steps=5"], resume=True, callbacks=[seen])
    assert sorted(seen.steps) == [5]


def _checkpoint_folder(tmp_path: Path, names: dict[str, bytes | None]) -> Path:
    folder = tmp_path / "checkpoints"
    folder.mkdir(parents=True)
    for name, content in names.items():
        if content is None:
            torch.save(
                {"state_dict": {"w": torch.ones(3)}, "global_step": int(name[4:12]) if name[4:12].isdigit() else 0},
                folder / name,
            )
        else:
            (folder / name).write_bytes(content)
    return folder


def test_resume_picks_last_then_the_newest_intact_step_file(tmp_path):
    from jukebox_pl.errors import MissingInputError, UnsafeFileError
    from jukebox_pl.training.checkpoints.resume import resume_checkpoint

    ok = _checkpoint_folder(tmp_path / "ok", {"last.ckpt": None, "step00000002.ckpt": None})
    assert resume_checkpoint(ok).name == "last.ckpt"
    cut = _checkpoint_folder(
        tmp_path / "cut",
        {"last.ckpt": b"PK\x03\x04 truncated", "step00000008.ckpt": b"", "step00000006.ckpt": None,
         "step00000004.ckpt": None},
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"last\.ckpt is damaged .*resuming from .*step00000006\.ckpt \(step 6\)"):
        assert resume_checkpoint(cut).name == "step00000006.ckpt"
    nothing = _checkpoint_folder(tmp_path / "none", {"last.ckpt": b"garbage", "step00000002.ckpt": b"x"})
    with pytest.raises(MissingInputError, match=r"nothing to resume: .*last\.ckpt is damaged.*step00000002\.ckpt is"):
        resume_checkpoint(nothing)
    with pytest.raises(MissingInputError, match=r"last\.ckpt does not exist"):
        resume_checkpoint(_checkpoint_folder(tmp_path / "empty", {}))
    marker = tmp_path / "ran"
    crafted = _checkpoint_folder(tmp_path / "crafted", {"step00000002.ckpt": None})
    torch.save({"x": Payload(marker)}, crafted / "last.ckpt")
    with pytest.raises(UnsafeFileError, match=r"last\.ckpt is refused"):
        resume_checkpoint(crafted)  # a tampered file is refused, never silently passed over
    assert not marker.exists()


class Payload:
    """Unpickling this would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_keeps_the_saved_step_limit_and_says_so(tmp_path, caplog):
    from jukebox_pl.config.loader import load_config, save_config
    from jukebox_pl.training.runner import prepare_stage

    stage = tmp_path / "run" / "vqvae_top"
    save_config(load_config("tiny", ["trainer.max_steps=8"]), stage / "config.yaml")
    _checkpoint_folder(stage, {"last.ckpt": None})
    with caplog.at_level("INFO"):
        run = prepare_stage(tmp_path / "run", "vqvae_top", "tiny", [], resume=True)
    assert run.cfg.trainer.max_steps == 8
    assert "resuming to trainer.max_steps=8 as saved in" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        run = prepare_stage(tmp_path / "run", "vqvae_top", "tiny", ["trainer.max_steps=12"], resume=True)
    assert run.cfg.trainer.max_steps == 12 and "trainer.max_steps=12 from the command line" in caplog.text


@pytest.mark.slow
def test_non_finite_weights_are_refused_when_loaded(shards, tmp_path, capsys):
    from jukebox_pl.cli import main

    run = tmp_path / "run"
    train_vqvae(run, "bottom", "tiny", str(shards), TINY + ["trainer.max_steps=1"])
    last = run / "vqvae_bottom" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    saved["state_dict"]["model.bottleneck.k"][3, 0] = float("nan")
    del saved["tensor_checksums"]  # as another program would write it (ours never writes non-finite weights)
    torch.save(saved, last)
    wav = tmp_path / "a.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(4096, dtype=np.float32), 22050)
    for args in (["encode", "--ckpt", str(last), "--audio", str(wav), "--out", str(tmp_path / "c.pt")],
                 ["export", "--ckpt", str(last), "--out", str(tmp_path / "x.pt")]):  # fmt: skip
        assert main(args) == 2
        assert "non-finite weights (NaN or infinity) in 1 tensor(s): model.bottleneck.k" in capsys.readouterr().err
    with pytest.raises(DivergedError, match="non-finite weights"):
        train_vqvae(run, "bottom", "tiny", str(shards), ["trainer.max_steps=2"], resume=True)


class NaNAt(torch.utils.data.IterableDataset):
    """Batches of a regression problem; batch `bad` holds NaN."""

    def __init__(self, bad: set[int]):
        self.bad = bad

    def __iter__(self):
        for i in range(6):
            x = torch.full((4, 2), float("nan")) if i in self.bad else torch.randn(4, 2)
            yield x


class Linear(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.weights: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights[batch_idx] = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)


def test_a_non_finite_step_is_skipped_and_counted_and_training_goes_on(tmp_path):
    from jukebox_pl.training.finite import FiniteGuard

    guard = FiniteGuard(max_in_a_row=2)
    model = Linear()
    trainer = pl.Trainer(max_steps=6, callbacks=[guard], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.warns(UserWarning, match=r"non-finite loss; the step is rolled back .*1 in a row, 1 in all"):
        trainer.fit(model, torch.utils.data.DataLoader(NaNAt({2}), batch_size=None))
    assert torch.equal(model.weights[2], model.weights[1]), "the NaN step changed the weights"
    assert not torch.equal(model.weights[3], model.weights[2]) and torch.isfinite(model.weights[5]).all()
    assert guard.total == 1 and guard.in_a_row == 0
    stopper = FiniteGuard(max_in_a_row=2)
    trainer = pl.Trainer(max_steps=6, callbacks=[stopper], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(DivergedError, match="2 training steps in a row"), pytest.warns(UserWarning):
        trainer.fit(Linear(), torch.utils.data.DataLoader(NaNAt({1, 2}), batch_size=None))


class WithSGD(Linear):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) * 1000

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=3e38)  # one step throws the weights past float32's range


def test_an_optimizer_the_guard_cannot_predict_is_warned_about_and_non_finite_weights_stop_at_once(tmp_path):
    from jukebox_pl.training.finite import FiniteGuard

    trainer = pl.Trainer(max_steps=6, callbacks=[FiniteGuard()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    stop = r"step 1: the optimiser step left non-finite values \(NaN or infinity\) in weight layer\.(weight|bias)"
    with pytest.raises(DivergedError, match=stop), pytest.warns(UserWarning, match="needs torch.optim.Adam or AdamW"):
        trainer.fit(WithSGD(), torch.utils.data.DataLoader(NaNAt(set()), batch_size=None))


def test_a_non_finite_batch_leaves_the_codebook_as_it_was():
    from jukebox_pl.vqvae.bottleneck import Bottleneck

    torch.manual_seed(0)
    b = Bottleneck(16, 4).train()
    b(torch.randn(2, 4, 32))
    before = {k: v.clone() for k, v in b.state_dict().items()}
    bad = torch.randn(2, 4, 32)
    bad[0, 1, 5] = float("inf")
    b(bad)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())
    b(torch.randn(2, 4, 32))
    assert not torch.equal(before["k_sum"], b.k_sum)
    fresh = Bottleneck(16, 4).train()
    fresh(torch.full((2, 4, 32), float("nan")))
    assert not bool(fresh.initialised), "a NaN first batch must not initialise the codebook"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_skips_are_summarised_not_logged_one_line_each(tmp_path, caplog):
    from jukebox_pl.data.skips import SkipLedger

    clock = Clock()
    listed = tmp_path / "skipped.tsv"
    ledger = SkipLedger(listed, report_seconds=60, max_in_a_row=10**9, starve_seconds=10**9, clock=clock)
    with caplog.at_level("WARNING"):
        for i in range(5000):
            clock.now = i * 0.01  # 50 s of skipping: no summary yet
            ledger.skip(f"/d/a.tar:track{i}", "wrong sample rate", "track is 44100 Hz")
            ledger.skip(f"/d/b.tar:track{i}", "missing or malformed track", "KeyError: 'json'")
        assert len(caplog.records) == 2  # the first of each kind, at once
        clock.now = 61.0
        ledger.example()
    assert len(caplog.records) == 3
    summary = caplog.records[-1].getMessage()
    assert "skipped 10000 sample(s)" in summary and "/d/a.tar: 5000 x wrong sample rate" in summary
    assert "/d/b.tar: 5000 x missing or malformed track" in summary and str(listed) in summary
    lines = listed.read_text().splitlines()
    assert len(lines) == 10000 and lines[0] == "/d/a.tar\ttrack0\twrong sample rate\ttrack is 44100 Hz"
    caplog.clear()
    with caplog.at_level("WARNING"):
        for i in range(500):  # a new broken shard every time: only the first few are logged at once
            ledger.skip(f"/d/broken{i}.tar", "unreadable shard or member", "ReadError: bad header")
    assert len(caplog.records) == 18  # 20 kinds in all, two of them seen above


def test_the_stream_starves_on_time_as_well_as_on_count():
    from jukebox_pl.data.skips import SkipLedger

    clock = Clock()
    ledger = SkipLedger(None, max_in_a_row=1000, starve_seconds=30, clock=clock)
    ledger.skip("/d/a.tar:x", "unusable crop", "too short")
    clock.now = 29
    ledger.check()
    clock.now = 31
    with pytest.raises(DataStarvedError, match=r"no usable sample for 31 s \(data.starve_seconds=30\); .*a.tar: 1 x"):
        ledger.check()
    ledger.restart_clock()
    ledger.check()  # a restarted stream (a new epoch, a worker that just started) counts from now


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # stands in for a write cut short


def test_checkpoints_are_written_atomically_and_never_with_non_finite_weights(tmp_path):
    from jukebox_pl.training.checkpoints.lightning_io import SafeCheckpointIO
    from jukebox_pl.training.checkpoints.read_write import atomic_torch_save

    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"step": 2, "x": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"step": 1} and [p.name for p in tmp_path.iterdir()] == [
        "last.ckpt"
    ], "a failed write leaves the previous file and no temporary"
    model = Linear()
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, plugins=[SafeCheckpointIO()])  # fmt: skip
    trainer.fit(model, torch.utils.data.DataLoader(NaNAt(set()), batch_size=None))
    trainer.save_checkpoint(tmp_path / "good.ckpt")
    with torch.no_grad():
        model.layer.bias.fill_(float("inf"))
    with pytest.raises(DivergedError, match=r"bad\.ckpt \(not written\) holds non-finite weights .*layer\.bias"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert (tmp_path / "good.ckpt").is_file() and not (tmp_path / "bad.ckpt").exists()
