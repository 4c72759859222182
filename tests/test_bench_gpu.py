"""bench/gpu.py runs anywhere: without a GPU it says so and exits 0; --dry-run runs every measurement on the CPU
with scaled-down stand-ins, so the GPU script cannot rot on machines that have none (CI never has one)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_without_a_gpu_it_says_so_and_exits_0():
    proc = run(CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("no GPU")


@pytest.mark.slow
def test_dry_run_builds_every_shape_and_runs_every_measurement_on_the_cpu():
    proc = run("--dry-run", "--batches", "1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["parameters"]) == {"prior_5b", "prior_1b_lyrics", "upsampler_level_0"}
    assert result["parameters"]["prior_5b"] > 5e9 and result["parameters"]["upsampler_level_0"] > 8e8
    captured = {f"{s}_b{b}" for s in result["parameters"] for b in (1, 2)}
    assert captured | {f"{s}_b1_dynamic" for s in result["parameters"]} == set(result["decoding"])
    assert {result["decoding"][k]["mode"] for k in captured} == {"static"}  # the graph's step, eager on a CPU
    for r in result["decoding"].values():
        assert r["tokens_per_s_total"] > 0 and r["roofline_fraction"] > 0 and r["cache_bytes"] > 0
    assert result["song"]["b1"]["song"] > 0
    assert result["logits"]["fp32_vs_reference_max_abs_logit"] < 1e-4
    assert result["logits"]["argmax_agreement"] > 0.9
    assert [r["checkpoint_res"] for r in result["training"]] == [False, True]
