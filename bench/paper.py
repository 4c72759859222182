"""The paper's VQ-VAE evidence on real music: learning curves per level, the four ablations, the priors' gain.

    python bench/paper.py --data SHARDS [--levels top ...] [--steps N] [--json OUT]
                          [--parts curves,ablations,priors] [--ablation-steps N] [--prior-steps N]
    make bench-paper    # on `make real-music`'s 22.05 kHz shards, the tiny preset, writes bench/results/paper.json

Everything is measured on held-out songs: evenly spaced crops of the shards' validation tracks (whole songs that
no stage trains on). Per VQ-VAE level (`curves`): spectral convergence pooled over the clips (dB, 2048/256/1536,
lower is better; see jukebox_pl.vqvae.losses.pooled_spectral_convergence_db), SI-SDR, and code use on the
held-out audio (distinct codes, perplexity), every --eval-every steps from the untrained model on. Then the
paper's ablations (`ablations`, on --ablation-level, all with the same data, seed and steps): random restarts
on / off (code use over steps), codebook sizes (--codebook-sizes), the spectral loss on / off (the
reconstruction's energy above --high-hz against the real audio's), and separated autoencoders against one
hierarchical VQ-VAE-2-style model (each level's held-out code use). The priors (`priors`): held-out bits/token
of each level's prior against the unigram entropy of the same held-out codes, the top prior with and without
labels. Targets (issue 20) are checked at the end. The defaults are what README "Real music" reports (about
75 minutes on 2 cores); `--steps 9000` is the 40-minutes-a-level budget.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from jukebox_pl.config import load_config
from jukebox_pl.config.levels import Levels
from jukebox_pl.stages.datamodules import vqvae_datamodule
from jukebox_pl.stages.demo import DEMO_STEPS
from jukebox_pl.stages.evaluate import evaluate_prior, quiet_lightning
from jukebox_pl.stages.train_prior import train_prior
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.vqvae.lightning import HierarchicalVQVAEModule
from jukebox_pl.vqvae.losses import Magnitudes, pooled_spectral_convergence_db
from jukebox_pl.vqvae.model import codebook_stats_from_counts

sys.path.insert(0, str(Path(__file__).parent))
from vqvae import validation_clips  # noqa: E402

LEVELS = ("bottom", "middle", "top")
QUIET = ["trainer.enable_progress_bar=false", "run.log_audio_every_n_steps=0"]
ABLATIONS = {
    "restarts off": ["vqvae.revival_threshold=0", "vqvae.revival_relative=null"],
    "spectral loss off": ["vqvae.multispectral=0"],
}


# -- held-out measurements ------------------------------------------------------------------------------------
class HeldOut:
    """The held-out clips and what is measured on them: pooled spectral convergence, SI-SDR, the reconstruction's
    energy above `high_hz` against the real audio's, and code use per level."""

    def __init__(self, clips: list[torch.Tensor], sample_rate: int, high_hz: float):
        self.clips, self.sample_rate = clips, sample_rate
        self.stft = Magnitudes(2048, 256, 1536)
        self.high_bin = int(high_hz / (sample_rate / 2048))

    @property
    def seconds(self) -> float:
        return sum(c.shape[0] * c.shape[-1] for c in self.clips) / self.sample_rate

    @torch.no_grad()
    def measure(self, roundtrip, l_bins: int) -> dict:
        """`roundtrip(audio) -> (recon, [codes of each level])` over every clip."""
        error = target = high_real = high_recon = 0.0
        sdr, counts = [], None
        for x in self.clips:
            recon, codes = roundtrip(x)
            recon = recon[..., : x.shape[-1]].float()
            real_mag, recon_mag = self.stft(x), self.stft(recon)
            error += float((real_mag - recon_mag).pow(2).sum())
            target += float(real_mag.pow(2).sum())
            high_real += float(real_mag[:, self.high_bin :].pow(2).sum())
            high_recon += float(recon_mag[:, self.high_bin :].pow(2).sum())
            sdr.append(scale_invariant_signal_distortion_ratio(recon.mean(1), x.float().mean(1)))
            batch = [torch.bincount(c.reshape(-1), minlength=l_bins) for c in codes]
            counts = batch if counts is None else [a + b for a, b in zip(counts, batch)]
        row = {
            "sc_db": round(pooled_spectral_convergence_db(error, target), 3),
            "si_sdr": round(float(torch.cat(sdr).mean()), 3),
            "high_band_db": round(10 * math.log10(max(high_recon, 1e-20) / max(high_real, 1e-20)), 3),
        }
        for i, c in enumerate(counts):
            stats = codebook_stats_from_counts(c)
            suffix = "" if len(counts) == 1 else f"_level{i}"
            row[f"codes_used{suffix}"] = int((c > 0).sum())
            row[f"perplexity{suffix}"] = round(stats["perplexity"], 2)
            row[f"unigram_bits{suffix}"] = round(stats["entropy_bits"], 4)
        return row


