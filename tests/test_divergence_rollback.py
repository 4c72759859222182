"""A diverging run keeps usable weights: a step whose update explodes (lr=1e20) or whose loss jumps is rolled back
(weights, optimiser state, EMA copy, codebook), the run stops with the healthy state in last.ckpt, and resuming
with a sane rate trains on. Starving data (every FLAC corrupt) stops in bounded time, every dropped crop counted."""

from __future__ import annotations

import json
import time
import weakref

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
import webdataset as wds
from prior_settings import COMMON, PRIOR, VQVAE

from jukebox_pl.cli import main
from jukebox_pl.data import pipeline
from jukebox_pl.data.pipeline import mix_tracks
from jukebox_pl.errors import DivergedError
from jukebox_pl.training import finite
from jukebox_pl.training.finite import FiniteGuard, predicted_update
from jukebox_pl.vqvae.bottleneck import Bottleneck

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = [
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "run.log_audio_every_n_steps=0",
]


def train(*args: str) -> list[str]:
    return ["train", *args]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("jukebox-pl ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def saved(path) -> dict:
    return torch.load(path, weights_only=True)


def largest_weight(state: dict, prefix: str) -> float:
    return max(float(v.abs().max()) for k, v in state.items() if k.startswith(prefix) and v.is_floating_point())


def test_lr_1e20_stops_with_healthy_weights_that_encode_and_resume_with_a_sane_rate(shards, tmp_path, capsys):
    run = tmp_path / "run"
    stage = ["vqvae", "--level", "bottom", "--preset", "tiny", "--run", str(run), "--data", str(shards)]
    args = VQVAE + FAST + ["vqvae.optim.lr=1e20", "trainer.max_steps=50", "run.max_nonfinite_steps_in_a_row=3"]
    with pytest.warns(UserWarning, match=r"the step is rolled back"):
        assert main(train(*stage, *args)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "3 training steps in a row (up to step 3) were rolled back" in line and "run.max_update_ratio" in line
    assert "--resume vqvae.optim.lr=" in line
    last = run / "vqvae_bottom" / "checkpoints" / "last.ckpt"
    state = saved(last)["state_dict"]
    assert largest_weight(state, "model.encoder") < 10 and largest_weight(state, "model.decoder") < 10
    assert bool(state["model.bottleneck.initialised"])  # the forward passes (healthy weights) trained the codebook

    clip = tmp_path / "clip.wav"
    t = np.arange(22050, dtype=np.float32) / 22050
    sf.write(clip, 0.5 * np.sin(2 * np.pi * 220 * t * (1 + t)), 22050)
    assert main(["encode", "--ckpt", str(last), "--audio", str(clip), "--out", str(tmp_path / "c.pt")]) == 0
    codes = saved(tmp_path / "c.pt")["codes"]["bottom"]
    assert codes.unique().numel() > 1, "one code everywhere: the weights are ruined"

    assert main(train(*stage, "--resume", "vqvae.optim.lr=3e-4", "trainer.max_steps=6")) == 0
    resumed = saved(last)
    assert resumed["global_step"] == 6
    guard = next(v for k, v in resumed["callbacks"].items() if "FiniteGuard" in k)
    assert guard["in_a_row"] == 0 and guard["total"] == 3, "a step of the resumed run was rolled back"
    assert all(np.isfinite(guard["losses"])) and len(guard["losses"]) == 3
    assert resumed["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 3e-4
    assert largest_weight(resumed["state_dict"], "model.") < 100


def test_a_prior_at_lr_1e20_stops_with_healthy_weights_and_ema_and_resumes(shards, tmp_path, capsys):
    run = tmp_path / "run"
    vq = ["vqvae", "--level", "top", "--preset", "tiny", "--run", str(run), "--data", str(shards)]
    assert main(train(*vq, *VQVAE, *COMMON, *FAST[:1], "trainer.max_steps=1")) == 0
    stage = ["prior", "--level", "top", "--preset", "tiny", "--run", str(run), "--data", str(shards)]
    args = VQVAE + PRIOR + COMMON + FAST + ["prior.top.optim.lr=1e20", "run.max_nonfinite_steps_in_a_row=2"]
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"the step is rolled back"):
        assert main(train(*stage, *args, "trainer.max_steps=20")) == 2
    assert "2 training steps in a row (up to step 2) were rolled back" in one_error_line(capsys.readouterr().err)
    last = run / "prior_top" / "checkpoints" / "last.ckpt"
    state = saved(last)["state_dict"]
    assert largest_weight(state, "model.") < 100 and largest_weight(state, "ema_model.") < 100
    assert main(train(*stage, "--resume", "prior.top.optim.lr=3e-4", "trainer.max_steps=4")) == 0
    resumed = saved(last)
    guard = next(v for k, v in resumed["callbacks"].items() if "FiniteGuard" in k)
    assert resumed["global_step"] == 4 and guard["in_a_row"] == 0 and guard["total"] == 2


class Batches(torch.utils.data.IterableDataset):
    """Batches of a regression problem; batch i is multiplied by scale.get(i, 1)."""

    def __init__(self, n: int, scale: dict[int, float] | None = None):
        self.n, self.scale = n, scale or {}

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(self.n):
            yield torch.randn(8, 2, generator=g) * self.scale.get(i, 1.0)


class WithCodebook(pl.LightningModule):
    """A linear layer feeding an EMA codebook (buffers updated in the forward pass, like the VQ-VAE's); the
    learning rate of each batch is `rates.get(batch_idx, 0.01)`; the state after every batch is recorded."""

    def __init__(self, rates: dict[int, float] | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.bottleneck = Bottleneck(4, 2)
        self.rates = rates or {}
        self.after: dict[int, dict] = {}

    def training_step(self, batch, batch_idx):
        for group in self.optimizers().param_groups:
            group["lr"] = self.rates.get(batch_idx, 0.01)
        out = self.bottleneck(self.layer(batch)[:, :, None])
        return self.layer(batch).pow(2).mean() + out.commit_loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        opt = self.optimizers().optimizer
        moments = [s["exp_avg"].clone() for s in opt.state.values()] if opt.state else []
        self.after[batch_idx] = {
            "state": {k: v.clone() for k, v in self.state_dict().items()},
            "moments": moments,
        }

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def fit(module, data, guard, tmp_path):
    trainer = pl.Trainer(max_steps=data.n, callbacks=[guard], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_exploding_update_is_rolled_back_with_the_optimizer_state_and_training_goes_on(tmp_path):
    torch.manual_seed(0)
    model, guard = WithCodebook({3: 1e20}), FiniteGuard(max_in_a_row=2)
    with pytest.warns(UserWarning, match=r"step 4: an update of .* x the weights' norm .*rolled back"):
        fit(model, Batches(8), guard, tmp_path)
    before, bad = model.after[2], model.after[3]
    weights = {k: v for k, v in bad["state"].items() if k.startswith("layer.")}
    assert same(weights, {k: v for k, v in before["state"].items() if k.startswith("layer.")})
    assert all(torch.equal(a, b) for a, b in zip(bad["moments"], before["moments"], strict=True))
    # the codebook's forward-pass update ran on the healthy weights: it stays
    assert not torch.equal(bad["state"]["bottleneck.k_sum"], before["state"]["bottleneck.k_sum"])
    assert not same(model.after[4]["state"], bad["state"]) and guard.total == 1 and guard.in_a_row == 0


def test_a_loss_jump_rolls_back_the_codebook_too(tmp_path):
    torch.manual_seed(0)
    model, guard = WithCodebook(), FiniteGuard(max_in_a_row=2)
    with pytest.warns(UserWarning, match=r"step 13: a loss of .* over run.max_loss_jump=1000 x the recent median"):
        fit(model, Batches(15, {12: 1e4}), guard, tmp_path)
    assert same(model.after[12]["state"], model.after[11]["state"]), "the corrupt batch moved the state"
    assert guard.total == 1 and guard.in_a_row == 0 and len(guard.losses) == 14


def test_the_first_step_rolled_back_leaves_no_optimizer_state_and_a_fresh_codebook(tmp_path):
    model, guard = WithCodebook({0: 1e20, 1: 1e20}), FiniteGuard(max_in_a_row=2)
    stop = r"2 training steps in a row \(up to step 2\) were rolled back"
    with pytest.raises(DivergedError, match=stop), pytest.warns(UserWarning):
        fit(model, Batches(4), guard, tmp_path)
    assert model.after[0]["moments"] == []  # no Adam state: as before the first step
    assert torch.isfinite(model.layer.weight).all() and float(model.layer.weight.detach().abs().max()) < 10


class Peak(torch.utils._python_dispatch.TorchDispatchMode):
    """Measures the peak bytes of the tensors that the ops run inside it allocate and keep alive."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = torch.utils._pytree.tree_leaves
        inputs = {t.untyped_storage().data_ptr() for t in leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in leaves(out):
            key = t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) else None
            if key is not None and key not in inputs and key not in self.live:
                self.live[key] = t.untyped_storage().nbytes()
                self.now += self.live[key]
                self.peak = max(self.peak, self.now)
                weakref.finalize(t, self._free, key)
        return out


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 40), torch.nn.Tanh(), torch.nn.Linear(40, 3), torch.nn.Linear(3, 3))


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"weight_decay": 0.1, "amsgrad": True}),
        (torch.optim.Adam, {"weight_decay": 0.05, "maximize": True, "foreach": False}),
        (torch.optim.AdamW, {"weight_decay": 0.3}),
        (torch.optim.AdamW, {"weight_decay": 0.01, "amsgrad": True, "maximize": True, "betas": (0.5, 0.9)}),
    ],
)
def test_the_predicted_update_is_the_one_adam_makes(kind, options):
    """First step (empty state), later steps, a weight that joins late (fresh and stepped ones in one group), a
    weight without gradient, two groups, and weights cut into chunks smaller than one weight."""
    model = net()
    first, second, late = list(model[0].parameters()), list(model[2].parameters()), list(model[3].parameters())
    opt = kind([{"params": first}, {"params": second + late, "lr": 0.3}], lr=0.05, **options)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g) * (10.0 ** (step - 2))
        if step < 3:
            for p in late:
                p.grad = None  # no gradient: the optimiser skips it (and it has no state until step 3)
        predicted = predicted_update(opt, limit=50)  # weight 0 has 320 elements: cut in 7
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        made = sum(float((p.detach().double() - b.double()).pow(2).sum()) for p, b in zip(model.parameters(), before))
        assert float(predicted) == pytest.approx(made, rel=1e-4), f"step {step + 1}"


def test_the_guard_keeps_no_copy_of_the_weights_and_predicts_in_bounded_chunks(tmp_path, monkeypatch):
    class Big(WithCodebook):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(2, 4000)

        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) + self.hidden(batch).pow(2).mean()

    model, guard = Big(), FiniteGuard()
    limit = 1000
    monkeypatch.setattr(finite, "CHUNK_ELEMENTS", limit)
    monkeypatch.setattr(finite.predicted_update, "__defaults__", (limit,))
    fit(model, Batches(4), guard, tmp_path)
    held, seen = 0, set()

    def count(value, depth=0):
        nonlocal held
        if isinstance(value, torch.Tensor):
            if value.untyped_storage().data_ptr() not in seen:
                seen.add(value.untyped_storage().data_ptr())
                held += value.untyped_storage().nbytes()
        elif isinstance(value, (list, tuple, set, deque_type, dict)) and depth < 4:
            for item in value.values() if isinstance(value, dict) else value:
                count(item, depth + 1)
        elif hasattr(value, "__dict__") and depth < 4 and not isinstance(value, torch.nn.Module):
            count(vars(value), depth + 1)

    deque_type = type(guard.losses)
    count({k: v for k, v in vars(guard).items() if k != "_buffers"})
    copies = guard._buffers.saved
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert held < 1000 and sum(t.numel() * t.element_size() for t in copies) == buffers < weights / 100
    opt = model.optimizers().optimizer
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with Peak() as peak:
        predicted_update(opt)
    assert 0 < peak.peak <= 4 * limit * 4 + 4096 < weights / 2, peak.peak  # at most 4 chunk-sized temporaries


def bad_flac_shards(folder, shards: int = 2, tracks: int = 3) -> str:
    """Shards whose every FLAC is garbage (the json is fine)."""
    folder.mkdir()
    for s in range(shards):
        with wds.TarWriter(str(folder / f"train-{s:06d}.tar")) as w:
            for i in range(tracks):
                info = {"key": f"t{s}_{i}", "artist": "A", "genres": ["rock"], "sample_rate": 22050,
                        "samples": 99225, "channels": 1}  # fmt: skip
                w.write({"__key__": f"t{s}_{i}", "flac": b"not a flac" * 500, "json": json.dumps(info).encode()})
    return f"{folder}/train-{{000000..{shards - 1:06d}}}.tar"


@pytest.mark.parametrize("workers", [0, 1])
def test_every_flac_corrupt_stops_in_seconds_counting_every_crop(tmp_path, capsys, monkeypatch, workers):
    tried = []

    def counted(*args, **kwargs):  # every crop the tracks offer to the example stage
        stage = mix_tracks(*args, **kwargs)
        return lambda plans: (tried.append(c["where"]) or c for c in stage(plans))

    monkeypatch.setattr(pipeline, "mix_tracks", counted)
    urls = bad_flac_shards(tmp_path / "bad")
    run = tmp_path / "run"
    stage = ["vqvae", "--level", "bottom", "--preset", "tiny", "--run", str(run)]
    args = VQVAE + FAST + [f"data.train_urls={urls}", "trainer.max_steps=2", f"data.num_workers={workers}"]
    start = time.monotonic()
    assert main(train(*stage, *args)) == 2  # the default data.starve_seconds (600) and max_skips_in_a_row (1000)
    took = time.monotonic() - start
    line = one_error_line(capsys.readouterr().err)
    assert took < 30, f"took {took:.0f} s"
    assert "training data starved: every one of the 6 tracks" in line and "train-000000.tar" in line, line
    assert "train-000001.tar" in line and "unusable crop" in line
    listed = (run / "vqvae_bottom" / "skipped.tsv").read_text().splitlines()
    assert len(listed) > 6 and all("\tunusable crop\t" in entry for entry in listed)  # not one per track
    if workers == 0:  # (a worker's crops are counted in the worker)
        assert len(listed) == len(tried)  # every crop tried is counted and listed


@pytest.mark.parametrize(("ratio", "reads"), [(10.0, 0), (0.0, 6)])
def test_a_predicted_step_is_not_read_again_after_it_is_taken(tmp_path, monkeypatch, ratio, reads):
    """The hot path: an accepted Adam step whose predicted bound fits the dtype skips the pass over every weight
    after the step; with the update check off, each step's weights are read for non-finite values."""
    torch.manual_seed(0)
    calls = []
    real = FiniteGuard._safety_net
    monkeypatch.setattr(FiniteGuard, "_safety_net", lambda self, *a: (calls.append(1), real(self, *a))[1])
    fit(WithCodebook(), Batches(6), FiniteGuard(max_update_ratio=ratio), tmp_path)
    assert len(calls) == reads
