"""Does `trainer.precision=bf16-mixed` train like fp32 on a CPU? The first 200 steps' loss curves of a VQ-VAE level
and a top prior under both precisions, with the run-to-run noise beside them, and the step time of each.

    python bench/precision.py                          # both stages, 200 steps, seeds 0 and 1, 2 threads
    python bench/precision.py --stages prior --steps 50 --out -

Each stage is trained four times through Lightning's Trainer, as `jukebox-pl train` trains it: fp32 and
bf16-mixed (bf16 autocast on the CPU; weights, gradients and Adam in fp32), each with seeds 0 and 1 (the seed sets
the initial weights and the data order). Run-to-run noise is what changing the seed does to fp32: the largest
gap between the two fp32 curves, smoothed over 20 steps, after the first 20 steps. bf16-mixed "stays within
noise" when its gap to fp32 with the same seed, and the gap between the mean curves of the two precisions, are
no larger than that. The curves are printed every 10 steps.

Models and data (CPU-sized, what fits 4 x 200 steps in minutes; the speed targets against the reference are
measured at the reference's `small` shapes by bench/prior.py and bench/vqvae.py):
  vqvae: the tiny preset's top level (hop 8 x 4 x 4 = 128 at 22050 Hz), batches of 6 x 16384 samples cropped
         from the toy set's songs (`jukebox_pl.data.toy`, rendered in memory).
  prior: a top prior of width 256, depth 8, n_ctx 1024 (attn_order 2, blocks 8), labels on, no lyrics, batches of
         4 x 1024 codes from a fixed 512-code first-order Markov source (each code has 4 successors: 9 bits per
         code at the start, 2 at best), so the loss has somewhere to go.
"""

from __future__ import annotations

import argparse
import statistics
import time

import measure
import numpy as np
import pytorch_lightning as pl
import torch

from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.data import toy
from jukebox_pl.prior.lightning import PriorModule
from jukebox_pl.vqvae.lightning import VQVAELevel

PRECISIONS = ("32-true", "bf16-mixed")
SMOOTH, SKIP = 20, 20
SR = 22050
VQVAE = dict(levels=3, downs_t=[3, 2, 2], strides_t=[2, 2, 2], emb_width=32, l_bins=128, width=32, depth=3,
             dilation_growth_rate=3, revival_relative=0.25, sample_length=16384, batch_size=6, bandwidth_batches=4,
             multispectral=1.0, spectral_mode="auraloss", loss_linf=0.0)  # fmt: skip
PRIOR = dict(arch="tiny_prior", n_ctx=1024, width=256, depth=8, heads=2, attn_order=2, blocks=8, lyrics="none",
             n_tokens=0, ema_decay=None, checkpoint_res=False)  # fmt: skip
PRIOR_BINS, PRIOR_BATCH = 512, 4


class Recorder(pl.Callback):
    """Every step's training loss and wall time."""

    def __init__(self):
        self.losses: list[float] = []
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self._start)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def toy_audio(seconds: float = 40.0) -> torch.Tensor:
    """The toy set's songs, rendered in memory and joined: (T,) at 22050 Hz."""
    plans = toy.song_plan(seed=0, songs_per_pair=1, sample_rate=SR)
    out, total = [], 0
    for i, plan in enumerate(plans):
        audio = np.asarray(toy.render_song(plan, seed=i), dtype=np.float32)
        audio = audio.mean(axis=0) if audio.ndim == 2 else audio  # (channels, samples) -> mono
        out.append(torch.from_numpy(audio))
        total += audio.shape[0]
        if total >= seconds * SR:
            break
    return torch.cat(out)


