"""The benches cannot mislead: repeats interleave after the same warm-up, figures are medians with their spread,
every result file says where it came from, summary lines never quote one bad repeat, the reference computes what
ours does, and the README's tables are rendered from (and checked against) the result files."""

import importlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
measure = importlib.import_module("measure")
report = importlib.import_module("report")


def test_repeats_interleave_after_the_same_warm_up():
    calls = []
    sides = {"ours": lambda: calls.append("ours") or 1.0, "reference": lambda: calls.append("ref") or 2.0}
    values = measure.interleaved(sides, repeats=3, warmup=1)
    assert calls == ["ours", "ref"] * 4  # one warm-up round, then three rounds in turn
    assert values == {"ours": [1.0] * 3, "reference": [2.0] * 3}


def test_median_spread_and_noisy_flag():
    s = measure.stats([47.0, 5.0, 49.0])
    assert s["median"] == 47.0 and (s["min"], s["max"], s["n"]) == (5.0, 49.0, 3)
    assert s["noisy"] and s["spread"] == pytest.approx(9.8)
    assert measure.flag(s, 1.9) == " (noisy: spread 9.8x, load 1.9)"
    quiet = measure.stats([47.0, 48.0, 49.0])
    assert not quiet["noisy"] and measure.flag(quiet, 1.9) == ""
    assert measure.cell(quiet) == "48.0 [47.0-49.0]"
    with pytest.raises(ValueError):
        measure.stats([])


def test_reference_commit_cpu_flags_and_the_result_file(tmp_path, monkeypatch):
    assert measure.reference_commit(None) is None
    assert measure.reference_commit(tmp_path, "08efbbc") == "08efbbc"  # no .git: the flag
    assert measure.reference_commit(tmp_path) == "unknown"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx avx2 avx512f avx512_bf16 amx_tile\n")
    info = measure.cpu_info(cpuinfo)
    assert info["model"] == "Test CPU 9000" and info["flags"] == ["avx", "avx2", "avx512f", "avx512_bf16", "amx_tile"]

    monkeypatch.setattr(sys, "argv", ["prior.py", "--reference", str(tmp_path)])
    threads = torch.get_num_threads()
    sitting = measure.Sitting("demo", threads, reference=tmp_path, reference_commit_flag="08efbbc")
    path = sitting.finish({"figures": {"x": measure.stats([1.0, 2.0, 3.0])}}, tmp_path / "out" / "demo.json")
    result = json.loads(path.read_text())
    meta = result["meta"]
    assert meta["reference_commit"] == "08efbbc" and meta["threads"] == threads
    assert meta["torch"] == torch.__version__ and meta["command"] == ["prior.py", "--reference", str(tmp_path)]
    assert set(meta["git"]) == {"commit", "dirty"} and meta["cpu"]["model"]
    assert "load_before" in meta and "load_after" in meta and meta["date"].endswith("UTC")
    assert result["figures"]["x"]["values"] == [1.0, 2.0, 3.0]  # every repeat's raw value
    assert not list(path.parent.glob(".*tmp"))
    assert sitting.finish({}, "-") is None


def _sample(rate: float, impl: str = "ours", batch: int = 1, weights: str = "fp32", prime: str = "expand", **kw):
    r = {"mode": "sample", "preset": "small", "n_ctx": 8192, "batch": batch, "weights": weights, "prime": prime,
         "prompt_len": 2048, "new_tokens": 64, "prime_tokens_per_s": 100.0, "ms_per_step": 1.0,
         "tokens_per_s_per_stream": rate / batch, "tokens_per_s_total": rate, "peak_mb": 1000.0 * batch,
         "wall_s": 1.0} | kw  # fmt: skip
    if impl == "reference":
        r |= {"impl": "reference", "prime": "full", "peak_mb": 1300.0 * batch}
    return r


def test_prior_summary_quotes_medians_never_one_bad_repeat(capsys):
    prior = importlib.import_module("prior")
    results = [_sample(48.0 + i, weights="fp32", repeat=i) for i in range(3)]
    results += [_sample(rate, weights="int8", repeat=i) for i, rate in enumerate([47.0, 5.0, 49.0])]
    summary = prior.report(results, load=1.9)
    out = capsys.readouterr().out
    assert summary["small_8192_sample_b1_int8_total"] == 47.0
    assert "int8 weights: 47.0 tokens/s total (median of 3, 5.0-49.0), 0.96x fp32 (noisy: spread 9.8x, load 1.9)" in out
    assert "5.0 tokens/s" not in out


