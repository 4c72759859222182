"""Prior (sparse transformer) figures on this machine: training and sampling throughput, and peak memory.

    python bench/prior.py                          # tiny + small, n_ctx 2048 and 8192, every mode
    python bench/prior.py --quick                  # fewer steps / tokens, no small training at n_ctx 8192
    python bench/prior.py --presets small --n-ctx 8192 --modes sample --sample-batches 1,16
    python bench/prior.py --presets small --n-ctx 2048 --profile   # torch.profiler top ops of sampling

Presets (block_ctx = n_ctx / blocks kept at 128, i.e. blocks = n_ctx // 128, attn_order 2):
  tiny:  bins 128,  width 128,  depth 6,  heads 2
  small: bins 2048, width 1024, depth 48, heads 1 (the reference's small_prior, 161 M parameters at n_ctx 8192)

Modes, each measured in a fresh subprocess (this script re-invoked with a hidden `--_worker` argument) so that
its peak RSS (ru_maxrss minus the RSS right after the imports) belongs to it alone:
  train:   a full n_ctx sequence, forward + backward (bits_per_token) + Adam step in fp32; small uses
           checkpoint_res=True as the reference trains it. One warm-up step, then the median of timed steps.
  sample:  KV-cache decoding. The cache is primed with a prompt of P tokens (default n_ctx / 4) in chunks of
           128 at batch 1, then replicated to the batch (`--prime full` primes every row instead), then N new
           tokens are drawn one per step by multinomial sampling from softmax(logits) under inference_mode.
  nocache: the same sampling done by recomputing the full forward pass over the prefix (padded up to a
           multiple of block_ctx, which the row/column layers need) for every new token, batch 1.

With --reference CHECKOUT (a checkout of openai/jukebox), every fp32 training and sampling measurement is
followed by the same one of the reference's own prior (`bench/reference_prior.py`: its ConditionalAutoregressive2D,
its forward and its primed_sample, which primes every row), the pairs are repeated (--repeats, default 3) and a
side-by-side table gives the medians [min-max] and the ratios; at batch > 1 ours is also measured priming
every row, so its memory compares both ways with the reference's. Every summary line quotes medians of the
repeats (never one repeat) and flags a figure whose max/min exceeds 1.5 with the load average. Results go to
bench/results/prior.json (prior_reference.json with --reference), which `bench/report.py` renders:

    python bench/prior.py --reference /path/to/jukebox --presets small --n-ctx 8192 --modes sample,train

Timings on this shared 2-core machine drift 2-3x between days: only figures measured side by side compare.
Measure on a quiet machine: when another process keeps a core busy, OpenMP's spinning threads make small ops
up to 20x slower (`--omp-wait-policy PASSIVE` limits the damage but adds ~40 us of wake-up to
every parallel op, which halves batch-1 sampling speed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import measure
import torch
from bench_presets import PRIOR_PRESETS

from jukebox_pl.prior.quantize import quantize_weights, use_vector_kernel
from jukebox_pl.prior.transformer import AutoregressiveTransformer

PRESETS = PRIOR_PRESETS
BLOCK_CTX = 128
RESULT_TAG = "@@PRIOR_BENCH_RESULT "


# -- memory -----------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM and ru_maxrss) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


# -- the measurements (run inside a worker subprocess) ----------------------------------------------------
def build(preset: str, n_ctx: int, checkpoint_res: bool = False) -> AutoregressiveTransformer:
    return AutoregressiveTransformer(
        n_ctx=n_ctx, blocks=n_ctx // BLOCK_CTX, checkpoint_res=checkpoint_res, **PRESETS[preset]
    )


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def our_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    return model.bits_per_token(model(tokens), tokens)


def reference_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens)[0]  # the reference's forward returns (loss in bits/token, None)


def bench_train(
    model, n_ctx: int, batch: int, warmup: int, steps: int, loss_of=our_loss, precision: str = "fp32"
) -> dict:
    """Training steps; `precision` "bf16-mixed": the forward pass under CPU/GPU bf16 autocast (what
    `trainer.precision=bf16-mixed` does), weights, gradients and Adam in fp32."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens = torch.randint(model.bins, (batch, n_ctx))

    fwd_mb = []

    def step(measure: bool = False) -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if measure:  # the memory the forward pass keeps for backward (activations, checkpoints, logits)
            rss0 = current_rss_mb()
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = loss_of(model, tokens)
        if measure:
            fwd_mb.append(peak_rss_mb() - rss0)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    warm = [step() for _ in range(warmup)]
    # Steady state (after a warm-up step the Adam moments exist): the peak RSS of the timed steps' forward
    # passes over the RSS before each (weights + Adam moments, gradients freed).
    pre_reset_peak = peak_rss_mb()
    timed = [step(measure=warmup > 0 and reset_peak_rss()) for _ in range(steps)]
    times = timed or warm
    s_per_step = statistics.median(times)
    return {
        "_pre_reset_peak": pre_reset_peak,
        "forward_mb": max(fwd_mb) if fwd_mb else None,
        "warmup_s": warm,
        "step_s": timed,
        "s_per_step": s_per_step,
        "tokens_per_s": batch * n_ctx / s_per_step,
        "timed_from_warmup": not timed,
    }


