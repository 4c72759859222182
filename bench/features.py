"""Feature extraction: throughput and peak memory against the depth kept, side by side with jukemirlib's approach.

    python bench/features.py                      # width 512, 2048 codes, depths 9,18,36,72, batches 1,4
    python bench/features.py --width 256 --depths 36 --repeats 3

The model is the released `5b` top prior's shape (72 blocks, 8 heads, factorised attention over blocks of 64
codes, artist/genre labels and the timing signal) narrowed to --width and shortened to --n-ctx codes (the released
one: 4800 wide, 8192 codes = 23.8 s at 44.1 kHz), so that, as in the real one, the weights outweigh a clip's
activations; random weights are saved once as an export the way `import-openai` writes one (fp32). Each
measurement is a process of its own, so that its peak memory is its own:

- jukebox-pl: `load_truncated_prior(export, L)` (blocks 1..L and the embeddings, memory-mapped; nothing else is
  built or read), then `JukeboxFeatures(layers=[L])` on a batch of B clips;
- the jukemirlib approach (rodrigo-castellon/jukemirlib `setup_models` + `get_activations_custom`): the whole
  prior built, the whole file loaded with `torch.load`, then the blocks run up to layer L, one clip at a time.

Both run on the same codes with the recipe's labels (unknown artist and genre, 62 s, offset 0): each process
loads, runs one clip untimed, then times --batches-per-process batches and keeps their median. --repeats rounds
run every configuration once each, in turn (every other round in the opposite order); figures are medians
[min-max] of the rounds. Throughput is seconds of audio described per second of compute (the load is timed
apart); peak memory is the process's peak resident set (`VmHWM`, the largest of the rounds) less that of a
process that only imports torch and jukebox_pl. The
VQ-VAE encode (the top level's small convolution stack) is left out on both sides. Last, the memory plan of the
real 5B at layer 36 in fp16 and int8, from the meta device. Results go to bench/results/features.json, which
`bench/report.py` renders.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import measure

HERE = Path(__file__).resolve().parent
RELEASED = "5b"  # the top prior JukeMIR reads (no lyrics)
LAYER = 36  # the layer Castellon et al. found best


def spec(width: int, n_ctx: int):
    """The released `5b` top prior's spec, narrowed to `width` and shortened to `n_ctx` codes (attention blocks of
    64 codes, as released)."""
    from dataclasses import replace

    from jukebox_pl.interop.openai_hps import released_spec

    released = released_spec(RELEASED)
    return replace(released, prior={**released.prior, "width": width, "n_ctx": n_ctx, "blocks": n_ctx // 64})


def write_export(width: int, n_ctx: int, folder: Path) -> Path:
    """Random weights of the reduced prior as an `import-openai` export (fp32)."""
    import torch

    from jukebox_pl.interop.reference_files import prior_model
    from jukebox_pl.stages.import_openai import write_prior

    s = spec(width, n_ctx)
    torch.manual_seed(0)
    model = prior_model(s, "cpu")
    for p in model.parameters():  # small random weights everywhere (no zero-initialised projections)
        torch.nn.init.normal_(p, std=0.02)
    return write_prior(folder, model.state_dict(), s, "bench", vocab=None)


def random_codes(prior, batch: int):
    """A batch of whole-context clips of codes (the same on both sides: a fixed seed)."""
    import torch

    return torch.randint(0, prior.bins, (batch, prior.n_ctx), generator=torch.Generator().manual_seed(1))


def peak_mb() -> float:
    """This process's peak resident set since it started (VmHWM: per address space, so unlike `ru_maxrss` it does
    not carry over the parent's memory from before the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the kernel's own figure


def child(args: dict) -> dict:
    """One configuration in this process: load, one untimed clip, `repeats` timed batches."""
    import torch

    from jukebox_pl.features import JukeboxFeatures, load_truncated_prior

    torch.set_num_threads(args["threads"])
    if args["side"] == "baseline":
        return {"rss_mb": peak_mb()}
    start = time.perf_counter()
    if args["side"] == "jukebox-pl":
        prior, _ = load_truncated_prior(args["export"], args["layer"])
    else:  # jukemirlib: build everything, load everything, run the first L blocks
        from jukebox_pl.prior.model import build_prior
        from jukebox_pl.training.checkpoints.read_write import describe

        obj = torch.load(args["export"], map_location="cpu", weights_only=True)  # read whole, as it does
        info = describe(obj)
        hp = info["hparams"]
        from jukebox_pl.config.levels import Levels

        prior = build_prior(Levels.from_vqvae(hp["vqvae_cfg"], hp["sample_rate"]), hp["level"], hp["prior"])
        prior.load_state_dict({k.removeprefix("model."): v for k, v in info["state_dict"].items()})
        prior.eval().requires_grad_(False)
        del obj, info
    load_s = time.perf_counter() - start
    features = JukeboxFeatures(prior, [args["layer"]])
    codes = random_codes(prior, args["batch"])
    inputs = features.recipe_inputs(args["batch"])
    features.activations(codes[:1], {k: v[:1] for k, v in inputs.items()})  # warm-up: one clip
    times = []
    for _ in range(args["repeats"]):
        t = time.perf_counter()
        out = features.activations(codes, inputs)[args["layer"]]
        times.append(time.perf_counter() - t)
    seconds = prior.n_ctx * prior.hop_length / prior.sample_rate
    peak = peak_mb()
    return {
        "load_s": load_s, "times": times, "audio_seconds": seconds * args["batch"], "shape": list(out.shape),
        "params": sum(p.numel() for p in prior.parameters()), "rss_mb": peak,
    }  # fmt: skip


