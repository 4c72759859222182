"""Scaling out, measured on this machine and planned for a real one.

    python bench/scaling.py                 # all three parts (~4 min on 2 cores)
    python bench/scaling.py --parts plan    # only the memory plan (no training, seconds)

1. throughput: the tiny preset's top VQ-VAE level and top prior trained on the toy shards by 1 process and by
   2 processes (DDP, gloo), each for --steps timed steps after --warmup; samples/s over all ranks and the
   2-process / 1-process ratio. On a 2-core CPU two processes share the cores the one process had, so the ratio
   says what DDP costs here (collectives, duplicated work), not what a second GPU gains.
2. codebook collectives: what the EMA codebook update sends every step under DDP (a broadcast of l_bins random
   restart candidates, all-reduces of the code sums and counts), timed in a 2-process gloo group for the tiny
   codebook (128 x 32) and the released one (2048 x 64), beside the tiny level's step time.
3. memory plan: the `jukebox` preset's top prior (prior_5b_lyrics, built on the meta device: exact parameter
   counts) under `trainer.strategy=fsdp` over --gpus GPUs of --gpu-gb each: per GPU, fp32 weights, gradients,
   Adam moments and the EMA copy (all sharded), the bf16 units gathered at once (one block computing, the next
   prefetched), and activations with `checkpoint_res` (each block's bf16 input kept, one block recomputed at a
   time: its q/k/v, attention scores over a block and MLP), at --batch sequences per GPU.

The toy shards come from `make toy-shards` (data/toy_shards). The last line printed is a JSON object with every
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULT_TAG = "@@SCALING_RESULT "
GIB = 2**30


# -- 1. throughput ------------------------------------------------------------------------------------------
def throughput_worker(stage: str, devices: int, shards: str, run: str, warmup: int, steps: int) -> None:
    import pytorch_lightning as pl

    from jukebox_pl.stages.train_prior import train_prior
    from jukebox_pl.stages.train_vqvae import train_vqvae

    class Clock(pl.Callback):
        def __init__(self):
            self.ends: list[float] = []
            self.samples = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())
            self.samples = (batch["audio"] if "audio" in batch else batch["codes"]).shape[0]

        def on_train_end(self, trainer, pl_module):
            if trainer.global_rank == 0:
                timed = self.ends[warmup:]
                per_step = statistics.median(b - a for a, b in zip(timed, timed[1:]))
                world = trainer.world_size
                figures = {"s_per_step": per_step, "world": world, "samples_per_s": world * self.samples / per_step}
                print(RESULT_TAG + json.dumps(figures), flush=True)

    common = ["trainer.accelerator=cpu", f"trainer.devices={devices}", f"trainer.max_steps={warmup + steps + 1}",
              "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false", "run.log_audio_every_n_steps=0",
              "run.checkpoint_every_n_steps=100000", *(["trainer.strategy=ddp"] if devices > 1 else [])]  # fmt: skip
    if stage == "vqvae":
        train_vqvae(Path(run), "top", "tiny", shards, common, callbacks=[Clock()])
    else:
        train_prior(Path(run), "top", "tiny", shards, common, callbacks=[Clock()])


def run_worker(args: list[str], timeout: float = 1200) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK")}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT_TAG)), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"worker {args} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    return json.loads(line[len(RESULT_TAG) :])


def throughput(shards: str, warmup: int, steps: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"  # the prior needs a trained top VQ-VAE level: one short 1-process run
        run_worker(["vqvae", "1", shards, str(base), "0", "1"])
        for stage in ("vqvae", "prior"):
            for devices in (1, 2):
                run = Path(tmp) / f"{stage}{devices}"
                run.mkdir()
                if stage == "prior":
                    (run / "vqvae_top").symlink_to(base / "vqvae_top", target_is_directory=True)
                out[f"{stage}_{devices}"] = run_worker([stage, str(devices), shards, str(run), str(warmup), str(steps)])
            ratio = out[f"{stage}_2"]["samples_per_s"] / out[f"{stage}_1"]["samples_per_s"]
            out[f"{stage}_ratio"] = ratio
            print(f"  tiny {stage} top: 1 process {out[f'{stage}_1']['samples_per_s']:.2f} samples/s "
                  f"({out[f'{stage}_1']['s_per_step']:.3f} s/step), 2 processes "
                  f"{out[f'{stage}_2']['samples_per_s']:.2f} samples/s ({out[f'{stage}_2']['s_per_step']:.3f} s/step): "
                  f"{ratio:.2f}x", flush=True)  # fmt: skip
    return out


# -- 2. codebook collectives ------------------------------------------------------------------------------
def collectives_worker(rank: str, port: str, reps: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=int(rank), world_size=2)
    result = {}
    for name, (bins, width) in {"tiny": (128, 32), "released": (2048, 64)}.items():
        sums, counts, candidates = torch.randn(bins, width), torch.rand(bins), torch.randn(bins, width)
        times = []
        for i in range(int(reps) + 3):
            dist.barrier()
            t0 = time.perf_counter()
            dist.broadcast(candidates, 0)
            dist.all_reduce(sums)
            dist.all_reduce(counts)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        result[name] = {"ms_per_step": 1000 * statistics.median(times), "bytes": 4 * (2 * bins * width + bins)}
    if rank == "0":
        print(RESULT_TAG + json.dumps(result), flush=True)
    dist.destroy_process_group()


def collectives(reps: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", "collectives"]
    procs = [subprocess.Popen([*cmd, str(r), port, str(reps)], stdout=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    line = next(x for x in outs[0].splitlines() if x.startswith(RESULT_TAG))
    return json.loads(line[len(RESULT_TAG) :])


# -- 3. memory plan -----------------------------------------------------------------------------------------
def memory_plan(gpus: int, gpu_gb: float, batch: int) -> dict:
    from jukebox_pl.config import load_config
    from jukebox_pl.config.levels import Levels
    from jukebox_pl.prior.model import build_prior
    from jukebox_pl.prior.transformer import ResAttnBlock

    cfg = load_config("jukebox")
    levels, p = Levels.from_config(cfg), cfg.prior.top
    with torch.device("meta"):
        prior = build_prior(levels, "top", p, tuple(p.y_bins))
    params = sum(t.numel() for t in prior.parameters())
    blocks = [m for m in prior.modules() if isinstance(m, ResAttnBlock)]
    largest_unit = max(sum(t.numel() for t in b.parameters()) for b in blocks)
    ema = p.ema_decay is not None
    sharded = 4 * params / gpus  # fp32 bytes of one full copy, split over the GPUs
    plan = {
        "weights fp32 (sharded)": sharded,
        "gradients fp32 (sharded)": sharded,
        "Adam moments fp32 (sharded)": 2 * sharded,
        "EMA copy fp32 (sharded)": sharded if ema else 0.0,
        "gathered bf16 units (2 blocks)": 2 * 2 * largest_unit,
    }
    width, n_ctx, heads, depth = p.width, p.n_ctx, p.heads, len(blocks)
    block_ctx = n_ctx // p.blocks
    # checkpoint_res: each block's bf16 input (the music decoder's, and the lyrics encoder's when there is one)
    kept = batch * n_ctx * width * 2 * p.depth
    if p.lyrics == "encoder":
        kept += batch * p.n_tokens * p.prime_width * 2 * p.prime_depth
    # one block recomputed: q, k, v, the attention output, the MLP's 4x hidden layer and its GELU (bf16), and the
    # fp32 attention scores + softmax over block_ctx keys (the widest kind: previous-row attends to one block)
    recompute = batch * n_ctx * width * 2 * (4 + 2 * 4) + 2 * batch * heads * n_ctx * block_ctx * 4
    logits = batch * n_ctx * levels.codebook_size * 4 * 2  # fp32 logits and their gradient
    plan["activations (checkpointed)"] = kept + recompute + logits
    total = sum(plan.values())
    print(f"  jukebox preset top prior ({p.arch}): {params / 1e9:.3f} B parameters, {depth} blocks "
          f"(largest {largest_unit / 1e6:.1f} M), n_ctx {n_ctx}, width {width}; FSDP over {gpus} x {gpu_gb:.0f} GB, "
          f"batch {batch} per GPU")  # fmt: skip
    for name, value in plan.items():
        print(f"    {name:<34} {value / GIB:8.2f} GiB")
    fits = total / GIB <= gpu_gb * 0.9
    print(f"    {'total per GPU':<34} {total / GIB:8.2f} GiB of {gpu_gb:.0f} GB: "
          f"{'fits (with >= 10% to spare)' if fits else 'does NOT fit'}")  # fmt: skip
    unsharded = 4 * params * (4 + (1 if ema else 0)) / GIB
    print(f"    (without sharding: {unsharded:.0f} GiB of weights, gradients, Adam and EMA on every GPU)")
    return {"params": params, "per_gpu_gib": {k: v / GIB for k, v in plan.items()}, "total_gib": total / GIB,
            "fits": fits, "unsharded_gib": unsharded}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_worker":
        kind, *rest = sys.argv[2:]
        if kind == "collectives":
            collectives_worker(*rest)
        else:
            stage, devices, shards, run, warmup, steps = kind, *rest
            throughput_worker(stage, int(devices), shards, run, int(warmup), int(steps))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts", default="throughput,collectives,plan", help="comma-separated: throughput,collectives,plan"
    )
    p.add_argument("--shards", default="data/toy_shards", help="prep shards to train on (make toy-shards)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps")
    p.add_argument("--steps", type=int, default=15, help="timed steps")
    p.add_argument("--reps", type=int, default=50, help="timed rounds of the codebook collectives")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-gb", type=float, default=80.0)
    p.add_argument("--batch", type=int, default=1, help="sequences per GPU in the memory plan")
    args = p.parse_args()
    parts = args.parts.split(",")
    result = {}
    if "throughput" in parts:
        if not (Path(args.shards) / "manifest.json").is_file():
            sys.exit(f"{args.shards} holds no shards: run `make toy-shards` first (or pass --shards)")
        print("1. throughput, 1 vs 2 processes (DDP, gloo, this CPU)", flush=True)
        result["throughput"] = throughput(args.shards, args.warmup, args.steps)
    if "collectives" in parts:
        print("2. the codebook update's collectives per step (2 processes, gloo)", flush=True)
        result["collectives"] = collectives(args.reps)
        for name, r in result["collectives"].items():
            line = f"  {name} codebook: {r['ms_per_step']:.2f} ms per step ({r['bytes'] / 1024:.0f} KiB sent)"
            if name == "tiny" and "throughput" in result:
                share = r["ms_per_step"] / (1000 * result["throughput"]["vqvae_2"]["s_per_step"])
                line += f", {share:.1%} of the tiny level's 2-process step"
            print(line)
    if "plan" in parts:
        print("3. memory plan under FSDP", flush=True)
        result["plan"] = memory_plan(args.gpus, args.gpu_gb, args.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