def _repeat_batch(obj, batch: int, seen: set):
    """Every tensor of a (batch-1) cache structure repeated along dim 0 to `batch` rows (in place for objects)."""
    if isinstance(obj, torch.Tensor):
        return obj.expand(batch, *obj.shape[1:]).contiguous() if obj.dim() and obj.shape[0] == 1 else obj
    if isinstance(obj, (list, tuple)):
        items = [_repeat_batch(o, batch, seen) for o in obj]
        if isinstance(obj, list):
            obj[:] = items
            return obj
        return type(obj)(items)
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _repeat_batch(obj[key], batch, seen)
        return obj
    if hasattr(obj, "__dict__") and id(obj) not in seen and not isinstance(obj, torch.nn.Module):
        seen.add(id(obj))
        for key, value in list(vars(obj).items()):
            setattr(obj, key, _repeat_batch(value, batch, seen))
    return obj


def prime(model, prompt: torch.Tensor, chunk: int) -> None:
    """Push prompt (B, P) through the cache: positions 0..P-1 (inputs: start token, prompt[:, :P-1])."""
    n, length = prompt.shape
    for start in range(0, length, chunk):
        t = min(chunk, length - start)
        prev = prompt[:, : t - 1] if start == 0 else prompt[:, start - 1 : start - 1 + t]
        model.step(prev if prev.shape[1] else None, start, n)