def run_child(config: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench child failed ({config}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_plan(layer: int = LAYER) -> list[dict]:
    """Bytes of the real 5B top prior's weights: whole, and cut after `layer`, in fp16 and int8 (meta device)."""
    from jukebox_pl.features import truncate
    from jukebox_pl.interop.openai_hps import released_spec
    from jukebox_pl.interop.reference_files import prior_model
    from jukebox_pl.prior.quantize import quantize_weights

    rows = []
    for depth in (None, layer):
        for weights in ("fp16", "int8"):
            model = prior_model(released_spec(RELEASED), "meta")
            if depth is not None:
                truncate(model, depth)
            params = sum(p.numel() for p in model.parameters())
            if weights == "fp16":
                model.half()
            else:
                quantize_weights(model, "int8")
            tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
            total = sum(t.numel() * t.element_size() for t in tensors)
            width, n_ctx = model.cfg.width, model.n_ctx
            hidden = n_ctx * width * (2 if weights == "fp16" else 4)
            rows.append({"layers": depth or len(model.prior.transformer._attn_mods), "weights": weights,
                         "weight_gb": total / 1e9, "hidden_state_mb": hidden / 1e6,
                         "params": params})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=512, help="the narrowed width (the released prior: 4800)")
    p.add_argument("--n-ctx", type=int, default=2048, help="codes per clip (the released prior: 8192)")
    p.add_argument("--depths", default="9,18,36,72", help="layers kept (jukebox-pl), comma-separated")
    p.add_argument("--layer", type=int, default=LAYER, help="the layer the jukemirlib approach reads")
    p.add_argument("--batches", default="1,4", help="clips per batch (jukebox-pl)")
    p.add_argument("--repeats", type=int, default=5, help="rounds (each configuration once per round)")
    p.add_argument("--batches-per-process", type=int, default=3, help="timed batches in each process (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="result file (default bench/results/features.json; '-' for none)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.repeats < measure.MIN_REPEATS:
        raise SystemExit(f"--repeats {args.repeats}: at least {measure.MIN_REPEATS}")
    sitting = measure.Sitting("features", args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        export = write_export(args.width, args.n_ctx, Path(tmp) / "run")
        base = dict(export=str(export), repeats=args.batches_per_process, threads=args.threads)
        baseline = run_child({**base, "side": "baseline", "layer": 1, "batch": 1})["rss_mb"]
        configs = [{"side": "jukemirlib approach", "layer": args.layer, "batch": 1}]
        configs += [{"side": "jukebox-pl", "layer": d, "batch": b} for d in depths for b in batches]
        runs: list[list[dict]] = [[] for _ in configs]
        for turn in range(args.repeats):  # interleaved: every configuration once per round, each in a new process,
            order = list(enumerate(configs))  # in the opposite order every other round (no side always first)
            for i, config in order if turn % 2 == 0 else order[::-1]:
                runs[i].append(run_child({**base, **config}))
            print(f"round {turn + 1} of {args.repeats} done (load {measure.load1():.1f})", flush=True)
        rows = []
        for config, done in zip(configs, runs):
            times = [statistics.median(r["times"]) for r in done]  # each process's own median
            rate = measure.stats([done[0]["audio_seconds"] / t for t in times])
            row = {**config, "load_s": measure.stats([r["load_s"] for r in done])["median"],
                   "per_batch": measure.stats(times), "audio_s_per_s": rate,
                   "peak_mb": max(r["rss_mb"] for r in done) - baseline, "params": done[0]["params"]}  # fmt: skip
            rows.append(row)
            print(f"{config['side']:>20} layer {config['layer']:>2} batch {config['batch']}: "
                  f"{measure.cell(rate, '.2f', sitting.load)} audio s/s, load {row['load_s']:.2f} s, "
                  f"peak {row['peak_mb']:.0f} MB above baseline, {row['params'] / 1e6:.1f} M params",
                  flush=True)  # fmt: skip
    plan = memory_plan(args.layer)
    for row in plan:
        print(
            f"real 5B, {row['layers']} layers, {row['weights']}: weights {row['weight_gb']:.2f} GB "
            f"({row['params'] / 1e9:.2f} B parameters); one row's hidden state {row['hidden_state_mb']:.0f} MB"
        )
    ref = next(r for r in rows if r["side"] != "jukebox-pl")
    ours = [r for r in rows if r["side"] == "jukebox-pl" and r["layer"] == args.layer]
    for r in ours:
        speed = r["audio_s_per_s"]["median"] / ref["audio_s_per_s"]["median"]
        print(
            f"layer {args.layer}, batch {r['batch']}: {speed:.2f}x the jukemirlib approach's throughput, "
            f"{r['peak_mb'] / ref['peak_mb']:.2f}x its memory"
        )
    sitting.finish({"width": args.width, "n_ctx": args.n_ctx, "baseline_mb": baseline, "repeats": args.repeats,
                    "batches_per_process": args.batches_per_process,
                    "layer": args.layer, "rows": rows, "plan": plan}, args.out)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
