"""The fixture script's own recipes reproduce what the committed fixtures record, without a reference checkout."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils._device

SCRIPT = Path(__file__).parent / "fixtures" / "make_reference_fixtures.py"
FIX = Path(__file__).parent / "fixtures" / "openai_jukebox"
spec = importlib.util.spec_from_file_location("make_reference_fixtures", SCRIPT)
mrf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mrf)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_vqvae_input_and_bandwidth_match_committed():
    io = torch.load(FIX / "small_vqvae" / "io.pt", weights_only=True)
    x = mrf.vqvae_input()
    assert torch.equal(x, io["x"])
    recorded = json.loads((FIX / "small_vqvae" / "meta.json").read_text())["hparams"]["bandwidth"]
    for key, value in mrf.bandwidth(x).items():
        assert value == pytest.approx(recorded[key], rel=1e-12)


def test_prior_input_matches_committed():
    assert torch.equal(mrf.prior_input(), torch.load(FIX / "small_prior_w128_d6" / "io.pt", weights_only=True)["z"])


def test_features_inputs_match_committed():
    io = torch.load(FIX / "features_top_w64_d6" / "io.pt", weights_only=True)
    assert torch.equal(mrf.features_input(), io["z"])
    rows = [
        [total, offset, 512 * mrf.TOP_RAW_TO_TOKENS, artist, *genres, *[-1] * (5 - len(genres))]
        for total, offset, artist, genres in mrf.features_label_ids()
    ]
    assert io["y"].tolist() == rows
    assert rows[0][:2] == [int(62 * 22050) // 256 * 256, 0] and rows[1][:2] == [30 * 22050 // 256 * 256, 110080]


def test_recorded_texts_match_meta():
    meta = json.loads((FIX / "small_prior_w128_d6" / "meta.json").read_text())
    assert meta["perturbation"] == mrf.PERTURBATION and meta["note"] == mrf.PRIOR_NOTE
    assert meta["fixture_overrides"] == mrf.PRIOR_OVERRIDES
    assert meta["shims"][: len(mrf.SHIMS)] == mrf.SHIMS  # then "S7 fire stub" where fire is not installed
    assert json.loads((FIX / "small_vqvae" / "meta.json").read_text())["note"] == mrf.VQVAE_NOTE
    features = json.loads((FIX / "features_top_w64_d6" / "meta.json").read_text())
    assert features["note"] == mrf.FEATURES_NOTE and features["perturbation"] == mrf.PERTURBATION
    assert features["fixture_overrides"] == json.loads(json.dumps(mrf.FEATURES_OVERRIDES))
    assert features["seeds"] == {k: mrf.SEEDS[k] for k in ("build", "prior_perturbation", "features_input")}


class Conv1D(torch.nn.Module):  # the reference's (n_in, n_out) layout, by class name
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n_in, n_out))
        self.b = torch.nn.Parameter(torch.zeros(n_out))


def test_perturbation_scales_and_order():
    model = torch.nn.Module()
    model.start_token = torch.nn.Parameter(torch.zeros(1, 4))
    model.emb = torch.nn.Embedding(10, 4)
    model.proj = Conv1D(4, 6)
    model.conv = torch.nn.Conv1d(3, 5, 7)
    model.ln = torch.nn.LayerNorm(4)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    mrf.perturb(model, seed=5)
    g = torch.Generator().manual_seed(5)
    scales = {
        "start_token": 0.5,
        "emb.weight": 0.1,
        "proj.w": 0.5 / 2,
        "proj.b": 0.1,
        "conv.weight": 0.5 / math.sqrt(21),
        "conv.bias": 0.1,
        "ln.weight": 0.1,
        "ln.bias": 0.1,
    }
    for name, p in model.named_parameters():
        assert torch.equal(p, scales[name] * torch.randn(p.shape, generator=g)), name


def test_key_lines_reproduce_committed_list():
    state = torch.load(FIX / "small_prior_w128_d6" / "state_dict.pt", weights_only=True)
    assert mrf.key_lines(state) == (FIX / "keys" / "fixture_small_prior_w128_d6.txt").read_text()
    lines = mrf.key_lines({"a": torch.zeros(2, 3), "k": torch.zeros(1)}, params={"a"}).splitlines()
    assert lines == ["a\t(2, 3)\ttorch.float32\tparam", "k\t(1,)\ttorch.float32\tbuffer"]


def test_differences_report_values_and_flips(capsys):
    old = {"x": torch.tensor([1.0, 2.0]), "codes": [torch.tensor([1, 2, 3])], "n": 1.5}
    new = {"x": torch.tensor([1.0, 2.0 + 4e-6]), "codes": [torch.tensor([1, 9, 3])], "n": 1.5}
    assert not mrf.report("f", mrf.differences(new, old))
    out = capsys.readouterr().out
    assert "f:x: max abs diff 4.05e-06 OUTSIDE" in out and "1 differing integers" in out
    assert mrf.report("f", mrf.differences(old, old))


def test_help_and_bad_checkout(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--reference" in done.stdout and "--check" in done.stdout
    for checkout in (tmp_path / "absent", tmp_path):
        assert mrf.main(["--reference", str(checkout)]) == 2
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--reference", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "jukebox/hparams.py" in done.stderr


def test_commit_recorded(tmp_path):
    assert mrf.reference_commit(tmp_path, "abc") == "abc"
    assert mrf.reference_commit(tmp_path, None) == "unknown"


@pytest.fixture
def cpu_factories():
    """The script's S4 wrappers installed for one test, then torch's own factories put back."""
    saved = {name: getattr(torch, name) for name in mrf.FACTORIES}
    mrf.install_cpu_factories()
    torch.utils._device._device_constructors.cache_clear()  # as in the script: first looked up while wrapped
    yield
    for name, factory in saved.items():
        setattr(torch, name, factory)
    torch.utils._device._device_constructors.cache_clear()


def test_cuda_factories_make_cpu_tensors(cpu_factories):
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.randint(0, 5, (3,), device="cuda").device.type == "cpu"


def test_key_lists_build_on_meta_without_allocating(cpu_factories):
    # the meta-device context knows only torch's own factories: through the S4 wrappers a model's weights were real
    # (the 5B prior's 20 GB ended the first --keys run), so the key lists are built with the wrappers taken off
    with torch.device("meta"):
        assert not torch.zeros(2).is_meta  # what went wrong
    with mrf.plain_factories(), torch.device("meta"):
        assert torch.zeros(4096, 4096).is_meta and torch.empty(3).is_meta
        assert torch.nn.Linear(4800, 4800).weight.is_meta
    assert hasattr(torch.zeros, "__wrapped__")  # and put back after
