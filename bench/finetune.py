"""Fine-tuning a prior on a new artist, measured on the toy set: which `--train` mode to choose.

    python bench/finetune.py                                   # every mode, the tiny preset's budgets (~20 min)
    python bench/finetune.py --quick                           # shorter training everywhere (~10 min)
    python bench/finetune.py --modes embeddings,lora:8 --steps 400 --work runs/bench_finetune

1. The toy set (4 artists x 3 genres x 3 songs) with one artist (`--new`, default Bell Bruno) held out of
   everything: the base run's top VQ-VAE level and top prior (tiny preset) train on the other three artists only.
2. The held-out artist's songs become their own shards; `prep` holds some of them out for validation.
3. Each mode fine-tunes the base's top prior on them with `jukebox_pl.stages.finetune` (what `jukebox-pl
   finetune` runs: label rows by name, the new row from the mean of the base rows, early stopping on the new
   artist's held-out bits/token, the best checkpoint kept).

Per mode: trainable parameters, wall time and steps (the best step in brackets), the new artist's held-out
bits/token before -> after, the old artists' held-out bits/token before -> after (forgetting), both measured by
`jukebox_pl.stages.evaluate` on the same validation crops, and the demo's artist check on samples: songs asked
for the new artist (and for each old one), sampled at the top level, decoded by the top VQ-VAE level, and named
by the demo's nearest-centroid timbre classifier, trained on the real clips of all four artists passed through
the same codec (chance: 1 in 4). "Before" is the fine-tuning run's starting point (base weights, new row the mean
of the base rows), saved when each fine-tuning run starts. Every step is kept in `--work` and reused by the next
invocation (delete the folder to measure again). The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import pytorch_lightning as pl

from jukebox_pl.data.prep import PrepOptions, prepare_shards
from jukebox_pl.data.toy import ARTISTS, make_toy_dataset
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.stages.demo import artist_classifier, recognition, stage_state
from jukebox_pl.stages.evaluate import evaluate_prior
from jukebox_pl.stages.finetune import finetune
from jukebox_pl.stages.sample import SampleRequest, sample_song
from jukebox_pl.stages.train_prior import train_prior
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.training.checkpoints.read_write import load_any
from jukebox_pl.vqvae.vqvae import VQVAE

MODES = ("all", "embeddings", "top-layers:2", "lora:8")
QUIET = ["trainer.enable_progress_bar=false"]
EVAL = ["data.val_crops_per_track=4"]  # more crops of each held-out song than validation during training reads


class SaveStart(pl.Callback):
    """Saves the fine-tuning run's starting weights (the "before" of the table) when training starts."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_start(self, trainer, pl_module):
        if not self.path.is_file():
            trainer.save_checkpoint(self.path)