def test_side_by_side_shows_both_primings_against_the_reference(capsys):
    prior = importlib.import_module("prior")
    args = types.SimpleNamespace(threads=1, seed=0, chunk=128, prime="expand", omp_wait_policy="default",
                                 exact_memory=False, presets=["small"], n_ctx=[8192], prompt_len=None, profile=False,
                                 modes=["sample"], sample_batches=[16], tokens=4, weights=["fp32"], quick=False,
                                 reference="/tmp/ref", repeats=3)  # fmt: skip
    jobs = prior.plan(args)
    order = [(j.get("impl", "ours"), j["prime"], j["repeat"]) for j in jobs]
    assert order == [(who, prime, r) for r in range(3)
                     for who, prime in (("ours", "expand"), ("reference", "full"), ("ours", "full"))]  # fmt: skip
    results = []
    for r in range(3):
        results += [_sample(200.0 + r, batch=16), _sample(55.0, "reference", batch=16),
                    _sample(190.0, batch=16, prime="full", twin="prime_full", peak_mb=1250.0 * 16)]  # fmt: skip
    summary = prior.report(results)["side_by_side"]
    one, every = summary["small_8192_sample_b16_fp32_expand"], summary["small_8192_sample_b16_fp32_full"]
    assert one["jukebox_pl"] == 201.0 and one["memory_ratio"] == pytest.approx(1000 / 1300)
    assert every["jukebox_pl"] == 190.0 and every["memory_ratio"] == pytest.approx(1250 / 1300)
    out = capsys.readouterr().out
    assert "ours primes 1 row" in out and "ours primes all" in out


def test_sampling_side_by_side_interleaves_three_repeats_warmed_alike(monkeypatch):
    sampling = importlib.import_module("sampling")
    calls = []
    monkeypatch.setitem(sys.modules, "reference_prior", types.SimpleNamespace(load=lambda checkout: "ar"))
    fake = types.SimpleNamespace(priors={1: None, 0: None}, name=lambda level: ["bottom", "top"][level])
    monkeypatch.setattr(sampling, "build", lambda *a: fake)
    monkeypatch.setattr(sampling, "reference_model", lambda ar, models, level: f"ref{level}")

    def ours(models, level, batch, tokens, decode=True):
        assert not decode  # VQ-VAE decoding is left out of the comparison
        calls.append(("ours", level))
        return {"prime_tok_s": 10.0, "sample_tok_s": 5.0, "sample_s_per_audio_s": 2.0}

    def reference(ar, model, models, level, batch, tokens):
        calls.append(("ref", level))
        return {"prime_tok_s": 8.0, "sample_tok_s": 4.0, "sample_s_per_audio_s": 3.0}

    monkeypatch.setattr(sampling, "level_rates", ours)
    monkeypatch.setattr(sampling, "reference_rates", reference)
    args = types.SimpleNamespace(reference="/tmp/ref", batches="1", tokens=4, repeats=3)
    rows = sampling.side_by_side(args, load=0.5)
    assert calls == [("ours", 1), ("ref", 1)] * 4 + [("ours", 0), ("ref", 0)] * 4  # warm-up + 3 rounds per level
    song = rows[-1]
    assert song["level"] == "song" and song["ratio"] == pytest.approx(6.0 / 4.0)
    assert rows[0]["reference_stats"]["n"] == 3 and len(rows[0]["runs"]["jukebox-pl"]) == 3
    with pytest.raises(SystemExit):
        sampling.main(["--reference", "/tmp/ref", "--repeats", "2"])

    calls.clear()  # several weight formats: each timed beside the same reference runs, in the same rounds
    built = []
    monkeypatch.setattr(sampling, "build", lambda preset, weights, overrides: built.append(weights) or fake)
    args = types.SimpleNamespace(reference="/tmp/ref", batches="1", tokens=4, repeats=3, weights="fp32,int4")
    rows = sampling.side_by_side(args, load=0.5)
    assert built == ["fp32", "int4"]
    assert calls == [("ours", 1), ("ours", 1), ("ref", 1)] * 4 + [("ours", 0), ("ours", 0), ("ref", 0)] * 4
    songs = [r for r in rows if r["level"] == "song"]
    assert [(r["weights"], r["ratio"]) for r in songs] == [("fp32", pytest.approx(1.5)), ("int4", pytest.approx(1.5))]


def test_reference_vqvae_step_computes_what_ours_does():
    vqvae = importlib.import_module("vqvae")

    def loss_fn(kind, x_target, x_pred, hps):
        return torch.ones(())

    module = types.SimpleNamespace(spectral_loss=loss_fn, spectral_convergence=loss_fn, _loss_fn=loss_fn)
    vqvae.skip_reference_extras(module)
    x = torch.zeros(2)
    assert module.spectral_loss(x, x, None) == 0 and module.spectral_convergence(x, x, None) == 0
    assert module._loss_fn("l2", x, x, None) == 1  # the training term stays
    with torch.no_grad():
        assert module._loss_fn("l1", x, x, None) == 0  # the metrics go


