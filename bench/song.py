"""A three-level song end to end: seconds of compute per second of audio, per level, side by side with the
reference's own sampler path.

    python bench/song.py --reference /path/to/jukebox --batches 1,8 --weights fp32,int4,bf16
    python bench/song.py --batches 1                  # ours only

Both sides sample the same song with the same models' shapes: the released three-level VQ-VAE (hops 8/32/128 at
44.1 kHz, random weights) and the released priors' architectures (`configs/jukebox.yaml`: the 5B-lyrics top with
labels, timing and a lyrics encoder it cross-attends to; the two upsamplers with labels and a conditioner on the
codes of the level above), narrowed and shortened by SCALE so that a song of a few seconds takes minutes on a CPU.
Each level samples over its windows (a window every 0.125 n_ctx on the top, 0.5 n_ctx on the upsamplers, the
reference's defaults), re-priming each window's overlap, then its codes are decoded by the VQ-VAE; the two are
timed apart. The reference runs its `sample_level` and `SimplePrior.decode` (`bench/reference_song.py`, its
chunk_size 32, every row in one batch); ours runs `SongSampler` and `VQVAE.decode` (`sample`'s path, priming a
window's overlap in one pass). Writing audio, HTML and the lyric alignment are left out on both sides.

Every side first samples a short song untimed (one top window), then --repeats (>= 3) interleaved rounds
are timed; figures are medians [min-max], flagged when max/min > 1.5. Results go to bench/results/song.json
(song_reference.json with --reference), which `bench/report.py` renders.
"""

from __future__ import annotations

import argparse
import statistics
import time

import measure
import sampling
import torch

from jukebox_pl.config import load_config
from jukebox_pl.config.levels import Levels
from jukebox_pl.config.typed import plain
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.sampling.song_sampler import SongSampler, SongSpec

PRESET = "jukebox"
# the released architectures at a width of 512: the top keeps 20 of its layers (its first cross-attention to the
# lyrics is layer 18) and a context of 512, the upsamplers 8 layers and 1024; blocks of 64 tokens as released.
# Its timing embedding starts at 0.25 s instead of 23.8 s, so that a song of seconds is a whole song to it
SCALE = (
    "prior.top.width=512", "prior.top.depth=20", "prior.top.n_ctx=512", "prior.top.blocks=8",
    "prior.top.prime_width=128", "prior.top.prime_depth=2", "prior.top.alignment_layer=18",
    "prior.top.min_duration=0.25",  # the timing embedding takes songs this short (both sides)
    *(f"prior.{name}.{key}" for name in ("middle", "bottom")
      for key in ("width=512", "depth=8", "n_ctx=1024", "blocks=16", "cond_width=256")),
)  # fmt: skip
LYRICS = [(7 * i) % 70 + 1 for i in range(300)]  # lyric character ids, the same on both sides
HOP_FRACTIONS = {0: 0.5, 1: 0.5, 2: 0.125}  # the reference's sample.py defaults, bottom first


def config(overrides: tuple[str, ...] = SCALE):
    return load_config(PRESET, list(overrides))


def build(weights: str, overrides: tuple[str, ...] = SCALE) -> SamplingModels:
    """Our models of the bench's shapes with random weights and the config's label bins (`sampling.build`)."""
    return sampling.build(PRESET, weights, overrides, y_bins=None)


def song_samples(models: SamplingModels, seconds: float) -> int:
    """`seconds` of audio rounded down to whole top-level codes."""
    hop_top = models.vqvae.hop_length(models.n_levels - 1)
    return int(seconds * models.sample_rate) // hop_top * hop_top


@torch.inference_mode()
def our_song(models: SamplingModels, batch: int, total_samples: int, decode: str = "auto") -> dict:
    """Every level top down through `SongSampler` (its windows and re-priming), then that level's decode."""
    spec = SongSpec(artists=[1] * batch, genres=[[1]] * batch, lyrics=[LYRICS] * batch, total_samples=total_samples,
                    temperature=0.99, hop_fractions=dict(HOP_FRACTIONS), seed=0, max_batch=batch)  # fmt: skip
    sampler = SongSampler(models, spec, list(range(models.n_levels)), decode=decode)
    out: dict = {}
    for level in sorted(models.priors, reverse=True):
        t0 = time.perf_counter()
        sampler.levels = [level]
        codes = sampler.run()[level]
        t1 = time.perf_counter()
        models.vqvae.decode(codes, level)
        out[level] = {"sample_s": t1 - t0, "decode_s": time.perf_counter() - t1, "tokens": int(codes.shape[1])}
    return out


