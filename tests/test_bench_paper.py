"""bench/paper.py measures what it says (a transparent codec is perfect, a low-pass one loses the high band, code
use is counted per level) and runs every part end to end on generated shards."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from prior_settings import PRIOR, VQVAE

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "paper.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def load_bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clips() -> list[torch.Tensor]:
    torch.manual_seed(0)
    t = torch.arange(8192) / 22050
    tones = [torch.sin(2 * torch.pi * f * t) + 0.3 * torch.sin(2 * torch.pi * 5 * f * t) for f in (440, 900, 1300)]
    return [torch.stack(tones)[:, None] * 0.3 + 0.01 * torch.randn(3, 1, 8192)]


def test_held_out_figures_of_a_transparent_and_a_low_pass_codec():
    paper = load_bench()
    held = paper.HeldOut(_clips(), 22050, high_hz=4000)
    assert held.seconds == pytest.approx(3 * 8192 / 22050)
    codes = [torch.tensor([[0, 1, 1, 2]] * 3), torch.tensor([[5, 5]] * 3)]
    perfect = held.measure(lambda x: (x, codes), l_bins=8)
    assert perfect["sc_db"] < -100 and perfect["high_band_db"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["si_sdr"] > 50
    assert perfect["codes_used_level0"] == 3 and perfect["codes_used_level1"] == 1
    assert perfect["perplexity_level1"] == pytest.approx(1.0) and perfect["unigram_bits_level0"] == pytest.approx(1.5)

    def low_pass(x):  # a 16-sample moving average: the high band is gone, the low band stays
        kernel = torch.ones(1, 1, 16) / 16
        return torch.nn.functional.conv1d(x, kernel, padding=8)[..., : x.shape[-1]], codes[:1]

    lossy = held.measure(low_pass, l_bins=8)
    assert lossy["high_band_db"] < -10 and -20 < lossy["sc_db"] < 0
    assert "codes_used" in lossy and "codes_used_level0" not in lossy  # one level: no suffix


def test_targets_say_met_or_missed_by_how_much():
    paper = load_bench()
    curve = [{"sc_db": 2.0, "codes_used": 128, "perplexity": 90}, {"sc_db": -5.0, "codes_used": 70, "perplexity": 20}]
    lines = paper.targets(
        {"levels": {"top": {"curve": curve, "l_bins": 128}}, "priors": {"top": {"gain": 0.12}, "middle": {"gain": 0}}}
    )
    assert lines == [
        "top: codes used 70 (target >= 64): met",
        "top: perplexity 20 (target >= 32): missed",
        "top: dB below untrained 7.0 (target >= 6): met",
        "top prior: 12.0% below the unigram entropy (target >= 10%): met",
    ]


SMALL = [
    *VQVAE,
    "vqvae.l_bins=16",
    "vqvae.depth=1",
    "vqvae.emb_width=8",
    "vqvae.sample_length=4096",
    *(p for p in PRIOR if p.startswith("prior.top.")),
    "data.epoch_length=8",
    "trainer.limit_val_batches=1",
]


@pytest.mark.slow
def test_every_part_runs_on_generated_shards(shards, tmp_path, monkeypatch):
    paper = load_bench()
    out = tmp_path / "paper.json"
    argv = ["paper.py", "--data", str(shards), "--levels", "top", "--steps", "4", "--ablation-steps", "4",
            "--prior-steps", "2", "--codebook-sizes", "8", "--clips", "2", "--clip-seconds", "0.4",
            "--work", str(tmp_path / "work"), "--json", str(out), "--override", *SMALL]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    paper.main()
    result = json.loads(out.read_text())
    top = result["levels"]["top"]
    assert [r["step"] for r in top["curve"]] == [0, 1, 2, 3, 4]  # untrained, then every steps / 10 (at least 1)
    assert set(result["ablations"]["runs"]) == {"baseline", "restarts off", "spectral loss off", "codebook 8"}
    assert all(run["curve"][-1]["step"] == 4 for run in result["ablations"]["runs"].values())
    assert result["ablations"]["runs"]["codebook 8"]["curve"][-1]["codes_used"] <= 8
    hier = result["ablations"]["hierarchical"]["curve"][-1]
    assert {"codes_used_level0", "codes_used_level1", "codes_used_level2"} <= set(hier)
    assert set(result["ablations"]["hierarchical"]["scrambled_level_db"]) == {"bottom", "middle", "top"}
    assert set(result["priors"]) == {"top", "top (no labels)"}
    for row in result["priors"].values():
        assert row["bits_per_token"] > 0 and row["unigram_bits"] == top["curve"][-1]["unigram_bits"]
    assert len(result["targets"]) == 4 and result["meta"]["steps"] == 4
    tables = paper.report(result)
    assert "| top | 4 |" in tables and "| restarts off |" in tables and "| top (no labels) |" in tables
    assert "| middle | - |" in tables  # separated middle level not trained here; the hierarchical one was