def sample_tokens(model, last: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Draw `count` tokens one per step; `last` (B, 1) is the token at position start - 1."""
    tok = last
    for i in range(count):
        logits = model.step(tok, start + i, tok.shape[0])
        tok = torch.multinomial(torch.softmax(logits[:, -1].float(), dim=-1), 1)
    return tok


def sample_figures(batch, prompt_len, prime_rows, prime_s, expand_s, tokens, sample_s) -> dict:
    """What a sampling measurement reports, from its timings (one stream's rate and all `batch` streams')."""
    return {
        "prompt_len": prompt_len,
        "prime_rows": prime_rows,
        "prime_s": prime_s,
        "prime_tokens_per_s": prime_rows * prompt_len / prime_s,
        "expand_s": expand_s,
        "new_tokens": tokens,
        "sample_s": sample_s,
        "ms_per_step": 1000 * sample_s / tokens,
        "tokens_per_s_per_stream": tokens / sample_s,
        "tokens_per_s_total": batch * tokens / sample_s,
    }


def bench_static(model, batch: int, prompt_len: int, tokens: int, chunk: int, decode: str) -> dict:
    """Sampling through the fixed-shape step (`jukebox_pl.prior.decoding.StaticDecoder`, what `sample --decode
    static|compile` runs): every row primed, the first two steps untimed (they hold the compilation), then
    `tokens` timed steps."""
    from jukebox_pl.prior.decoding import StaticDecoder

    model.eval()
    warm = 2
    prompt = torch.randint(model.bins, (batch, prompt_len))
    with torch.inference_mode(), model.streaming(capacity=prompt_len + warm + tokens, static=True):
        t0 = time.perf_counter()
        prime(model, prompt, chunk)
        prime_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoder = StaticDecoder(model, prompt_len, batch, mode=decode)
        tok = prompt[:, -1:]
        for _ in range(warm):
            tok = torch.multinomial(torch.softmax(decoder(tok).float(), dim=-1), 1)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(tokens):
            tok = torch.multinomial(torch.softmax(decoder(tok).float(), dim=-1), 1)
        sample_s = time.perf_counter() - t0
    return sample_figures(batch, prompt_len, batch, prime_s, 0.0, tokens, sample_s) | {"compile_s": compile_s}


def bench_sample(model, n_ctx: int, batch: int, prompt_len: int, tokens: int, chunk: int, prime_mode: str) -> dict:
    model.eval()
    warm = 2
    if prompt_len + warm + tokens > n_ctx:
        raise ValueError(f"prompt {prompt_len} + {warm + tokens} tokens exceed n_ctx {n_ctx}")
    prime_rows = 1 if prime_mode == "expand" else batch
    prompt = torch.randint(model.bins, (prime_rows, prompt_len))
    with torch.inference_mode(), model.streaming(capacity=prompt_len + warm + tokens) as caches:
        t0 = time.perf_counter()
        prime(model, prompt, chunk)
        prime_s = time.perf_counter() - t0
        expand_s = 0.0
        if prime_rows != batch:
            if caches is None:
                raise RuntimeError("streaming() yielded no caches to replicate: use --prime full")
            t0 = time.perf_counter()
            _repeat_batch(caches, batch, set())
            expand_s = time.perf_counter() - t0
        last = prompt[:, -1:].expand(batch, 1).contiguous()
        last = sample_tokens(model, last, prompt_len, warm)  # untimed: first T=1 steps after the chunks
        t0 = time.perf_counter()
        sample_tokens(model, last, prompt_len + warm, tokens)
        sample_s = time.perf_counter() - t0
    return sample_figures(batch, prompt_len, prime_rows, prime_s, expand_s, tokens, sample_s)


def bench_nocache(model, n_ctx: int, batch: int, prompt_len: int, tokens: int) -> dict:
    """For every new token, the full forward pass over the prefix (padded to a multiple of block_ctx)."""
    model.eval()
    seq = torch.randint(model.bins, (batch, n_ctx))
    times, lengths = [], []
    with torch.inference_mode():
        for i in range(tokens + 1):  # the first one is a warm-up
            pos = prompt_len + i  # predict the token at this position from seq[:, :pos]
            length = min(n_ctx, -(-(pos + 1) // BLOCK_CTX) * BLOCK_CTX)
            t0 = time.perf_counter()
            logits = model(seq[:, :length])
            seq[:, pos : pos + 1] = torch.multinomial(torch.softmax(logits[:, pos].float(), dim=-1), 1)
            if i:
                times.append(time.perf_counter() - t0)
                lengths.append(length)
    s_per_token = statistics.median(times)
    return {
        "prompt_len": prompt_len,
        "new_tokens": tokens,
        "forward_lengths": lengths,
        "s_per_token": s_per_token,
        "tokens_per_s_per_stream": 1 / s_per_token,
        "tokens_per_s_total": batch / s_per_token,
    }


def profile_sample(model, batch: int, prompt_len: int, tokens: int, chunk: int, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    prompt = torch.randint(model.bins, (1, prompt_len))
    with torch.inference_mode(), model.streaming() as caches:
        prime(model, prompt, chunk)
        if batch > 1:
            _repeat_batch(caches, batch, set())
        last = sample_tokens(model, prompt[:, -1:].expand(batch, 1).contiguous(), prompt_len, 2)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            sample_tokens(model, last, prompt_len + 2, tokens)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def worker(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    random.seed(job["seed"])
    torch.manual_seed(job["seed"])
    base = peak_rss_mb()
    rss0 = current_rss_mb()
    t0 = time.perf_counter()
    checkpoint_res = job["mode"] == "train" and job["preset"] != "tiny"
    mode, n_ctx, batch = job["mode"], job["n_ctx"], job["batch"]
    if job.get("impl") == "reference":
        import reference_prior

        ar = reference_prior.load(job["reference"])
        model = reference_prior.build(ar, PRESETS[job["preset"]], n_ctx, BLOCK_CTX, checkpoint_res)
        out = {"build_s": time.perf_counter() - t0, "params": n_params(model), "model_mb": current_rss_mb() - rss0}
        if mode == "train":
            out |= bench_train(model, n_ctx, batch, job["warmup"], job["steps"], loss_of=reference_loss)
        else:
            out |= reference_prior.sample(ar, model, batch, job["prompt_len"], job["tokens"], job["chunk"])
        return finish(out, job, base)
    model = build(job["preset"], n_ctx, checkpoint_res=checkpoint_res)
    out = {"build_s": time.perf_counter() - t0, "params": n_params(model)}
    if mode != "train":
        weights = job.get("weights", "fp32")
        if weights == "bf16":  # bf16 storage and compute (AVX-512 bf16 on this CPU; what `sample --weights bf16` does)
            use_vector_kernel(model.to(torch.bfloat16))
        else:
            quantize_weights(model, weights)
    out["model_mb"] = current_rss_mb() - rss0
    if mode == "train":
        out |= bench_train(model, n_ctx, batch, job["warmup"], job["steps"], precision=job.get("weights", "fp32"))
    elif mode == "sample":
        if job.get("decode", "dynamic") != "dynamic":
            out |= bench_static(model, batch, job["prompt_len"], job["tokens"], job["chunk"], job["decode"])
        else:
            out |= bench_sample(model, n_ctx, batch, job["prompt_len"], job["tokens"], job["chunk"], job["prime"])
    elif mode == "nocache":
        out |= bench_nocache(model, n_ctx, batch, job["prompt_len"], job["tokens"])
    elif mode == "profile":
        out["table"] = profile_sample(model, batch, job["prompt_len"], job["tokens"], job["chunk"], job["rows"])
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return finish(out, job, base)


def finish(out: dict, job: dict, base: float) -> dict:
    """Peak memory over the RSS after the imports, and (training) what of it is activations."""
    out["peak_mb"] = max(peak_rss_mb(), out.pop("_pre_reset_peak", 0.0)) - base
    out["baseline_mb"] = base
    if job["mode"] == "train":  # grads + 2 Adam moments (fp32) on top of the weights, the rest is activations etc.
        out["activations_mb"] = out["peak_mb"] - out["model_mb"] - 3 * 4 * out["params"] / 2**20
    return out


# -- the driver ---------------------------------------------------------------------------------------------
def run_job(job: dict, timeout: float | None) -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(job)]
    env = dict(os.environ)
    if job["omp_wait_policy"] != "default":
        env["OMP_WAIT_POLICY"] = job["omp_wait_policy"]
    if job["exact_memory"]:  # every allocation >= 128 KiB mmapped and unmapped on free: RSS follows live memory
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return job | {"error": f"timed out after {timeout} s", "wall_s": time.perf_counter() - t0}
    result = next((line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)), None)
    if proc.returncode or result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return job | {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": time.perf_counter() - t0}
    return job | json.loads(result[len(RESULT_TAG) :]) | {"wall_s": time.perf_counter() - t0}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def plan(args) -> list[dict]:
    jobs = []
    common = {"threads": args.threads, "seed": args.seed, "chunk": args.chunk, "prime": args.prime}
    common["omp_wait_policy"], common["exact_memory"] = args.omp_wait_policy, args.exact_memory
    for preset in args.presets:
        for n_ctx in args.n_ctx:
            prompt_len = args.prompt_len or n_ctx // 4
            cfg = common | {"preset": preset, "n_ctx": n_ctx, "prompt_len": prompt_len}
            if args.profile:
                for weights in args.weights:
                    for batch in args.sample_batches or [1]:
                        job = {"mode": "profile", "batch": batch, "tokens": args.tokens or 16, "rows": 15}
                        jobs.append(cfg | job | {"weights": weights})
                continue
            big = preset == "small" and n_ctx >= 8192
            if "train" in args.modes and not (big and args.skip_big_train):
                steps = args.train_steps
                if steps is None:
                    steps = 1 if args.quick or big else 2 if preset == "small" else 3
                batches = args.train_batches or ([1, 8] if preset == "tiny" else [1])
                for batch in batches:
                    for precision in args.train_precision:  # (keyed as "weights", beside sampling's storage)
                        job = {"mode": "train", "batch": batch, "warmup": args.train_warmup, "steps": steps}
                        jobs.append(cfg | job | {"weights": precision})
            if "sample" in args.modes:
                batches = args.sample_batches or ([1, 8] if preset == "tiny" else [1, 8, 16])
                tokens = args.tokens or (16 if args.quick else 64)
                for weights in args.weights:
                    for batch in batches:
                        job = cfg | {"mode": "sample", "batch": batch, "tokens": tokens, "weights": weights}
                        jobs.append(job)
                        for decode in [d for d in getattr(args, "decode", ()) if d != "dynamic"]:  # all rows primed
                            jobs.append(job | {"decode": decode, "prime": "full" if batch > 1 else job["prime"]})
            if "nocache" in args.modes:
                tokens = args.nocache_tokens or (2 if args.quick or big else 4)
                jobs.append(cfg | {"mode": "nocache", "batch": 1, "tokens": tokens})
    if args.reference:  # each fp32 training / sampling job, then the reference's twin, repeated in turn
        twins = []
        for job in jobs:
            twins.append(job)
            if job["mode"] in ("train", "sample") and job.get("weights", "fp32") == "fp32" and "decode" not in job:
                ref = job | {"impl": "reference", "reference": str(Path(args.reference).resolve())}
                twins.append(ref | ({"prime": "full"} if job["mode"] == "sample" else {}))  # it primes every row
                if job["mode"] == "sample" and job["batch"] > 1 and job["prime"] != "full":
                    twins.append(job | {"prime": "full", "twin": "prime_full"})  # ours primed as it primes
        jobs = twins
    return [job | {"repeat": r} for r in range(args.repeats) for job in jobs]  # rounds: interleaved repeats


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


RATE = {"train": "tokens_per_s", "sample": "tokens_per_s_total", "nocache": "tokens_per_s_total"}
MEDIAN_FIELDS = ("tokens_per_s", "tokens_per_s_total", "tokens_per_s_per_stream", "peak_mb", "activations_mb",
                 "forward_mb", "prime_tokens_per_s", "s_per_step", "ms_per_step", "s_per_token")  # fmt: skip


def key_of(r: dict) -> tuple:
    """What a result measures, whatever its repeat: mode, preset, n_ctx, batch, weights, priming, whose."""
    prime = r.get("prime", "expand") if r["mode"] == "sample" else "-"
    weights = r.get("weights", "fp32") + (f"+{r['decode']}" if r.get("decode", "dynamic") != "dynamic" else "")
    return (r["mode"], r["preset"], r["n_ctx"], r["batch"], weights, prime, r.get("impl", "ours"))


def medians(results: list[dict]) -> dict[tuple, dict]:
    """One record per measurement: every figure the median of its repeats, with the rate's and the peak memory's
    spread (`rate`, `memory`: measure.stats). Summary lines quote these, never a single repeat."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "error" not in r and r["mode"] in RATE:
            groups.setdefault(key_of(r), []).append(r)
    out = {}
    for key, rs in groups.items():
        rec = {k: v for k, v in rs[0].items() if k != "repeat"}
        for field in MEDIAN_FIELDS:
            values = [r[field] for r in rs if r.get(field) is not None]
            if values:
                rec[field] = statistics.median(values)
        rec["rate"] = measure.stats([r[RATE[key[0]]] for r in rs])
        rec["memory"] = measure.stats([r["peak_mb"] for r in rs])
        out[key] = rec
    return out


def side_by_side(med: dict[tuple, dict], load: float | None = None) -> dict:
    """Ours against the reference, per measurement: medians of interleaved repeats (range in brackets), ratios.
    Sampling at batch > 1 is shown both ways: ours priming one row and copying its cache, and ours priming every
    row as the reference does; int8 weights against the reference's fp32 where ours measured them."""
    summary = {}
    print("\nside by side with the reference (same machine, same sitting, interleaved; medians [min-max] of the "
          "repeats; the reference primes every row)")  # fmt: skip
    print(f"{'what':<50} {'n':>2} {'reference tok/s':>22} {'jukebox-pl tok/s':>22} {'ratio':>6} "
          f"{'ref peak MB':>11} {'our peak MB':>11} {'mem ratio':>9}")  # fmt: skip
    refs = {k: r for k, r in med.items() if k[6] == "reference"}
    for (mode, preset, n_ctx, batch, _, _, _), ref in sorted(refs.items()):
        for (m, pr, n, b, weights, prime, impl), ours in sorted(med.items()):
            if impl != "ours" or (m, pr, n, b) != (mode, preset, n_ctx, batch):
                continue
            if mode == "train":  # a training precision other than fp32 is named (bf16-mixed)
                how = "" if weights == "fp32" else f" {weights}"
            else:
                how = f" {weights}" + (f" ours primes {'1 row' if prime == 'expand' else 'all'}" if batch > 1 else "")
            what = f"{preset} {mode} n_ctx {n_ctx} B {batch}{how}"
            r_rate, o_rate, r_mem, o_mem = ref["rate"], ours["rate"], ref["memory"], ours["memory"]
            ratio, mem_ratio = o_rate["median"] / r_rate["median"], o_mem["median"] / r_mem["median"]
            print(f"{what:<50} {r_rate['n']:>2} {measure.cell(r_rate, '.2f'):>22} {measure.cell(o_rate, '.2f'):>22} "
                  f"{ratio:>5.2f}x {r_mem['median']:>11.0f} {o_mem['median']:>11.0f} {mem_ratio:>8.2f}x"
                  + measure.flag(r_rate, load) + measure.flag(o_rate, load))  # fmt: skip
            name = f"{preset}_{n_ctx}_{mode}_b{batch}" + (
                ("" if weights == "fp32" else f"_{weights}") if mode == "train" else f"_{weights}_{prime}"
            )
            summary[name] = {"mode": mode, "preset": preset, "n_ctx": n_ctx, "batch": batch, "weights": weights,
                             "prime": prime, "prompt_len": ours.get("prompt_len"), "tokens": ours.get("new_tokens"),
                             "reference": r_rate["median"], "jukebox_pl": o_rate["median"], "ratio": ratio,
                             "reference_peak_mb": r_mem["median"], "peak_mb": o_mem["median"],
                             "memory_ratio": mem_ratio, "n": min(r_rate["n"], o_rate["n"]),
                             "reference_stats": r_rate, "jukebox_pl_stats": o_rate,
                             "reference_memory_stats": r_mem, "memory_stats": o_mem}  # fmt: skip
    return summary


def report(results: list[dict], load: float | None = None) -> dict:
    med = medians(results)
    compared = side_by_side(med, load) if any(r.get("impl") == "reference" for r in results) else {}
    results = [r for r in results if r.get("impl") != "reference" and "twin" not in r]
    ok = [r for r in results if "error" not in r]
    print("\ntraining (forward + backward + Adam, full n_ctx sequence; bf16-mixed: the forward under bf16 autocast;")
    print("peak MB = peak RSS - RSS after imports,", end=" ")
    print("act MB = peak - model - grads - Adam moments, fwd MB = what a timed step's forward pass adds)")
    print(f"{'preset':<6} {'n_ctx':>5} {'precision':>10} {'B':>3} {'params':>8} {'s/step':>8} {'tok/s':>8} "
          f"{'warm s':>7} {'peak MB':>8} {'act MB':>8} {'fwd MB':>8} {'wall s':>7}")  # fmt: skip
    for r in ok:
        if r["mode"] == "train":
            print(f"{r['preset']:<6} {r['n_ctx']:>5} {r.get('weights', 'fp32'):>10} {r['batch']:>3} "
                  f"{r['params'] / 1e6:>7.1f}M "
                  f"{r['s_per_step']:>8.2f} {r['tokens_per_s']:>8.1f} {max(r['warmup_s'], default=0):>7.2f} "
                  f"{r['peak_mb']:>8.0f} {r['activations_mb']:>8.0f} {fmt(r['forward_mb'], '.0f'):>8} "
                  f"{r['wall_s']:>7.1f}")  # fmt: skip
    print("\nsampling with the KV cache (prompt of P tokens primed in chunks, then N tokens one per step)")
    print(f"{'preset':<6} {'n_ctx':>5} {'weights':>12} {'B':>3} {'P':>5} {'N':>4} {'prime tok/s':>11} {'ms/step':>8} "
          f"{'tok/s/stream':>12} {'tok/s total':>11} {'peak MB':>8} {'wall s':>7}")  # fmt: skip
    for r in ok:
        if r["mode"] == "sample":
            print(f"{r['preset']:<6} {r['n_ctx']:>5} {key_of(r)[4]:>12} {r['batch']:>3} "
                  f"{r['prompt_len']:>5} {r['new_tokens']:>4} "
                  f"{r['prime_tokens_per_s']:>11.1f} {r['ms_per_step']:>8.1f} {r['tokens_per_s_per_stream']:>12.2f} "
                  f"{r['tokens_per_s_total']:>11.2f} {r['peak_mb']:>8.0f} {r['wall_s']:>7.1f}")  # fmt: skip
    print("\nsampling without a cache (full forward over the prefix for every new token)")
    print(f"{'preset':<6} {'n_ctx':>5} {'B':>3} {'P':>5} {'N':>4} {'s/token':>8} {'tok/s':>8} {'peak MB':>8} "
          f"{'wall s':>7}")  # fmt: skip
    for r in ok:
        if r["mode"] == "nocache":
            print(f"{r['preset']:<6} {r['n_ctx']:>5} {r['batch']:>3} {r['prompt_len']:>5} {r['new_tokens']:>4} "
                  f"{r['s_per_token']:>8.3f} {r['tokens_per_s_total']:>8.2f} {r['peak_mb']:>8.0f} "
                  f"{r['wall_s']:>7.1f}")  # fmt: skip
    for r in ok:
        if r["mode"] == "profile":
            print(f"\nprofile: {r['preset']} n_ctx {r['n_ctx']}, {r.get('weights', 'fp32')} weights, B {r['batch']} "
                  f"sampling of {r['tokens']} tokens after {r['prompt_len']}\n{r['table']}")  # fmt: skip

    summary = {}
    mine = {k: r for k, r in med.items() if k[6] == "ours" and "twin" not in r}  # medians over the repeats
    by = {k[:4]: r for k, r in mine.items() if k[4] == "fp32"}
    int8 = {k[1:4]: r for k, r in mine.items() if k[4] == "int8" and k[0] == "sample"}
    lines = []
    for (mode, preset, n_ctx, batch), r in sorted(by.items()):
        if mode == "sample" and batch > 1 and (one := by.get(("sample", preset, n_ctx, 1))):
            x = r["tokens_per_s_total"] / one["tokens_per_s_total"]
            summary[f"{preset}_{n_ctx}_sample_b{batch}_over_b1_total"] = x
            lines.append(f"{preset} n_ctx {n_ctx}: sampling batch {batch} / batch 1 total tokens/s = {x:.2f}x"
                         + measure.flag(r["rate"], load) + measure.flag(one["rate"], load))  # fmt: skip
        if mode == "sample" and batch == 1 and (nc := by.get(("nocache", preset, n_ctx, 1))):
            x = r["tokens_per_s_total"] / nc["tokens_per_s_total"]
            summary[f"{preset}_{n_ctx}_cache_over_nocache_b1"] = x
            lines.append(f"{preset} n_ctx {n_ctx}: KV cache / no cache (batch 1, P={r['prompt_len']}) = {x:.1f}x"
                         + measure.flag(r["rate"], load) + measure.flag(nc["rate"], load))  # fmt: skip
        if mode == "train" and n_ctx == 8192 and (lo := by.get(("train", preset, 2048, batch))):
            x, y = r["peak_mb"] / lo["peak_mb"], r["activations_mb"] / max(lo["activations_mb"], 1e-9)
            summary[f"{preset}_b{batch}_train_mem_8192_over_2048"] = x
            summary[f"{preset}_b{batch}_train_act_mem_8192_over_2048"] = y
            lines.append(f"{preset} batch {batch}: training peak memory 8192 / 2048 = {x:.2f}x "
                         f"(activations only: {y:.2f}x; linear = 4x, quadratic = 16x)")  # fmt: skip
            if r["forward_mb"] and lo["forward_mb"] and min(r["forward_mb"], lo["forward_mb"]) > 1.0:
                z = r["forward_mb"] / lo["forward_mb"]
                summary[f"{preset}_b{batch}_train_forward_mem_8192_over_2048"] = z
                lines.append(f"{preset} batch {batch}: training forward-pass memory 8192 / 2048 = {z:.2f}x")
    for (preset, n_ctx, batch), r in sorted(int8.items()):
        summary[f"{preset}_{n_ctx}_sample_b{batch}_int8_total"] = r["tokens_per_s_total"]
        line = (f"{preset} n_ctx {n_ctx} batch {batch}, int8 weights: {r['tokens_per_s_total']:.1f} tokens/s total"
                f" (median of {r['rate']['n']}, {r['rate']['min']:.1f}-{r['rate']['max']:.1f})")  # fmt: skip
        flags = measure.flag(r["rate"], load)
        if fp := by.get(("sample", preset, n_ctx, batch)):
            line += f", {r['tokens_per_s_total'] / fp['tokens_per_s_total']:.2f}x fp32"
            flags += measure.flag(fp["rate"], load)
        if batch > 1 and (one := int8.get((preset, n_ctx, 1))):
            line += f", {r['tokens_per_s_total'] / one['tokens_per_s_total']:.2f}x int8 batch 1"
        lines.append(line + flags)
    if lines:
        print("\nsummary")
        for line in lines:
            print("  " + line)
    for r in results:
        if "error" in r:
            print(f"FAILED {r['preset']} n_ctx {r['n_ctx']} {r['mode']} batch {r['batch']}: {r['error']}")
    if compared:
        summary["side_by_side"] = compared
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", type=lambda s: s.split(","), default=["tiny", "small"], help="tiny,small")
    p.add_argument("--n-ctx", type=ints, default=[2048, 8192], help="context lengths (multiples of 128)")
    p.add_argument("--modes", type=lambda s: s.split(","), default=["train", "sample", "nocache"])
    p.add_argument("--train-batches", type=ints, help="default: tiny 1,8; small 1")
    p.add_argument("--sample-batches", type=ints, help="default: tiny 1,8; small 1,8,16")
    p.add_argument("--train-warmup", type=int, default=1, help="untimed training steps (default 1)")
    p.add_argument("--train-precision", type=lambda s: s.split(","), default=["fp32"],
                   help="training precisions: fp32,bf16-mixed (bf16 autocast, fp32 weights and Adam)")  # fmt: skip
    p.add_argument("--train-steps", type=int, help="timed training steps (default: tiny 3, small 2; 1 at 8192)")
    p.add_argument("--skip-big-train", action="store_true", help="skip training small at n_ctx >= 8192")
    p.add_argument("--tokens", type=int, help="timed sampled tokens per stream (default 64, --quick 16)")
    p.add_argument("--nocache-tokens", type=int, help="timed tokens without a cache (default 4; 2 at 8192)")
    p.add_argument("--prompt-len", type=int, help="prompt length P (default n_ctx / 4)")
    p.add_argument("--weights", type=lambda s: s.split(","), default=["fp32", "int8"],
                   help="weight storage for sampling: fp32,int8,bf16 (int8 = jukebox_pl.prior.quantize)")  # fmt: skip
    p.add_argument("--decode", type=lambda s: s.split(","), default=["dynamic"],
                   help="sampling steps: dynamic (the CPU default), static and/or compile (the fixed-shape step of "
                   "`sample --decode`, every row primed; compile's first two steps, untimed, hold the compilation); "
                   "a row's weights read e.g. int8+compile")  # fmt: skip
    p.add_argument("--chunk", type=int, default=128, help="prompt chunk length when priming (default 128)")
    p.add_argument("--prime", choices=["expand", "full"], default="expand",
                   help="prime the cache at batch 1 and replicate it (expand), or prime every row (full)")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="only profile sampling (batches: --sample-batches)")
    p.add_argument("--quick", action="store_true", help="fewer steps and tokens; skips small training at 8192")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE", "default"], default="default",
                   help="OMP_WAIT_POLICY of the measurement subprocesses ('default' leaves the environment alone, as "
                   "users run; PASSIVE when another process keeps a core busy: spinning OpenMP threads then make "
                   "small ops 20x slower; on a quiet machine PASSIVE adds ~40 us to each parallel op)")  # fmt: skip
    p.add_argument("--job-timeout", type=float, help="seconds before a measurement subprocess is killed")
    p.add_argument("--exact-memory", action="store_true",
                   help="MALLOC_MMAP_THRESHOLD_=131072 in the subprocesses, so that glibc hands freed blocks back and "
                   "peak RSS is the peak of live memory (timings then include the extra page faults)")  # fmt: skip
    p.add_argument("--reference", metavar="CHECKOUT",
                   help="a checkout of openai/jukebox: time its prior (training, sampling; fp32) beside ours, "
                   "interleaved, and print the ratios")  # fmt: skip
    p.add_argument("--reference-commit", help="the reference checkout's commit, when it has no .git to read it from")
    p.add_argument("--repeats", type=int, help="interleaved rounds of every measurement (default 3; >= 3 with "
                   "--reference: a side-by-side figure is a median)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="where the figures go (default bench/results/prior.json, "
                   "prior_reference.json with --reference; '-' for none)")  # fmt: skip
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        print(RESULT_TAG + json.dumps(worker(json.loads(args._worker))), flush=True)
        return
    if args.quick:
        args.skip_big_train = True
    args.repeats = args.repeats or measure.MIN_REPEATS
    if args.reference and args.repeats < measure.MIN_REPEATS:
        p.error(f"--repeats {args.repeats}: a side-by-side figure is the median of at least {measure.MIN_REPEATS}")
    unknown = [x for x in args.presets if x not in PRESETS] + [
        m for m in args.modes if m not in ("train", "sample", "nocache")
    ]
    if unknown or any(n % BLOCK_CTX for n in args.n_ctx):
        p.error(f"unknown presets/modes {unknown} or n_ctx not a multiple of {BLOCK_CTX}: {args.n_ctx}")
    jobs = plan(args)
    sitting = measure.Sitting("prior", args.threads, args.reference, args.reference_commit)
    print(f"{len(jobs)} measurements, {args.repeats} interleaved rounds, OMP_WAIT_POLICY {args.omp_wait_policy}")
    results, t0 = [], time.perf_counter()
    for job in jobs:
        impl = " (reference)" if job.get("impl") == "reference" else ""
        what = f"{job['preset']} n_ctx {job['n_ctx']} {job['mode']} batch {job['batch']}{impl}"
        print(f"  running {what} ...", end="", flush=True)
        r = run_job(job, args.job_timeout)
        results.append(r)
        print(f" {r['wall_s']:.1f} s" + (f" FAILED: {r['error']}" if "error" in r else ""), flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s")
    summary = report(results, sitting.load)
    slim = [{k: v for k, v in r.items() if k != "table"} for r in results]
    out = args.json or measure.RESULTS / ("prior_reference.json" if args.reference else "prior.json")
    sitting.finish({"bench": "prior", "repeats": args.repeats, "summary": summary, "results": slim}, out)


if __name__ == "__main__":
    main()