def level_roundtrip(module):
    """Audio through one level's codebook and back; its codes as a one-level list."""

    def roundtrip(x):
        codes = module.model.encode(x)
        return module.model.decode(codes), [codes]

    return roundtrip


def hierarchical_roundtrip(module, scrambled: int | None = None):
    """Audio through every level of the combined model; with `scrambled`, that level's codes are replaced by
    uniformly random ones before decoding (how much the reconstruction relies on that level)."""
    model = module.model

    def roundtrip(x):
        codes = model.encode(x)
        if scrambled is not None:
            generator = torch.Generator().manual_seed(scrambled)
            codes[scrambled] = torch.randint(0, model.cfg.l_bins, codes[scrambled].shape, generator=generator)
        return model.decode(codes), codes

    return roundtrip


class Curve(pl.Callback):
    """Measures the module on the held-out clips every `every` steps (and, for a single level, untrained: its
    codebook initialised from a training batch's encoder outputs, as training's first step would)."""

    def __init__(self, held: HeldOut, every: int, roundtrip, l_bins: int, label: str):
        self.held, self.every, self.roundtrip, self.l_bins, self.label = held, every, roundtrip, l_bins, label
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def record(self, trainer, module) -> None:
        was_training = module.training
        module.eval()
        row = {"step": trainer.global_step, **self.held.measure(self.roundtrip(module), self.l_bins)}
        row["train_s"] = round(time.perf_counter() - self.start, 1)
        module.train(was_training)
        self.rows.append(row)
        shown = ", ".join(f"{k} {v}" for k, v in row.items() if k != "step")
        print(f"  {self.label} step {row['step']}: {shown}", flush=True)

    def on_train_start(self, trainer, module) -> None:
        self.start = time.perf_counter()
        bottleneck = getattr(getattr(module, "model", None), "bottleneck", None)
        if bottleneck is None:
            return
        if not bool(bottleneck.initialised):
            batch = next(iter(trainer.datamodule.train_dataloader()))["audio"].to(module.device)
            with torch.no_grad():
                latents = module.model.encoder(batch)
            bottleneck.init_codebook(latents.permute(0, 2, 1).reshape(-1, latents.shape[1]).float())
        self.record(trainer, module)

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if trainer.global_step % self.every == 0 or trainer.global_step == trainer.max_steps:
            self.record(trainer, module)


# -- training -------------------------------------------------------------------------------------------------
def train_level(work: Path, name: str, data: str, overrides: list[str], held: HeldOut, every: int, label: str):
    cfg = load_config("tiny", [*overrides, f"data.shards={data}"])
    curve = Curve(held, every, level_roundtrip, cfg.vqvae.l_bins, label)
    start = time.perf_counter()
    train_vqvae(work, name, "tiny", data, [*QUIET, "trainer.limit_val_batches=0", *overrides], callbacks=[curve])
    return {"overrides": overrides, "train_s": round(time.perf_counter() - start, 1), "curve": curve.rows}


