"""bench/roofline.py counts the bytes a token reads in each weight format and reads the sampler's figures from the
side-by-side results; bench/precision.py's verdict separates bf16-mixed drift from run-to-run noise; both render
into the README through bench/report.py."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
roofline = importlib.import_module("roofline")
precision = importlib.import_module("precision")
report = importlib.import_module("report")

from jukebox_pl.prior.transformer import AutoregressiveTransformer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny() -> AutoregressiveTransformer:
    return AutoregressiveTransformer(n_ctx=64, blocks=4, bins=32, width=16, depth=2, heads=1, attn_order=2)


def test_bytes_per_token_counts_each_format():
    model = tiny()
    linears = [lin for _, _, lin in roofline.block_linears(model)]
    weights = sum(lin.weight.numel() for lin in linears)
    rows = sum(lin.weight.shape[0] for lin in linears)
    rest = model.x_out.weight.numel() + sum(lin.bias.numel() for lin in linears if lin.bias is not None)
    rest += sum(p.numel() for n, p in model.named_parameters() if ".ln" in n or n.startswith("ln"))
    got = roofline.bytes_per_token(model)
    assert got["fp32"]["total"] == 4 * (weights + rest)
    assert got["bf16"]["total"] == 2 * (weights + rest)
    assert got["int8"]["total"] == weights + 2 * rows + 4 * rest  # int8 weights, a bf16 scale per row
    assert got["fp32"]["block_linears"] == 4 * weights and len(linears) == 2 * 4
    # int4: half a byte per weight and 4 bytes (scale, offset) per group, padded to 16 outputs and 32 inputs;
    # a (24, 16) matrix becomes (32, 32) in one group of 32
    assert roofline.matrix_bytes(24, 16, "int4") == 32 * 32 / 2 + 4 * 32 * 1
    assert roofline.matrix_bytes(1024, 1024, "int4") == 1024 * 1024 / 2 + 4 * 1024 * 8
    assert got["int4"]["total"] == sum(roofline.matrix_bytes(*lin.weight.shape, "int4") for lin in linears) + 4 * rest


def test_measured_sampling_reads_batch_one_rows(tmp_path):
    entries = {
        "a": {"mode": "sample", "batch": 1, "weights": "int8", "jukebox_pl": 50.0, "reference": 20.0},
        "b": {"mode": "sample", "batch": 16, "weights": "fp32", "jukebox_pl": 99.0, "reference": 9.0},
        "c": {"mode": "train", "batch": 1, "weights": "fp32", "jukebox_pl": 1.0, "reference": 1.0},
    }
    (tmp_path / "prior_reference.json").write_text(json.dumps({"summary": {"side_by_side": entries}}))
    got = roofline.measured_sampling(tmp_path)
    assert set(got) == {"int8"}
    assert got["int8"]["ours_ms"] == pytest.approx(20.0) and got["int8"]["reference_ms"] == pytest.approx(50.0)
    assert roofline.measured_sampling(tmp_path / "none") == {}


def test_roofline_bench_runs_and_its_table_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(roofline, "STACK_BYTES", 1 << 16)
    monkeypatch.setattr(roofline, "BUFFER_BYTES", 1 << 20)
    monkeypatch.setitem(roofline.PRIOR_PRESETS, "unit", dict(bins=32, width=32, depth=2, heads=1, attn_order=2))
    entries = {"a": {"mode": "sample", "batch": 1, "weights": "fp32", "jukebox_pl": 30.0, "reference": 20.0}}
    (tmp_path / "prior_reference.json").write_text(json.dumps({"summary": {"side_by_side": entries}}))
    out = tmp_path / "roofline.json"
    figures = roofline.main(["--preset", "unit", "--n-ctx", "256", "--threads", "1", "--results", str(tmp_path),
                             "--out", str(out)])  # fmt: skip
    model = AutoregressiveTransformer(n_ctx=256, blocks=2, **roofline.PRIOR_PRESETS["unit"])
    shapes = {f"{lin.weight.shape[0]}x{lin.weight.shape[1]}" for _, _, lin in roofline.block_linears(model)}
    assert figures["bandwidth_gbs"] > 0 and set(figures["kernels"]) == shapes and len(shapes) == 3
    assert all(k[f] > 0 for k in figures["kernels"].values() for f in ("fp32", "bf16", "int8", "int4", "bf16_plain"))
    fp32 = figures["rows"][0]
    assert fp32["reached_vs_reference"] == pytest.approx(1.5)  # 20 ms per token against the reference's 30
    table = report.render("roofline", tmp_path)
    assert "| fp32 |" in table and "1.50x" in table and "`bench/roofline.py`" in table


def test_precision_verdict_separates_drift_from_noise():
    steps, seeds = 80, [0, 1]
    base = [9.0 - 0.05 * i for i in range(steps)]
    wobble = [0.02 * ((-1) ** i) for i in range(steps)]
    curves = {
        ("32-true", 0): base,
        ("32-true", 1): [b + 0.3 for b in base],  # another seed: 0.3 apart
        ("bf16-mixed", 0): [b + w for b, w in zip(base, wobble)],
        ("bf16-mixed", 1): [b + 0.3 + w for b, w in zip(base, wobble)],
    }
    good = precision.compare(curves, seeds)
    assert good["noise"] == pytest.approx(0.3) and good["same_seed_gap"] < 0.02 and good["within_noise"]
    curves[("bf16-mixed", 0)] = [b + 0.5 for b in base]  # drifts further than seeds differ
    assert not precision.compare(curves, seeds)["within_noise"]


def test_markov_codes_follow_one_fixed_table():
    a, b = precision.markov_codes(2, seed=0), precision.markov_codes(1, seed=1)
    table = torch.randint(
        0, precision.PRIOR_BINS, (precision.PRIOR_BINS, 4), generator=torch.Generator().manual_seed(99)
    )
    for batch in (a[0], a[1], b[0]):
        codes = batch["codes"]
        assert codes.shape == (precision.PRIOR_BATCH, precision.PRIOR["n_ctx"])
        nxt = table[codes[:, :-1]]  # (B, T-1, 4): the allowed successors
        assert (nxt == codes[:, 1:, None]).any(-1).all()
    assert not torch.equal(a[0]["codes"], b[0]["codes"])


def test_precision_bench_trains_both_precisions_and_renders(tmp_path, monkeypatch):
    monkeypatch.setitem(precision.PRIOR, "n_ctx", 64)
    monkeypatch.setitem(precision.PRIOR, "width", 32)
    monkeypatch.setitem(precision.PRIOR, "depth", 2)
    monkeypatch.setattr(precision, "PRIOR_BATCH", 2)
    out = tmp_path / "precision.json"
    figures = precision.main(["--stages", "prior", "--steps", "50", "--threads", "1", "--out", str(out)])
    st = figures["stages"]["prior"]
    assert set(st["curves"]) == {"32-true seed 0", "32-true seed 1", "bf16-mixed seed 0", "bf16-mixed seed 1"}
    assert all(len(c) == 50 for c in st["curves"].values())
    assert st["curves"]["32-true seed 0"] != st["curves"]["bf16-mixed seed 0"]  # autocast did change the numbers
    assert st["curves"]["32-true seed 0"][-1] < st["curves"]["32-true seed 0"][0]  # and it learns
    table = report.render("precision", tmp_path)
    assert "| prior |" in table and "`bench/precision.py`" in table


def test_vqvae_table_renders_every_step_and_level(tmp_path):
    def s(median):
        return {"median": median, "min": median, "max": median, "n": 5, "spread": 1.0, "noisy": False}

    rtf = {
        "level0": {"encode": 100.0, "decode": 60.0},
        "level0_bf16": {"encode": 50.0, "decode": 90.0},
        "level1": {"encode": 100.0, "decode": 40.0},
        "reference_encode_all": 25.0,
        "reference_level0_decode": 30.0,
        "reference_level1_decode": 20.0,
    }
    steps = {"jukebox-pl": s(1.5), "jukebox-pl bf16-mixed": s(1.0), "reference": s(2.0)}
    result = {"repeats": 5, "audio_s_per_step": 8.0, "step_s": steps, "real_time_factors": rtf}
    (tmp_path / "vqvae_speed_reference.json").write_text(json.dumps(result))
    table = report.render("vqvae", tmp_path)
    assert "| `small` training step, batch 4 x 2.0 s, both levels | 2.00 s | 1.50 s | 1.33x |" in table
    assert "our bf16-mixed vs its fp32 | 2.00 s | 1.00 s | 2.00x |" in table
    assert "| encode a 30 s clip to every level (x real time) | 25.0x | 50.0x | 2.00x |" in table  # both levels
    assert "| decode a 30 s clip from level 1 (x real time) | 20.0x | 40.0x | 2.00x |" in table
    assert "| the same under bf16 autocast | 30.0x | 90.0x | 3.00x |" in table


def test_prior_bench_times_the_fixed_shape_step_and_names_its_rows(tmp_path):
    prior_bench = importlib.import_module("prior")
    torch.manual_seed(0)
    model = tiny().eval()
    out = prior_bench.bench_static(model, batch=2, prompt_len=16, tokens=4, chunk=8, decode="static")
    assert out["prime_rows"] == 2 and out["new_tokens"] == 4 and out["tokens_per_s_total"] > 0
    assert out["compile_s"] >= 0 and out["ms_per_step"] > 0
    row = {"mode": "sample", "preset": "tiny", "n_ctx": 64, "batch": 1, "weights": "int8", "decode": "compile"}
    assert prior_bench.key_of(row)[4] == "int8+compile"
    assert prior_bench.key_of(row | {"decode": "dynamic"})[4] == "int8"
    entry = {"mode": "sample", "batch": 1, "tokens": 64, "prompt_len": 2048, "weights": "int8+compile"}
    assert report.prior_label(entry).endswith("`--decode compile`, our int8 weights vs its fp32")
    assert report.prior_label(entry | {"weights": "fp32"}) == "sampling, batch 1, 64 tokens after a 2048-token prompt"


def test_prior_bench_plans_decode_rows_without_a_second_reference_twin(monkeypatch):
    prior_bench = importlib.import_module("prior")
    argv = ["--presets", "tiny", "--n-ctx", "2048", "--modes", "sample", "--sample-batches", "1,4", "--weights",
            "fp32", "--decode", "compile", "--reference", "/nowhere", "--repeats", "3", "--threads", "1",
            "--json", "-"]  # fmt: skip
    jobs = []
    monkeypatch.setattr(
        prior_bench, "run_job", lambda job, timeout: jobs.append(job) or {"error": "planned", "wall_s": 0}
    )
    monkeypatch.setattr(prior_bench, "report", lambda results, load=None: {})
    prior_bench.main(argv)
    first_round = [j for j in jobs if j["repeat"] == 0]
    compiled = [j for j in first_round if j.get("decode") == "compile"]
    assert [j["batch"] for j in compiled] == [1, 4] and compiled[1]["prime"] == "full"  # every row primed there
    assert sum(j.get("impl") == "reference" for j in first_round) == 2  # one twin per batch, not per decode