def split_toy_set(toy: Path, work: Path, new: str) -> tuple[Path, Path]:
    """Copy the toy set's songs into two source folders: every artist but `new`, and `new` alone."""
    with open(toy / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    folders = {}
    for name, keep in (("base_src", lambda r: r["artist"] != new), ("new_src", lambda r: r["artist"] == new)):
        src = work / name
        chosen = [r for r in rows if keep(r)]
        for r in chosen:
            (src / "audio" / r["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(toy / "audio" / r["path"], src / "audio" / r["path"])
        with open(src / "metadata.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
        folders[name] = src
    return folders["base_src"], folders["new_src"]


def shards_of(src: Path, out: Path, val_fraction: float) -> Path:
    if not (out / "manifest.json").is_file():
        prepare_shards(PrepOptions(src=str(src / "audio"), out=str(out), metadata=str(src / "metadata.csv"),
                                   sr=22050, val_fraction=val_fraction, shard_tracks=8), progress=False)  # fmt: skip
    counts = json.loads((out / "manifest.json").read_text())["counts"]["tracks"]
    print(f"{out}: {counts['train']} songs to train on, {counts['val']} held out")
    return out


def train_base(run: Path, shards: Path, vq_steps: int, prior_steps: int) -> dict:
    times = {}
    for kind, steps, train in (("vqvae", vq_steps, train_vqvae), ("prior", prior_steps, train_prior)):
        done = stage_state(run, f"{kind}_top")
        if done is not None and done >= steps:
            continue
        t0 = time.perf_counter()
        train(run, "top", "tiny", str(shards), [f"trainer.max_steps={steps}", *QUIET], resume=done is not None)
        times[kind] = time.perf_counter() - t0
    return times


def artist_check(run: Path, ckpt: Path, artists: list[str], lyrics: str, out: Path, classifier, seconds: float):
    """How many of the songs sampled for `artists` (top level only, decoded by the top VQ-VAE) the classifier
    names as the artist asked for."""
    if not (out / "summary.json").is_file():
        models = SamplingModels.from_checkpoints([str(run / "vqvae_top" / "checkpoints" / "last.ckpt")], [str(ckpt)])
        shutil.rmtree(out, ignore_errors=True)
        sample_song(models, SampleRequest(out=str(out), artists=artists, lyrics=lyrics, seconds=seconds, seed=0))
    return recognition(out, artists, classifier, level="top")


def trainable_parameters(module) -> tuple[int, int]:
    params = list(module.model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def run_mode(mode: str, base: Path, new_shards: Path, work: Path, steps: int, interval: int, patience: int,
             lr: float | None = None) -> dict:  # fmt: skip
    run = work / f"ft_{mode.replace(':', '')}"
    record = run / "bench.json"
    if record.is_file():
        return json.loads(record.read_text())
    shutil.rmtree(run, ignore_errors=True)
    start = run / "prior_top" / "checkpoints" / "start.ckpt"
    t0 = time.perf_counter()
    settings = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={interval}", *QUIET]
    settings += [f"prior.top.optim.lr={lr}"] if lr else []
    module = finetune(base, str(new_shards), run, "top", mode, overrides=settings, patience=patience,
                      callbacks=[SaveStart(start)])  # fmt: skip
    wall = time.perf_counter() - t0
    learn, total = trainable_parameters(module)
    best = run / "prior_top" / "checkpoints" / "best.ckpt"
    out = {"mode": mode, "start": str(start), "best": str(best), "trainable": learn, "parameters": total,
           "wall_s": wall, "steps": module.trainer.global_step, "best_step": load_any(best)["global_step"]}  # fmt: skip
    record.write_text(json.dumps(out) + "\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/bench_finetune", help="folder for the data, runs and samples (reused)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated --train modes")
    p.add_argument("--new", default="Bell Bruno", choices=ARTISTS, help="the artist held out of the base run")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps at most (early stopping may end sooner)")
    p.add_argument("--val-every", type=int, default=25, help="validate on the held-out songs every N steps")
    p.add_argument("--patience", type=int, default=4, help="validations without improvement before stopping")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the base prior's, prior.top.optim.lr)")
    p.add_argument("--samples", type=int, default=8, help="songs sampled for the new artist per model")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each sampled song")
    p.add_argument("--quick", action="store_true", help="shorter base training and fine-tuning (a rougher table)")
    args = p.parse_args()
    vq_steps, prior_steps = (150, 400) if args.quick else (400, 1200)
    steps = min(args.steps, 100) if args.quick else args.steps
    work = Path(args.work)
    toy = work / "toy"
    if not (toy / "metadata.csv").is_file():
        make_toy_dataset(toy, songs_per_pair=3)
    base_src, new_src = split_toy_set(toy, work, args.new)
    base_shards = shards_of(base_src, work / "base_shards", 0.2)
    new_shards = shards_of(new_src, work / "new_shards", 0.34)
    base = work / "base"
    times = train_base(base, base_shards, vq_steps, prior_steps)
    for stage, secs in times.items():
        print(f"base {stage}_top trained in {secs:.0f} s")

    results = [run_mode(m, base, new_shards, work, steps, args.val_every, args.patience, args.lr)
               for m in args.modes.split(",")]  # fmt: skip

    with open(toy / "metadata.csv", newline="") as fh:
        songs = list(csv.DictReader(fh))
    lyrics = next(s["lyrics"] for s in songs if s["artist"] == args.new)
    old = sorted({s["artist"] for s in songs} - {args.new})
    asked = [args.new] * args.samples + old * 2
    codec = VQVAE.from_run(base).level("top")
    classifier = artist_classifier(toy, 22050, args.seconds, codec)

    def figures(ckpt: Path, name: str) -> dict:
        check = artist_check(base, ckpt, asked, lyrics, work / "samples" / name, classifier, args.seconds)
        heard = list(zip(check["asked"], check["heard"]))
        return {
            "new_bits": evaluate_prior(ckpt, new_shards, overrides=EVAL)["music_bits_per_token"],
            "old_bits": evaluate_prior(ckpt, base_shards, overrides=EVAL)["music_bits_per_token"],
            "new_heard": sum(a == h for a, h in heard if a == args.new),
            "old_heard": sum(a == h for a, h in heard if a != args.new),
        }

    before = figures(Path(results[0]["start"]), "before")  # the same starting weights in every mode
    base_old = evaluate_prior(base, base_shards, overrides=EVAL)["music_bits_per_token"]
    for r in results:
        r.update({f"after_{k}": v for k, v in figures(Path(r["best"]), r["mode"].replace(":", "")).items()})
    n_old = 2 * len(old)
    print(f"\nnew artist: {args.new}; base run: {', '.join(old)}; before = the fine-tuning start (mean row)")
    print(f"the base prior's held-out bits/token on the old artists: {base_old:.3f}\n")
    print("| --train | trainable parameters | wall time (steps, best) | new artist bits/token (before -> after) "
          "| old artists bits/token (before -> after) | new artist heard in samples | old artists heard |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['mode']} | {r['trainable']:,} of {r['parameters']:,} ({r['trainable'] / r['parameters']:.1%}) "
            f"| {r['wall_s']:.0f} s ({r['steps']}, {r['best_step']}) "
            f"| {before['new_bits']:.3f} -> {r['after_new_bits']:.3f} "
            f"| {before['old_bits']:.3f} -> {r['after_old_bits']:.3f} "
            f"| {before['new_heard']}/{args.samples} -> {r['after_new_heard']}/{args.samples} "
            f"| {before['old_heard']}/{n_old} -> {r['after_old_heard']}/{n_old} |"
        )
    print(json.dumps({"new": args.new, "base_old_bits": base_old, "before": before, "modes": results}))


if __name__ == "__main__":
    main()
