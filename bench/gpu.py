"""GPU figures: decoding speed of the released prior shapes against the memory-bandwidth roofline, the compute
time of a whole song, peak memory, bf16-vs-fp32 logits, and bf16-mixed training speed.

    python bench/gpu.py                  # on a machine with a CUDA GPU (~5 min on one H100/H200)
    python bench/gpu.py --dry-run        # anywhere: every shape built on the meta device (parameters, bytes per
                                         # token) and every measurement run on the CPU with scaled-down stand-ins
    python bench/gpu.py --shapes prior_5b --batches 1,16

Without a GPU (and without --dry-run) it prints "no GPU" and exits 0.

Measured, with random weights stored in --dtype (bf16 by default; the released 5B weights are fp16), on the
first CUDA device:
  decoding   per shape (prior_5b, prior_1b_lyrics: the top priors; upsampler_level_0: both upsamplers' shape)
             and batch (1, 4, 16): a prompt of n_ctx / 2 tokens primed through the KV cache in one pass,
             then --tokens new tokens one per step, each step the fixed-shape step replayed from a CUDA graph
             (--decode graph; the first batch of each shape also without it, "dynamic"). Tokens/s, and the
             fraction of the roofline: every step reads all weights and the KV cache once, so a stream cannot
             exceed bandwidth / (weight bytes + cache bytes) tokens/s; the bandwidth is measured (a
             device-to-device copy), also printed.
  song       compute-seconds per second of 44.1 kHz audio, top (prior_5b) + middle + bottom (the upsampler
             shape), windows re-primed as sampling does (new tokens every 1/8 of n_ctx at the top, every 1/2 for
             the upsamplers): per level tokens per audio second x (1 / decode rate + re-primed tokens / priming
             rate), divided by the batch. The reference needed ~9 hours of V100 per minute of audio (540 s/s).
  memory     peak allocated GPU memory of each decoding run.
  logits     the reference fixture (tests/fixtures/openai_jukebox/small_prior_w128_d6: the reference's weights,
             input and logits) in fp32 and with --dtype weights: max |log-softmax difference|, argmax agreement.
  training   tokens/s of the tiny and small (the reference's small_prior, n_ctx 8192) transformers, forward +
             backward + Adam under bf16 autocast, with and without activation checkpointing (checkpoint_res).
The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_presets import PRIOR_PRESETS

from jukebox_pl.config.levels import Levels
from jukebox_pl.config.loader import load_config
from jukebox_pl.config.sections import prior_config
from jukebox_pl.prior.decoding import StaticDecoder, prime_chunk
from jukebox_pl.prior.model import build_prior
from jukebox_pl.prior.transformer import AutoregressiveTransformer

SHAPES = {  # name -> its level in the released 3-level VQ-VAE (the `jukebox` preset: hops 8 / 32 / 128 at 44.1 kHz)
    "prior_5b": 2,
    "prior_1b_lyrics": 2,
    "upsampler_level_0": 0,
}
RELEASED = Levels.from_config(load_config("jukebox"))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openai_jukebox" / "small_prior_w128_d6"
TRAIN = PRIOR_PRESETS  # bench/prior.py's presets
REFERENCE_SECONDS_PER_AUDIO_SECOND = 9 * 3600 / 60  # ~9 V100 hours per minute of audio


# -- building -------------------------------------------------------------------------------------------------
def meta_decoder(name: str, **scaled) -> AutoregressiveTransformer:
    """The autoregressive transformer of a released prior on the meta device (exact shapes, no memory); its
    labels/lyrics/upper-level conditioners run once per window, not per token, so decoding speed is this part's."""
    pcfg = prior_config({"arch": name, **scaled})
    with torch.device("meta"):
        prior = build_prior(RELEASED, SHAPES[name], pcfg, tuple(pcfg.y_bins))
    return prior.prior


def decoder(name: str, device, dtype, small: bool = False) -> AutoregressiveTransformer:
    """`meta_decoder` with random weights on `device` in `dtype`; `small`: a stand-in of the same structure,
    scaled down for a CPU dry run."""
    scaled = dict(width=64 * prior_config({"arch": name}).heads, depth=16, n_ctx=1024, blocks=8) if small else {}
    model = meta_decoder(name, **scaled).to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    return model.to(dtype).eval().requires_grad_(False)


def parameters_on_meta(name: str) -> int:
    return sum(p.numel() for p in meta_decoder(name).parameters())


def nbytes(obj, seen=None) -> int:
    """Bytes of every tensor reachable from `obj` (a list of KV caches)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if obj.data_ptr() in seen:
            return 0
        seen.add(obj.data_ptr())
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(nbytes(o, seen) for o in obj.values())
    if hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        return sum(nbytes(o, seen) for o in vars(obj).values())
    return 0


# -- timing ---------------------------------------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def bandwidth(device, mib: int) -> float:
    """Bytes/s of a device-to-device copy (each byte read once and written once)."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() / statistics.median(times[1:])