def _results(folder: Path, ours_rate: float = 197.8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"date": "2026-12-01 10:00 UTC", "git": {"commit": "abcdef1234567", "dirty": False},
            "reference_commit": "08efbbc1d4ed1a3cef96e08a931944c8b4d63bb3", "torch": "2.13.0+cpu", "threads": 2,
            "cpu": {"model": "Test CPU", "flags": ["avx2"]}, "load_before": 0.1, "load_after": 0.2}  # fmt: skip
    st = measure.stats([1.0, 1.1, 1.2])
    entry = {"mode": "sample", "preset": "small", "n_ctx": 8192, "batch": 16, "weights": "fp32", "prime": "expand",
             "prompt_len": 2048, "tokens": 64, "reference": 54.5, "jukebox_pl": ours_rate, "ratio": ours_rate / 54.5,
             "reference_peak_mb": 2560.0, "peak_mb": 1946.0, "memory_ratio": 0.76, "reference_stats": st,
             "jukebox_pl_stats": st}  # fmt: skip
    prior = {"meta": meta, "summary": {"side_by_side": {"a": entry}}}
    sampling = {"meta": meta, "rows": [{"level": "top", "batch": 1, "reference_stats": st, "jukebox_pl_stats": st},
                                       {"level": "song", "batch": 1, "reference": 52.4, "jukebox-pl": 42.1,
                                        "ratio": 52.4 / 42.1}]}  # fmt: skip
    (folder / "prior_reference.json").write_text(json.dumps(prior))
    (folder / "sampling_reference.json").write_text(json.dumps(sampling))
    return folder


def test_report_renders_the_side_by_side_table(tmp_path):
    text = report.render("side-by-side", _results(tmp_path / "results"))
    lines = text.splitlines()
    assert lines[:2] == ["| measurement | reference | jukebox-pl | speed | peak memory |", "|---|---|---|---|---|"]
    assert lines[2] == ("| sampling, batch 16 (all streams), ours priming one row | 54.5 tok/s | 197.8 tok/s | "
                        "3.63x | 0.76x (1.9 vs 2.5 GB) |")  # fmt: skip
    song = "| sampling compute per audio second, `small` 2-level song, batch 1 | 52.4 s | 42.1 s | 1.24x | |"
    assert lines[3] == song
    assert "commit abcdef1234, reference 08efbbc1d4" in text and "Medians of 3 interleaved repeats" in text


def test_check_names_the_table_that_differs_and_write_fixes_it(tmp_path, capsys):
    results = _results(tmp_path / "results")
    readme = tmp_path / "README.md"
    table = report.render("side-by-side", results)
    readme.write_text(f"# x\n\n<!-- bench:side-by-side -->\n{table}\n<!-- /bench:side-by-side -->\n\ntail\n")
    assert report.main(["--check", str(readme), "--results", str(results)]) == 0

    _results(results, ours_rate=150.0)  # a new measurement: the README is now out of date
    assert report.main(["--check", str(readme), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "table bench:side-by-side differs" in err and "150.0 tok/s" in err and "line 3" in err

    report.main(["--write", str(readme), "--results", str(results)])
    assert report.main(["--check", str(readme), "--results", str(results)]) == 0
    assert readme.read_text().startswith("# x\n\n<!-- bench:side-by-side -->\n") and readme.read_text().endswith(
        "tail\n"
    )

    (results / "prior_reference.json").unlink()
    assert report.main(["--check", str(readme), "--results", str(results)]) == 1
    assert "prior_reference.json is missing" in capsys.readouterr().err


def test_the_readme_paper_tables_match_their_result_file():
    readme = Path(__file__).resolve().parents[1] / "README.md"
    body = dict(report.blocks(readme.read_text()))["paper"]
    assert body == report.render("paper")


def test_a_bf16_mixed_training_step_runs_the_forward_under_autocast(monkeypatch):
    """bench/prior.py --train-precision bf16-mixed: the loss is computed under bf16 autocast, Adam stays fp32."""
    prior_bench = importlib.import_module("prior")
    model = prior_bench.build("tiny", 256, checkpoint_res=False)
    seen = []

    def loss_of(m, tokens):
        seen.append(torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() == torch.bfloat16)
        return prior_bench.our_loss(m, tokens)

    out = prior_bench.bench_train(model, 256, 1, 1, 1, loss_of=loss_of, precision="bf16-mixed")
    assert seen == [True, True] and out["tokens_per_s"] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    seen.clear()
    prior_bench.bench_train(model, 256, 1, 0, 1, loss_of=loss_of)
    assert seen == [False]


def test_a_bf16_mixed_training_row_is_named_and_kept_apart_from_fp32(capsys):
    prior = importlib.import_module("prior")

    def train(rate, impl="ours", weights="fp32"):
        r = {"mode": "train", "preset": "small", "n_ctx": 8192, "batch": 1, "weights": weights, "prime": "expand",
             "params": 1e8, "s_per_step": 8192 / rate, "tokens_per_s": rate, "warmup_s": [1.0], "peak_mb": 4000.0,
             "activations_mb": 1.0, "forward_mb": 1.0, "wall_s": 1.0}  # fmt: skip
        return r | ({"impl": "reference"} if impl == "reference" else {})

    results = [
        r for _ in range(3) for r in (train(176.0), train(160.0, "reference"), train(432.0, weights="bf16-mixed"))
    ]
    summary = prior.report(results)["side_by_side"]
    assert summary["small_8192_train_b1"]["jukebox_pl"] == 176.0
    assert summary["small_8192_train_b1_bf16-mixed"]["ratio"] == pytest.approx(432 / 160)
    assert "small train n_ctx 8192 B 1 bf16-mixed" in capsys.readouterr().out