def train_hierarchical(data: str, steps: int, held: HeldOut, every: int, overrides: list[str] = ()) -> dict:
    """One VQ-VAE-2-style model of all the preset's levels, trained like a level (same data, seed, steps)."""
    cfg = load_config("tiny", [*overrides, f"data.shards={data}", f"trainer.max_steps={steps}"])
    pl.seed_everything(cfg.seed, workers=True)
    module = HierarchicalVQVAEModule(cfg.vqvae, cfg.data.sample_rate)
    curve = Curve(held, every, hierarchical_roundtrip, cfg.vqvae.l_bins, "hierarchical")
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[curve],
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit(module, datamodule=vqvae_datamodule(cfg))
    seconds = round(time.perf_counter() - start, 1)
    module.eval()
    whole = curve.rows[-1]["sc_db"]
    reliance = {  # dB lost when one level's codes are random: near 0 = the decoder bypasses that level
        LEVELS[i]: round(held.measure(hierarchical_roundtrip(module, i), cfg.vqvae.l_bins)["sc_db"] - whole, 3)
        for i in range(cfg.vqvae.levels)
    }
    print(f"  hierarchical: dB lost with one level's codes random: {reliance}", flush=True)
    return {"train_s": seconds, "curve": curve.rows, "scrambled_level_db": reliance}


def train_priors(
    work: Path, data: str, levels: list[str], steps: int | None, unigram: dict, overrides: list[str] = ()
) -> dict:
    """Each level's prior on the run's VQ-VAE (upsamplers need the level above too); the top one twice, with
    and without labels. Held-out bits/token from `jukebox_pl.stages.evaluate` on the validation tracks."""
    rows = {}
    trained = set(levels)
    for name in reversed(LEVELS):
        above = LEVELS[LEVELS.index(name) + 1] if name != "top" else None
        if name not in trained or (above and above not in trained):
            continue
        for labels in (True, False) if name == "top" else (True,):
            run = work if labels else work.parent / f"{work.name}_nolabels"
            if not labels and not (run / "vqvae_top").is_dir():
                shutil.copytree(work / "vqvae_top", run / "vqvae_top")
            extra = [f"trainer.max_steps={steps if steps else DEMO_STEPS['prior']}"]  # 0 / None: the demo's
            extra += [] if labels else [f"prior.{name}.labels=false"]
            start = time.perf_counter()
            train_prior(run, name, "tiny", data, [*QUIET, *overrides, *extra])
            seconds = time.perf_counter() - start
            held = evaluate_prior(run, data, name, ["data.val_crops_per_track=8"])
            bits = held["music_bits_per_token"]
            key = f"{name}{'' if labels else ' (no labels)'}"
            rows[key] = {
                "bits_per_token": round(bits, 4),
                "unigram_bits": unigram[name],
                "gain": round(1 - bits / unigram[name], 4),
                "train_s": round(seconds, 1),
            }
            print(f"  prior {key}: {rows[key]}", flush=True)
    return rows


# -- reporting ------------------------------------------------------------------------------------------------
def meta(args) -> dict:
    def git(*cmd):
        done = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=Path(__file__).parent)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "git_commit": git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain") else ""),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "data": args.data,
        "steps": args.steps,
        "ablation_steps": args.ablation_steps,
        "prior_steps": args.prior_steps,
    }


def targets(result: dict) -> list[str]:
    """Issue 20's targets, each a line: met or missed, by how much."""
    lines = []
    for name, level in result.get("levels", {}).items():
        first, last = level["curve"][0], level["curve"][-1]
        l_bins = level["l_bins"]
        checks = (
            ("codes used", last["codes_used"], l_bins / 2),
            ("perplexity", last["perplexity"], l_bins / 4),
            ("dB below untrained", round(first["sc_db"] - last["sc_db"], 2), 6.0),
        )
        for what, value, want in checks:
            lines.append(f"{name}: {what} {value} (target >= {want:g}): {'met' if value >= want else 'missed'}")
    for key, row in result.get("priors", {}).items():
        if key == "top":
            ok = row["gain"] >= 0.10
            lines.append(f"top prior: {row['gain']:.1%} below the unigram entropy (target >= 10%): "
                         f"{'met' if ok else 'missed'}")  # fmt: skip
    return lines


def _at(curve: list[dict], step: int) -> dict:
    """The curve's row at `step` (or the last one before it)."""
    return [r for r in curve if r["step"] <= step][-1]


