"""bench/features.py: both approaches measure the same activations from the same export, the real 5B's memory
plan comes from the meta device, and the README table renders from the result file."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
features = importlib.import_module("features")
report = importlib.import_module("report")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_both_approaches_run_the_same_clips_from_one_export(tmp_path):
    export = features.write_export(32, 256, tmp_path / "run")
    runs = {}
    for side in ("jukebox-pl", "jukemirlib approach"):
        runs[side] = features.child({"export": str(export), "repeats": 1, "threads": 1, "side": side, "layer": 36,
                                     "batch": 2})  # fmt: skip
    ours, theirs = runs["jukebox-pl"], runs["jukemirlib approach"]
    assert ours["shape"] == theirs["shape"] == [2, 256, 32]
    assert ours["audio_seconds"] == theirs["audio_seconds"] == pytest.approx(2 * 256 * 128 / 44100)
    assert theirs["params"] > ours["params"]  # 72 blocks built against 36
    assert len(ours["times"]) == 1 and ours["rss_mb"] > 0


def test_the_real_5b_memory_plan():
    plan = {(row["layers"], row["weights"]): row for row in features.memory_plan(36)}
    whole, half = plan[(72, "fp16")], plan[(36, "fp16")]
    assert whole["params"] == 5_060_452_800  # the released file's count (its own head included)
    assert whole["weight_gb"] == pytest.approx(2 * whole["params"] / 1e9)
    assert 0.45 < half["weight_gb"] / whole["weight_gb"] < 0.55
    assert plan[(36, "int8")]["weight_gb"] < 0.6 * half["weight_gb"]
    assert half["hidden_state_mb"] == pytest.approx(8192 * 4800 * 2 / 1e6)


def test_the_readme_table_renders_from_the_result_file(tmp_path):
    stats = {"median": 10.0, "min": 9.0, "max": 11.0, "n": 3, "spread": 1.22, "noisy": False, "values": [9, 10, 11]}
    rows = [{"side": "jukemirlib approach", "layer": 36, "batch": 1, "load_s": 1.0, "audio_s_per_s": stats,
             "per_batch": stats, "peak_mb": 2000.0, "params": 2e8},
            {"side": "jukebox-pl", "layer": 36, "batch": 4, "load_s": 0.5, "audio_s_per_s": {**stats, "median": 12.5},
             "per_batch": stats, "peak_mb": 900.0, "params": 1e8}]  # fmt: skip
    plan = [{"layers": 36, "weights": "fp16", "weight_gb": 5.12, "hidden_state_mb": 79, "params": 2.56e9}]
    result = {"meta": {"date": "2026-12-06 21:00 UTC", "git": {"commit": "abc", "dirty": False}}, "width": 512,
              "n_ctx": 2048, "baseline_mb": 300.0, "repeats": 3, "layer": 36, "rows": rows, "plan": plan}  # fmt: skip
    (tmp_path / "features.json").write_text(json.dumps(result))
    table = report.render("features", tmp_path)
    assert "| jukebox-pl, layer 36 | 36 | 4 | 100.0 M | 0.50 s | 12.5 [9.0-11.0] (1.25x) | 900 MB |" in table
    assert "| jukemirlib approach, layer 36 | 72 | 1 |" in table and "| 36 layers, fp16 | 5.12 GB |" in table
    assert "width 512 with a context of 2048 codes (5.9 s of audio per clip)" in table