def per_audio_second(run: dict, batch: int, seconds: float) -> dict:
    """A run's seconds per level -> compute per second of audio per song, per level and in all."""
    levels = [k for k in run if isinstance(k, int)]
    out = {f"{part}_{lv}": run[lv][f"{part}_s"] / batch / seconds for lv in levels for part in ("sample", "decode")}
    out["song"] = sum(out.values())
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--seconds", type=float, default=2.0, help="song length (default 2 s: every level re-primes)")
    p.add_argument("--weights", default="fp32", help="our priors' formats (fp32, int8, int4, bf16), each timed; "
                   "FORMAT+MODE (int8+compile) gives one its own --decode")  # fmt: skip
    p.add_argument("--decode", default="auto", help="our per-token steps (`sample --decode`): auto, dynamic, "
                   "static or compile; with a list (auto,compile) each is timed with every --weights")  # fmt: skip
    p.add_argument("--repeats", type=int, default=measure.MIN_REPEATS, help="interleaved timed rounds (>= 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same on both sides (default 2)")
    p.add_argument("--json", metavar="PATH", help="default bench/results/song.json (song_reference.json with "
                   "--reference); '-' for none")  # fmt: skip
    p.add_argument("--reference", metavar="CHECKOUT", help="a checkout of openai/jukebox: its sampler beside ours")
    p.add_argument("--reference-commit", help="the reference checkout's commit, when it has no .git to read it from")
    args = p.parse_args(argv)
    if args.repeats < measure.MIN_REPEATS:
        p.error(f"--repeats {args.repeats}: a figure is the median of at least {measure.MIN_REPEATS}")
    sitting = measure.Sitting("song", args.threads, args.reference, args.reference_commit)
    rows = run_bench(args, sitting.load)
    out = args.json or measure.RESULTS / ("song_reference.json" if args.reference else "song.json")
    sitting.finish({"bench": "song", "repeats": args.repeats, "seconds": args.seconds, "scale": list(SCALE),
                    "rows": rows}, out)  # fmt: skip


def reference_side(checkout: str, total: int):
    """The reference's models of the same shapes (built once), and a callable sampling `batch` songs of a given
    length through its sampler path."""
    import reference_song

    sample = reference_song.load(checkout)
    cfg = config()
    levels = Levels.from_config(cfg)
    priors = {i: plain(cfg.prior[levels.name(i)]) for i in range(len(levels))}
    arch = {i: p["arch"] for i, p in priors.items()}
    hops = [HOP_FRACTIONS[i] for i in range(len(levels))]
    vqvae, ref_priors = reference_song.build(sample, arch, priors, cfg.data.max_genres, total, levels.sample_rate)
    return lambda batch, length: reference_song.song(sample, vqvae, ref_priors, batch, length, hops, LYRICS)


def run_bench(args, load: float) -> list[dict]:
    entries = [e.partition("+") for e in args.weights.split(",")]
    ours = [(w, d) for w, _, own in entries for d in ([own] if own else args.decode.split(","))]
    formats = list(dict.fromkeys(w for w, _ in ours))
    built = {w: build(w) for w in formats}
    models = built[formats[0]]
    total = song_samples(models, args.seconds)
    seconds = total / models.sample_rate
    top = models.priors[models.n_levels - 1]
    warm_total = top.n_ctx * top.hop_length  # one top window: the reference's upsamplers need a whole window above
    ref = reference_side(args.reference, total) if args.reference else None
    names = [models.name(lv) for lv in sorted(models.priors, reverse=True)]
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        label = {(w, d): f"jukebox-pl {w}" + ("" if d == "auto" else f"+{d}") for w, d in ours}
        sides = {label[w, d]: (lambda b=batch, m=built[w], d=d: our_song(m, b, total, d)) for w, d in ours}
        warm = {label[w, d]: (lambda b=batch, m=built[w], d=d: our_song(m, b, warm_total, d)) for w, d in ours}
        if ref:
            sides["reference"] = lambda b=batch: ref(b, total)
            warm["reference"] = lambda b=batch: ref(b, warm_total)
        for fn in warm.values():
            fn()
        runs = measure.interleaved(sides, args.repeats, warmup=0)
        figures = {side: [per_audio_second(r, batch, seconds) for r in rs] for side, rs in runs.items()}
        print(f"batch {batch}: {seconds:.2f} s song, compute per audio second per song, median [min-max] of "
              f"{args.repeats} interleaved rounds", flush=True)  # fmt: skip
        keys = [f"{part}_{lv}" for lv in sorted(models.priors, reverse=True) for part in ("sample", "decode")]
        head = "".join(f"{n + ' ' + part:>18}" for n in names for part in ("sample", "decode"))
        print(f"{'side':<22}{head}{'song':>20}{'vs reference':>14}")
        ref_song_s = statistics.median(f["song"] for f in figures["reference"]) if ref else None
        for side, figs in figures.items():
            st = {k: measure.stats([f[k] for f in figs]) for k in [*keys, "song"]}
            ratio = ref_song_s / st["song"]["median"] if ref_song_s else None
            cells = "".join(f"{st[k]['median']:>18.2f}" for k in keys)
            print(f"{side:<22}{cells}{measure.cell(st['song'], '.2f'):>20}"
                  f"{(f'{ratio:.2f}x' if ratio else ''):>14}{measure.flag(st['song'], load)}", flush=True)  # fmt: skip
            first = runs[side][0]
            tokens = {names[i]: first[lv]["tokens"] for i, lv in enumerate(sorted(models.priors, reverse=True))}
            per_level = [{str(k): v for k, v in r.items() if isinstance(k, int)} for r in runs[side]]
            rows.append({"batch": batch, "side": side, "seconds": seconds, "stats": st, "ratio": ratio,
                         "tokens": tokens, "runs": per_level})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