def report(result: dict) -> str:
    """The README's tables (markdown) from a result: every figure in them has this file behind it."""
    out = [f"Measured {result['meta']['date']} (commit {result['meta']['git_commit']}, torch "
           f"{result['meta']['torch']}, {result['meta']['threads']} threads) on {result['meta']['data']}, "
           f"{result['heldout_seconds']:.0f} s of held-out songs."]  # fmt: skip
    levels = result.get("levels", {})
    if levels:
        out += ["", "| level | steps | wall time (evaluations included) | SC dB untrained -> trained | SI-SDR | "
                "codes used | perplexity | high band vs real |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, lv in levels.items():
            first, last = lv["curve"][0], lv["curve"][-1]
            out.append(
                f"| {name} | {last['step']} | {lv['train_s'] / 60:.1f} min | {first['sc_db']:+.1f} -> "
                f"{last['sc_db']:+.1f} | {last['si_sdr']:+.1f} dB | {last['codes_used']} of {lv['l_bins']} | "
                f"{last['perplexity']:.1f} | {last['high_band_db']:+.1f} dB |"
            )
        out += ["", "Held-out curves (spectral convergence dB / codes used / perplexity):", ""]
        steps = sorted({r["step"] for lv in levels.values() for r in lv["curve"]})
        out += ["| step | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
        for step in steps:
            cells = [_at(lv["curve"], step) for lv in levels.values()]
            out.append(f"| {step} | " + " | ".join(
                f"{c['sc_db']:+.1f} / {c['codes_used']} / {c['perplexity']:.0f}" for c in cells) + " |")  # fmt: skip
    ablations = result.get("ablations")
    if ablations:
        runs, steps = ablations["runs"], ablations["steps"]
        mid = steps // 2
        out += ["", f"Ablations ({ablations['level']} level, {steps} steps each):", "",
                f"| run | SC dB | codes used at step {mid} -> {steps} | perplexity | high band vs real |",
                "|---|---|---|---|---|"]  # fmt: skip
        for label, run in runs.items():
            last, half = _at(run["curve"], steps), _at(run["curve"], mid)
            size = next((int(o.split("=")[1]) for o in run.get("overrides", []) if o.startswith("vqvae.l_bins=")), None)
            size = size or levels.get(ablations["level"], {}).get("l_bins", 128)
            out.append(f"| {label} | {last['sc_db']:+.1f} | {half['codes_used']} -> {last['codes_used']} of {size} | "
                       f"{last['perplexity']:.1f} | {last['high_band_db']:+.1f} dB |")  # fmt: skip
        hier = ablations.get("hierarchical")
        if hier:
            last = hier["curve"][-1]
            out += [
                "",
                f"Separated autoencoders against one hierarchical model ({steps} steps; held-out codes "
                "used / perplexity per level):",
                "",
                "| level | separated | hierarchical |",
                "|---|---|---|",
            ]
            for i, name in enumerate(LEVELS):
                sep = _at(levels[name]["curve"], steps) if name in levels else None
                shown = f"{sep['codes_used']} / {sep['perplexity']:.1f}" if sep else "-"
                out.append(
                    f"| {name} | {shown} | {last[f'codes_used_level{i}']} / {last[f'perplexity_level{i}']:.1f} |"
                )
            out.append(f"| spectral convergence | each level alone: see above | {last['sc_db']:+.1f} dB (one "
                       "reconstruction from all levels) |")  # fmt: skip
            lost = hier.get("scrambled_level_db")
            if lost:
                out += ["", "The hierarchical model's reconstruction with one level's codes replaced by random ones "
                        "(dB of spectral convergence lost; near 0 = the decoder ignores that level): "
                        + ", ".join(f"{k} {v:+.1f} dB" for k, v in lost.items()) + "."]  # fmt: skip
    priors = result.get("priors")
    if priors:
        out += ["", "| prior | held-out bits/token | unigram entropy of the held-out codes | below it | training |",
                "|---|---|---|---|---|"]  # fmt: skip
        for key, row in priors.items():
            out.append(f"| {key} | {row['bits_per_token']:.3f} | {row['unigram_bits']:.3f} | {row['gain']:.1%} | "
                       f"{row['train_s'] / 60:.1f} min |")  # fmt: skip
    if result.get("targets"):
        out += ["", *[f"- {line}" for line in result["targets"]]]
    return "\n".join(out)


def save(result: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a `jukebox-pl prep` folder with held-out (validation) tracks")
    p.add_argument("--report", metavar="JSON", help="print the README's tables from a result file and stop")
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    p.add_argument("--steps", type=int, default=2000, help="training steps per VQ-VAE level")
    p.add_argument("--ablation-steps", type=int, default=1000, help="steps of every ablation run")
    p.add_argument("--ablation-level", default="top", choices=LEVELS)
    p.add_argument("--codebook-sizes", type=int, nargs="+", default=[32, 512], help="besides the preset's 128")
    p.add_argument("--prior-steps", type=int, default=800, help="steps per prior (0: the preset's)")
    p.add_argument("--parts", default="curves,ablations,priors")
    p.add_argument("--eval-every", type=int, help="held-out measurement interval (default: steps / 10)")
    p.add_argument("--clips", type=int, default=8, help="evenly spaced held-out crops per validation track")
    p.add_argument("--clip-seconds", type=float, default=1.5)
    p.add_argument("--high-hz", type=float, default=4000.0, help="where the high band starts")
    p.add_argument("--work", help="folder for the runs (default: a temporary one)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--override", nargs="*", default=[], help="config overrides for every stage, e.g. vqvae.width=64")
    args = p.parse_args()
    if args.report:
        if not Path(args.report).is_file():
            raise SystemExit(f"--report {args.report}: no such file (bench/paper.py --json writes one)")
        print(report(json.loads(Path(args.report).read_text())))
        return
    if not args.data:
        p.error("--data is required (or --report JSON)")
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    if not (Path(args.data) / "manifest.json").is_file():
        raise SystemExit(f"{args.data} has no shards (no manifest.json): run `make real-music` or `jukebox-pl prep`")
    cfg = load_config("tiny", [*args.override, f"data.shards={args.data}"])
    top_hop = Levels.from_config(cfg).hops[-1]
    clips = [b["audio"] for b in validation_clips(Path(args.data), cfg.data, args.clip_seconds, args.clips, top_hop)]
    held = HeldOut(clips, cfg.data.sample_rate, args.high_hz)
    result: dict = {"meta": meta(args), "heldout_seconds": round(held.seconds, 1)}
    print(f"held-out: {held.seconds:.0f} s in {sum(c.shape[0] for c in clips)} clips of {args.data}'s validation "
          f"tracks; tiny preset, {args.steps} steps per level", flush=True)  # fmt: skip
    tmp = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(args.work or tmp.name)
    if args.work and work.exists():
        raise SystemExit(f"--work {work} exists: give a new folder (runs are never mixed)")
    every = args.eval_every or max(1, args.steps // 10)
    try:
        if "curves" in parts or "priors" in parts:
            result["levels"] = {}
            for name in args.levels:
                over = [f"trainer.max_steps={args.steps}", *args.override]
                row = train_level(work / "run", name, args.data, over, held, every, name)
                result["levels"][name] = {**row, "l_bins": int(cfg.vqvae.l_bins)}
                save(result, args.json)
        if "priors" in parts:
            unigram = {n: lv["curve"][-1]["unigram_bits"] for n, lv in result["levels"].items()}
            result["priors"] = train_priors(
                work / "run", args.data, args.levels, args.prior_steps, unigram, args.override
            )
            save(result, args.json)
        if "ablations" in parts:
            level, steps = args.ablation_level, args.ablation_steps
            a_every = args.eval_every or max(1, steps // 10)
            base = [f"trainer.max_steps={steps}", *args.override]
            runs = {"baseline": base, **{k: base + v for k, v in ABLATIONS.items()}}
            runs.update({f"codebook {n}": [*base, f"vqvae.l_bins={n}"] for n in args.codebook_sizes})
            result["ablations"] = {"level": level, "steps": steps, "runs": {}}
            reuse = result.get("levels", {}).get(level) if steps == args.steps else None
            for i, (label, overrides) in enumerate(runs.items()):
                if label == "baseline" and reuse:
                    result["ablations"]["runs"][label] = reuse
                    continue
                row = train_level(work / f"ablation{i}", level, args.data, overrides, held, a_every, label)
                result["ablations"]["runs"][label] = row
                save(result, args.json)
            result["ablations"]["hierarchical"] = train_hierarchical(args.data, steps, held, a_every, args.override)
            save(result, args.json)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["targets"] = targets(result)
    save(result, args.json)
    print(report(result))


if __name__ == "__main__":
    main()