def decode(model, device, batch: int, prompt: int, tokens: int, chunk: int, bw: float, mode: str = "graph") -> dict:
    """Prime `prompt` tokens in passes of `chunk`, then time `tokens` single-token steps taken as `mode` (graph: the
    fixed-shape step replayed from a CUDA graph; static: the same step eager; dynamic: `step` with shapes that
    change every token); rates, bytes and the roofline."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    seq = torch.randint(model.bins, (batch, prompt + tokens + 2), device=device)
    dtype = next(model.parameters()).dtype
    y_cond = torch.randn(batch, 1, model.width, device=device, dtype=dtype) if model.y_cond else None
    with torch.inference_mode(), model.streaming(capacity=prompt + tokens + 2, static=mode != "dynamic") as caches:
        sync(device)
        t0 = time.perf_counter()
        for start in range(0, prompt, chunk):
            n = min(chunk, prompt - start)
            prev = seq[:, : n - 1] if start == 0 else seq[:, start - 1 : start - 1 + n]
            model.step(prev if prev.shape[1] else None, start, batch, y_cond=y_cond)
        sync(device)
        prime_s = time.perf_counter() - t0
        if mode == "dynamic":
            step = lambda i: model.step(seq[:, prompt - 1 + i : prompt + i], prompt + i, batch, y_cond=y_cond)  # noqa: E731
        else:  # records the graph (warm-up included) before the timed steps
            decoder = StaticDecoder(model, prompt, batch, mode=mode)
            step = lambda i: decoder(seq[:, prompt - 1 + i])  # noqa: E731
        for i in range(2):  # warm-up steps (kernels, allocator)
            step(i)
        sync(device)
        t0 = time.perf_counter()
        for i in range(2, tokens + 2):
            step(i)
        sync(device)
        step_s = (time.perf_counter() - t0) / tokens
        cache = nbytes(caches)
    per_step = weights + cache  # bytes read per step: every weight once, the cache once
    roofline = bw / per_step  # steps/s
    return {
        "mode": mode, "batch": batch, "prompt": prompt, "tokens": tokens,
        "prime_tokens_per_s": batch * prompt / prime_s,
        "ms_per_step": 1000 * step_s, "tokens_per_s_per_stream": 1 / step_s, "tokens_per_s_total": batch / step_s,
        "weight_bytes": weights, "cache_bytes": cache, "roofline_steps_per_s": roofline,
        "roofline_fraction": (1 / step_s) / roofline,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }  # fmt: skip


def song_seconds(rates: dict, batch: int) -> dict:
    """Compute-seconds per audio second per level (of the released VQ-VAE) and in all, from decoding and priming
    rates at `batch`."""
    fraction = {"top": 0.125, "middle": 0.5, "bottom": 0.5}
    out = {}
    for level, r in rates.items():
        per_audio_second = RELEASED.tokens_per_second(RELEASED.index(level))
        h = fraction[level]
        reprimed = (1 - h) / h  # tokens re-primed per new token
        per_token = 1 / r["tokens_per_s_per_stream"] + reprimed * batch / r["prime_tokens_per_s"]
        out[level] = per_audio_second * per_token / batch
    out["song"] = sum(out.values())
    return out


def logits_agreement(device, dtype) -> dict:
    from jukebox_pl.interop.reference_prior_weights import load_reference_transformer

    state = torch.load(FIXTURE / "state_dict.pt", map_location="cpu", weights_only=True)
    io = torch.load(FIXTURE / "io.pt", map_location="cpu", weights_only=True)
    model = AutoregressiveTransformer(bins=1024, n_ctx=8192, width=128, depth=6, heads=1, attn_order=2, blocks=64)
    load_reference_transformer(model, state)
    model = model.to(device).eval()
    z = io["z"].to(device)
    positions = io["logits_positions"]
    with torch.no_grad():
        logits = model(z).float()
        full = torch.log_softmax(logits, -1)
        vs_reference = (logits[0, positions].cpu() - io["logits"]).abs().max().item()
        half = torch.log_softmax(model.to(dtype)(z).float(), -1)
    return {
        "fp32_vs_reference_max_abs_logit": vs_reference,
        "max_abs_log_softmax_diff": (full - half).abs().max().item(),
        "argmax_agreement": (full.argmax(-1) == half.argmax(-1)).float().mean().item(),
    }


def training(device, preset: str, n_ctx: int, batch: int, checkpoint_res: bool, steps: int) -> dict:
    model = AutoregressiveTransformer(n_ctx=n_ctx, blocks=n_ctx // 128, checkpoint_res=checkpoint_res,
                                      **TRAIN[preset]).to(device)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens = torch.randint(model.bins, (batch, n_ctx), device=device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 1):
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = model.bits_per_token(model(tokens), tokens)
        loss.backward()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times[1:])
    return {"preset": preset, "n_ctx": n_ctx, "batch": batch, "checkpoint_res": checkpoint_res, "s_per_step": s,
            "tokens_per_s": batch * n_ctx / s, "loss": loss.item(),
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None}  # fmt: skip


# -- the run ----------------------------------------------------------------------------------------------------
def run(args, device: str, dry: bool) -> dict:
    dtype = DTYPES[args.dtype]
    result = {"device": torch.cuda.get_device_name(device) if not dry else "cpu (dry run)", "dtype": args.dtype}
    bw = bandwidth(device, 64 if dry else 2048)
    result["bandwidth_gb_s"] = bw / 1e9
    print(f"{result['device']}: measured copy bandwidth {bw / 1e9:.0f} GB/s; weights in {args.dtype}", flush=True)
    if dry:
        print("  dry run: the full shapes are built on the meta device; every figure below is of a scaled-down "
              "stand-in on the CPU (it checks the script, it measures nothing of a GPU)", flush=True)  # fmt: skip
    shapes = args.shapes.split(",")
    result["parameters"] = {name: parameters_on_meta(name) for name in shapes}
    for name, n in result["parameters"].items():
        print(f"  {name}: {n / 1e9:.3f} B parameters in the decoder ({n * dtype.itemsize / 2**30:.1f} GiB)")
    batches = [int(b) for b in args.batches.split(",")]
    captured = "static" if dry else args.decode  # a dry run has no CUDA graphs: the same step, eager
    decoding = {}
    for name in shapes:
        model = decoder(name, device, dtype, small=dry)
        n_ctx = model.n_ctx
        prompt = n_ctx // 2
        runs = [(batch, captured) for batch in batches] + [(batches[0], "dynamic")]  # + the uncaptured step once
        for batch, mode in runs:
            chunk = prime_chunk(None, batch, torch.device(device)) or prompt  # as sampling primes: one pass on a GPU
            r = decode(model, device, batch, prompt, 8 if dry else args.tokens, chunk, bw, mode)
            decoding[f"{name}_b{batch}" + ("_dynamic" if mode == "dynamic" else "")] = r
            peak = f", peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else ""
            read = (r["weight_bytes"] + r["cache_bytes"]) / 2**30
            print(f"  {name} batch {batch:>2} {mode:>7}: {r['tokens_per_s_total']:8.1f} tokens/s "
                  f"({r['ms_per_step']:.2f} ms/step), {r['roofline_fraction']:.0%} of the roofline ({read:.2f} GiB "
                  f"read per step), priming {r['prime_tokens_per_s']:.0f} tokens/s{peak}", flush=True)  # fmt: skip
        del model
        if not dry:
            torch.cuda.empty_cache()
    result["decoding"] = decoding
    if "prior_5b" in shapes and "upsampler_level_0" in shapes:
        result["song"] = {}
        for batch in batches:
            rates = {"top": decoding[f"prior_5b_b{batch}"], "middle": decoding[f"upsampler_level_0_b{batch}"],
                     "bottom": decoding[f"upsampler_level_0_b{batch}"]}  # fmt: skip
            song = song_seconds(rates, batch)
            result["song"][f"b{batch}"] = song
            print(f"  song at batch {batch:>2}: {song['song']:.1f} compute-s per audio second (top {song['top']:.2f}, "
                  f"middle {song['middle']:.2f}, bottom {song['bottom']:.2f}); one minute in "
                  f"{60 * song['song'] / 60:.1f} min (reference ~{REFERENCE_SECONDS_PER_AUDIO_SECOND:.0f} s/s on a "
                  f"V100)", flush=True)  # fmt: skip
    result["logits"] = logits_agreement(device, dtype)
    print(f"  reference fixture: fp32 logits within {result['logits']['fp32_vs_reference_max_abs_logit']:.1e} of the "
          f"reference's; {args.dtype} vs fp32: max |log-softmax diff| "
          f"{result['logits']['max_abs_log_softmax_diff']:.4f}, argmax agreement "
          f"{result['logits']['argmax_agreement']:.1%}", flush=True)  # fmt: skip
    result["training"] = []
    plan = [("tiny", 1024 if dry else 8192, 2 if dry else 8), ("small", 1024 if dry else 8192, 1)]
    for preset, n_ctx, batch in plan:
        for ckpt in (False, True):
            if dry and preset == "small":
                continue
            r = training(device, preset, n_ctx, batch, ckpt, 1 if dry else 3)
            result["training"].append(r)
            peak = f", peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else ""
            print(f"  training {preset} n_ctx {n_ctx} batch {batch}, bf16 autocast, checkpoint_res={ckpt}: "
                  f"{r['tokens_per_s']:.0f} tokens/s ({r['s_per_step']:.3f} s/step){peak}", flush=True)  # fmt: skip
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="shapes on meta, the measurements on the CPU, scaled down")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--tokens", type=int, default=64, help="timed decoding steps")
    p.add_argument("--dtype", choices=DTYPES, default="bf16", help="weight (and KV cache) storage")
    p.add_argument(
        "--decode",
        choices=("graph", "compile", "static"),
        default="graph",
        help="how the timed steps run (each shape's first batch also runs the uncaptured step)",
    )
    args = p.parse_args()
    if args.dry_run:
        result = run(args, "cpu", dry=True)
    elif not torch.cuda.is_available():
        print("no GPU: nothing measured (bench/gpu.py --dry-run checks the script on the CPU)")
        sys.exit(0)
    else:
        result = run(args, "cuda:0", dry=False)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