def vqvae_batches(audio: torch.Tensor, steps: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    n, length = VQVAE["batch_size"], VQVAE["sample_length"]
    starts = torch.randint(0, audio.shape[0] - length, (steps, n), generator=g)
    return [{"audio": torch.stack([audio[s : s + length] for s in row.tolist()])[:, None, :]} for row in starts]


def markov_codes(steps: int, seed: int) -> list[dict]:
    """A fixed first-order source (the same for every seed: each code has 4 successors, so the floor is 2 bits per
    code); the seed picks the sequences drawn from it."""
    table = torch.randint(0, PRIOR_BINS, (PRIOR_BINS, 4), generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    n_ctx, batches = PRIOR["n_ctx"], []
    for _ in range(steps):
        codes = torch.empty(PRIOR_BATCH, n_ctx, dtype=torch.long)
        codes[:, 0] = torch.randint(0, PRIOR_BINS, (PRIOR_BATCH,), generator=g)
        choice = torch.randint(0, 4, (PRIOR_BATCH, n_ctx), generator=g)
        for t in range(1, n_ctx):
            codes[:, t] = table[codes[:, t - 1], choice[:, t]]
        batches.append(
            {
                "codes": codes,
                "artist": torch.ones(PRIOR_BATCH, dtype=torch.long),
                "genres": torch.ones(PRIOR_BATCH, 1, dtype=torch.long),
                "total_length": torch.full((PRIOR_BATCH,), SR * 30),
                "offset": torch.zeros(PRIOR_BATCH),
            }
        )
    return batches


def train(stage: str, precision: str, seed: int, batches: list[dict]) -> Recorder:
    torch.manual_seed(seed)
    if stage == "vqvae":
        module = VQVAELevel(vqvae_config(**VQVAE), "top", SR)
    else:
        vq = vqvae_config(**{**VQVAE, "l_bins": PRIOR_BINS})
        module = PriorModule(prior_config(**PRIOR), "top", vq, SR, y_bins=(3, 4))
    recorder = Recorder()
    trainer = pl.Trainer(
        max_steps=len(batches),
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[recorder],
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return recorder


def smooth(curve: list[float]) -> np.ndarray:
    c = np.asarray(curve, dtype=np.float64)
    return np.convolve(c, np.ones(SMOOTH) / SMOOTH, mode="valid")  # index i: steps i .. i + SMOOTH - 1


def compare(curves: dict[tuple[str, int], list[float]], seeds: list[int]) -> dict:
    """Noise (fp32 seed vs seed) and the bf16-mixed gaps, on curves smoothed over SMOOTH steps after SKIP."""
    s = {key: smooth(c)[SKIP:] for key, c in curves.items()}
    a, b = seeds[0], seeds[1]
    noise = float(np.abs(s[("32-true", a)] - s[("32-true", b)]).max())
    same_seed = max(float(np.abs(s[("bf16-mixed", k)] - s[("32-true", k)]).max()) for k in seeds)
    mean32 = np.mean([s[("32-true", k)] for k in seeds], axis=0)
    mean16 = np.mean([s[("bf16-mixed", k)] for k in seeds], axis=0)
    means = float(np.abs(mean16 - mean32).max())
    return {"noise": noise, "same_seed_gap": same_seed, "mean_gap": means,
            "within_noise": same_seed <= noise and means <= noise}  # fmt: skip


def print_curves(stage: str, curves: dict, seconds: dict, seeds: list[int], steps: int) -> None:
    keys = [(p, s) for p in PRECISIONS for s in seeds]
    print(f"\n{stage}: training loss (mean of the 10 steps ending at each step shown)")
    print("  step " + " ".join(f"{p[:4] + ' s' + str(s):>12}" for p, s in keys))
    for end in range(10, steps + 1, 10):
        print(f"  {end:>4} " + " ".join(f"{statistics.mean(curves[k][end - 10 : end]):>12.4f}" for k in keys))
    print("  s/step " + " ".join(f"{seconds[k]:>11.3f}" for k in keys))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default="vqvae,prior", help="vqvae,prior")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1", help="two seeds (noise is what changing the seed does)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="result file (default bench/results/precision.json; '-' writes none)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) != 2:
        parser.error("--seeds takes two seeds")
    if args.steps < SMOOTH + SKIP + 10:
        parser.error(f"--steps must be at least {SMOOTH + SKIP + 10}")
    sitting = measure.Sitting("precision", args.threads)
    figures: dict = {"steps": args.steps, "seeds": seeds, "smooth": SMOOTH, "skip": SKIP, "stages": {}}
    audio = toy_audio() if "vqvae" in args.stages else None
    for stage in [s for s in args.stages.split(",") if s]:
        if stage not in ("vqvae", "prior"):
            parser.error(f"--stages: unknown stage {stage!r}; choose vqvae,prior")
        curves, seconds = {}, {}
        for seed in seeds:
            batches = vqvae_batches(audio, args.steps, seed) if stage == "vqvae" else markov_codes(args.steps, seed)
            for precision in PRECISIONS:
                rec = train(stage, precision, seed, batches)
                curves[(precision, seed)] = rec.losses
                seconds[(precision, seed)] = statistics.median(rec.seconds[10:])
                print(
                    f"{stage} {precision} seed {seed}: {len(rec.losses)} steps, loss {rec.losses[0]:.4f} -> "
                    f"{statistics.mean(rec.losses[-10:]):.4f}, {seconds[(precision, seed)]:.3f} s/step",
                    flush=True,
                )
        print_curves(stage, curves, seconds, seeds, args.steps)
        verdict = compare(curves, seeds)
        speed = statistics.mean(seconds[("32-true", k)] for k in seeds) / statistics.mean(
            seconds[("bf16-mixed", k)] for k in seeds
        )
        print(f"  run-to-run noise (fp32, seed {seeds[0]} vs {seeds[1]}, smoothed over {SMOOTH} steps, after step "
              f"{SKIP}): {verdict['noise']:.4f}; bf16-mixed vs fp32, same seed: {verdict['same_seed_gap']:.4f}; "
              f"mean curves: {verdict['mean_gap']:.4f} -> {'within' if verdict['within_noise'] else 'OUTSIDE'} "
              f"noise; bf16-mixed step {speed:.2f}x fp32")  # fmt: skip
        figures["stages"][stage] = {
            "curves": {f"{p} seed {s}": c for (p, s), c in curves.items()},
            "s_per_step": {f"{p} seed {s}": v for (p, s), v in seconds.items()},
            "bf16_speedup": speed,
            **verdict,
        }
    sitting.finish(figures, args.out)
    return figures


if __name__ == "__main__":
    main()
