"""Feature extraction: throughput and peak memory against the depth kept, side by side with jukemirlib's approach.

    python bench/features.py                                   # width 256, depths 9,18,36,72, batches 1,4
    python bench/features.py --width 128 --depths 36 --repeats 3

The model is the released `5b` top prior's shape (72 blocks, 8 heads, factorised attention over blocks of 64 codes,
a context of 8192 codes = 23.8 s at 44.1 kHz, artist/genre labels and the timing signal) narrowed to --width, with
random weights saved once as an export the way `import-openai` writes one (fp32). Each configuration runs in a
process of its own, so that its peak memory is its own:

- jukebox-pl: `load_truncated_prior(export, L)` (blocks 1..L and the embeddings, memory-mapped; nothing else is
  built or read), then `JukeboxFeatures(layers=[L])` on a batch of B clips of 8192 codes;
- the jukemirlib approach (rodrigo-castellon/jukemirlib `setup_models` + `get_activations_custom`): the whole prior
  built, the whole file loaded with `torch.load`, then the blocks run up to layer L for one clip at a time.

Both are timed on the same codes with the recipe's labels (unknown artist and genre, 62 s, offset 0) after one
untimed clip; --repeats timed batches give the median [min-max]. Throughput is seconds of audio described per second
of compute; the load is timed apart. Peak memory is the process's peak resident set (`ru_maxrss`) less that of a
process that only imports torch and jukebox_pl (printed). The VQ-VAE encode (a small convolution stack for the top
level) is left out on both sides. Last, the memory plan of the real 5B at layer 36 in fp16 and int8, from the meta
device. Results go to bench/results/features.json, which `bench/report.py` renders.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import measure

HERE = Path(__file__).resolve().parent
RELEASED = "5b"  # the top prior JukeMIR reads (no lyrics)
LAYER = 36  # the layer Castellon et al. found best


def spec(width: int):
    """The released `5b` top prior's spec with its width (and its conditioner width) narrowed."""
    from dataclasses import replace

    from jukebox_pl.interop.openai_hps import released_spec

    released = released_spec(RELEASED)
    return replace(released, prior={**released.prior, "width": width})


def write_export(width: int, folder: Path) -> Path:
    """Random weights of the narrowed prior as an `import-openai` export (fp32)."""
    import torch

    from jukebox_pl.interop.reference_files import prior_model
    from jukebox_pl.stages.import_openai import write_prior

    s = spec(width)
    torch.manual_seed(0)
    model = prior_model(s, "cpu")
    for p in model.parameters():  # small random weights everywhere (no zero-initialised projections)
        torch.nn.init.normal_(p, std=0.02)
    return write_prior(folder, model.state_dict(), s, "bench", vocab=None)


def random_codes(prior, batch: int):
    """A batch of whole-context clips of codes (the same on both sides: a fixed seed)."""
    import torch

    return torch.randint(0, prior.bins, (batch, prior.n_ctx), generator=torch.Generator().manual_seed(1))


def child(args: dict) -> dict:
    """One configuration in this process: load, one untimed clip, `repeats` timed batches."""
    import torch

    from jukebox_pl.features import JukeboxFeatures, load_truncated_prior

    torch.set_num_threads(args["threads"])
    if args["side"] == "baseline":
        return {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    p.add_argument("--width", type=int, default=256, help="the narrowed width (the released prior: 4800)")
    p.add_argument("--depths", default="9,18,36,72", help="layers kept (jukebox-pl), comma-separated")
    p.add_argument("--layer", type=int, default=LAYER, help="the layer the jukemirlib approach reads")
    p.add_argument("--batches", default="1,4", help="clips per batch (jukebox-pl)")
    p.add_argument("--repeats", type=int, default=3)
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
        export = write_export(args.width, Path(tmp) / "run")
        base = dict(export=str(export), repeats=args.repeats, threads=args.threads)
        baseline = run_child({**base, "side": "baseline", "layer": 1, "batch": 1})["rss_mb"]
        configs = [{"side": "jukemirlib approach", "layer": args.layer, "batch": 1}]
        configs += [{"side": "jukebox-pl", "layer": d, "batch": b} for d in depths for b in batches]
        rows = []
        for config in configs:
            r = run_child({**base, **config})
            per_batch = measure.stats(r["times"])
            rate = measure.stats([r["audio_seconds"] / t for t in r["times"]])
            row = {**config, "load_s": r["load_s"], "per_batch": per_batch, "audio_s_per_s": rate,
                   "peak_mb": r["rss_mb"] - baseline, "params": r["params"]}  # fmt: skip
            rows.append(row)
            print(f"{config['side']:>20} layer {config['layer']:>2} batch {config['batch']}: "
                  f"{measure.cell(rate, '.2f', sitting.load)} audio s/s, load {r['load_s']:.2f} s, "
                  f"peak {row['peak_mb']:.0f} MB above baseline, {r['params'] / 1e6:.1f} M params",
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
    sitting.finish({"width": args.width, "baseline_mb": baseline, "repeats": args.repeats, "layer": args.layer,
                    "rows": rows, "plan": plan}, args.out)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
