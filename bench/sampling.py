"""Seconds of compute per second of sampled audio, per level and for the whole song (tiny and small presets).

    python bench/sampling.py                     # tiny (3 levels) and small (2 levels), batch 1 and 8
    python bench/sampling.py --presets tiny --batches 1 --weights int8

Per level, with random weights of the preset's architecture: the KV-cache priming rate (the overlap each
window re-reads, in chunks of 128) and the sampling rate (one token per step, a window half full), then

    compute per audio second = tokens per audio second x (1 / sampling rate + (1 - h) / h / priming rate)

for windows every h * n_ctx tokens (h = 0.125 top, 0.5 upsamplers, the reference's defaults), plus the
VQ-VAE decoding of that level. Divided by the batch: B songs are sampled together. For tiny, a real song is
also sampled end to end through `SongSampler` (all three levels) to check the estimate. Measure on a quiet
machine: OpenMP threads spinning against another process make every figure several times worse.

    python bench/sampling.py --reference /path/to/jukebox --batches 1,8

times the reference's transformer of each level's shape (small preset, the reference's small_prior as the top)
beside ours, level by level, and prints the ratios of sampling compute per audio second (VQ-VAE decoding, and
the conditioners that run once per window, are left out on both sides). Every level is measured after one
untimed run of each side, in --repeats (>= 3) interleaved rounds; both prime every row and leave the same two
tokens untimed; figures are medians [min-max], flagged when max/min > 1.5. Results go to
bench/results/sampling.json (sampling_reference.json with --reference), which `bench/report.py` renders.
"""

from __future__ import annotations

import argparse
import statistics
import time

import measure
import torch

from jukebox_pl.config import load_config
from jukebox_pl.config.levels import Levels
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.prior.model import build_prior
from jukebox_pl.sampling.models import SamplingModels, for_sampling
from jukebox_pl.sampling.song_sampler import SongSampler, SongSpec
from jukebox_pl.vqvae.model import build_vqvae_level
from jukebox_pl.vqvae.vqvae import VQVAE


def build(preset: str, weights: str, overrides: tuple[str, ...] = (), y_bins: tuple[int, int] | None = (4, 5)
          ) -> SamplingModels:  # fmt: skip
    """The preset's models with random weights, the priors as `sample --weights` loads them. `y_bins`: the
    priors' artist and genre bins (None: each prior's own from the config)."""
    torch.manual_seed(0)
    cfg = load_config(preset, list(overrides))
    levels = Levels.from_config(cfg)
    vqvae = VQVAE({i: build_vqvae_level(cfg, i).eval() for i in range(len(levels))}, levels.sample_rate)
    priors = {}
    for i in range(len(levels)):
        pcfg = cfg.prior[levels.name(i)]
        prior = build_prior(levels, i, pcfg, y_bins=pcfg.y_bins if y_bins is None else y_bins).eval()
        priors[i] = for_sampling(prior, weights)  # what `sample --weights` loads
    return SamplingModels(vqvae, priors, LabelVocab().extend(["a", "b"], ["g"]), levels.sample_rate)


WARM_TOKENS = 2  # untimed tokens after the priming, on both sides (the reference's sampler: reference_prior.py)


@torch.inference_mode()
def level_rates(models: SamplingModels, level: int, batch: int, tokens: int, decode: bool = True) -> dict:
    prior = models.priors[level]
    spec = SongSpec(artists=[1] * batch, genres=[[1]] * batch, lyrics=[list(range(1, 40))] * batch,
                    total_samples=prior.sample_length * 2, seed=0)  # fmt: skip
    sampler = SongSampler(models, spec, [level])
    if not prior.is_top:
        sampler.codes[level + 1] = torch.randint(0, prior.bins, (batch, 2 * prior.upper_length))
    cond = prior.condition(batch, **sampler._labels(level, 0, slice(0, batch)))
    half = prior.n_ctx // 2
    prompt = torch.randint(0, prior.bins, (batch, half))
    with prior.prior.streaming():
        step, x_cond, y_cond, enc = prior.prior.step, cond.x_cond, cond.y_cond, cond.encoder_kv
        if prior.lyrics_mode == "merged":  # the lyric prefix first, as sampling does
            prompt = torch.cat([cond.prefix, prompt + prior.n_vocab], dim=1)
        t0 = time.perf_counter()
        step(None, 0, batch, x_cond, y_cond, enc)
        for i in range(0, prompt.shape[1], 128):
            step(prompt[:, i : i + 128], i + 1, batch, x_cond, y_cond, enc)
        prime_s = time.perf_counter() - t0
        pos, tok = prompt.shape[1] + 1, prompt[:, -1:]
        for k in range(WARM_TOKENS + tokens):
            if k == WARM_TOKENS:
                t0 = time.perf_counter()
            logits = step(tok, pos + k, batch, x_cond, y_cond, enc)[:, -1]
            tok = torch.multinomial(logits.float().softmax(-1), 1)
        sample_s = time.perf_counter() - t0
    audio_tokens = models.sample_rate / prior.hop_length
    h = 0.125 if prior.is_top else 0.5
    prime_rate, sample_rate = prompt.shape[1] / prime_s, tokens / sample_s  # per stream-batch step
    per_audio_s = audio_tokens * (1 / sample_rate + (1 - h) / h / prime_rate) / batch
    out = {"n_ctx": prior.n_ctx, "hop": prior.hop_length, "prime_tok_s": prime_rate * batch,
           "sample_tok_s": sample_rate * batch, "sample_s_per_audio_s": per_audio_s}  # fmt: skip
    if decode:
        codes = torch.randint(0, prior.bins, (batch, int(audio_tokens)))
        t0 = time.perf_counter()
        models.vqvae.decode(codes, level)
        out["decode_s_per_audio_s"] = (time.perf_counter() - t0) / batch
    return out


def reference_model(ar, models: SamplingModels, level: int):
    """The reference's own transformer of this level's shape (`bench/reference_prior.py`), built once."""
    import reference_prior

    prior = models.priors[level]
    c = prior.cfg
    shape = {"bins": prior.bins, "width": c.width, "depth": c.depth, "heads": c.heads, "attn_order": c.attn_order}
    return reference_prior.build(ar, shape, c.n_ctx, c.n_ctx // c.blocks, False, x_cond=not prior.is_top,
                                 y_cond=bool(c.labels))  # fmt: skip


def reference_rates(ar, model, models: SamplingModels, level: int, batch: int, tokens: int) -> dict:
    """The same figures for the reference's transformer: its primed_sample primes every row (as `level_rates`
    does), leaves WARM_TOKENS untimed, then samples one token per step."""
    import reference_prior

    prior = models.priors[level]
    c = prior.cfg
    r = reference_prior.sample(ar, model, batch, c.n_ctx // 2, tokens, 128, warm=WARM_TOKENS)
    h = 0.125 if prior.is_top else 0.5
    audio_tokens = models.sample_rate / prior.hop_length
    prime_rate, sample_rate = r["prime_tokens_per_s"] / batch, r["tokens_per_s_per_stream"]
    per_audio_s = audio_tokens * (1 / sample_rate + (1 - h) / h / prime_rate) / batch
    return {"prime_tok_s": r["prime_tokens_per_s"], "sample_tok_s": r["tokens_per_s_total"],
            "sample_s_per_audio_s": per_audio_s}  # fmt: skip


def end_to_end(models: SamplingModels, batch: int, seconds: float) -> dict:
    hop_top = models.vqvae.hop_length(models.n_levels - 1)
    total = int(seconds * models.sample_rate) // hop_top * hop_top
    spec = SongSpec(artists=[1] * batch, genres=[[1]] * batch, lyrics=[list(range(1, 40))] * batch,
                    total_samples=total, seed=0, max_batch=batch)  # fmt: skip
    out = {}
    sampler = SongSampler(models, spec, list(range(models.n_levels)))
    for level in sorted(models.priors, reverse=True):
        t0 = time.perf_counter()
        sampler.levels = [level]
        sampler.run()
        out[models.name(level)] = (time.perf_counter() - t0) / batch / (total / models.sample_rate)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--weights", default="fp32",
                   help="fp32, int8, int4 or bf16 (`sample --weights`); with --reference a list (fp32,int4,bf16): "
                   "each is timed beside the reference's fp32 in the same rounds")  # fmt: skip
    p.add_argument("--tokens", type=int, default=32, help="timed sampling steps per level")
    p.add_argument("--song-seconds", type=float, default=3.0, help="tiny end-to-end song length")
    p.add_argument(
        "--repeats",
        type=int,
        default=measure.MIN_REPEATS,
        help="interleaved repeats of every level's measurement after one untimed warm-up (default 3)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same on both sides (default 2)")
    p.add_argument(
        "--json",
        metavar="PATH",
        help="where the figures go (default bench/results/sampling.json, "
        "sampling_reference.json with --reference; '-' for none)",
    )
    p.add_argument(
        "--reference",
        metavar="CHECKOUT",
        help="a checkout of openai/jukebox: time its transformer of each level's shape beside ours, "
        "interleaved (small preset, with the reference's small_prior as the top: labels and lyrics "
        "conditioning are not part of its bare transformer)",
    )
    p.add_argument("--reference-commit", help="the reference checkout's commit, when it has no .git to read it from")
    args = p.parse_args(argv)  # fmt: skip
    if args.reference and args.repeats < measure.MIN_REPEATS:
        p.error(f"--repeats {args.repeats}: a side-by-side figure is the median of at least {measure.MIN_REPEATS}")
    sitting = measure.Sitting("sampling", args.threads, args.reference, args.reference_commit)
    rows = side_by_side(args, sitting.load) if args.reference else ours_only(args, sitting.load)
    out = args.json or measure.RESULTS / ("sampling_reference.json" if args.reference else "sampling.json")
    sitting.finish({"bench": "sampling", "repeats": args.repeats, "tokens": args.tokens, "rows": rows}, out)


def ours_only(args, load: float) -> list[dict]:
    """Per preset, batch and level: medians of `--repeats` measurements, and the song estimate from them."""
    results = []
    print(f"{'preset':<6} {'level':<7} {'B':>3} {'n_ctx':>6} {'hop':>4} {'prime tok/s':>11} {'sample tok/s':>12} "
          f"{'sample s/s':>18} {'decode s/s':>10}   (medians of {args.repeats}; s/s [min-max])")  # fmt: skip
    for preset in args.presets.split(","):
        models = build(preset, args.weights)
        for batch in (int(b) for b in args.batches.split(",")):
            total = 0.0
            for level in sorted(models.priors, reverse=True):
                fn = lambda m=models, lv=level, b=batch: level_rates(m, lv, b, args.tokens)  # noqa: E731
                runs = measure.interleaved({"jukebox-pl": fn}, args.repeats)["jukebox-pl"]
                r = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
                s = measure.stats([x["sample_s_per_audio_s"] for x in runs])
                name = models.name(level)
                total += r["sample_s_per_audio_s"] + r["decode_s_per_audio_s"]
                results.append({"preset": preset, "level": name, "batch": batch, **r, "stats": s, "runs": runs})
                print(f"{preset:<6} {name:<7} {batch:>3} {r['n_ctx']:>6} {r['hop']:>4} {r['prime_tok_s']:>11.1f} "
                      f"{r['sample_tok_s']:>12.1f} {measure.cell(s, '.2f'):>18} "
                      f"{r['decode_s_per_audio_s']:>10.4f}{measure.flag(s, load)}")  # fmt: skip
            print(f"{preset:<6} {'song':<7} {batch:>3}  full {models.n_levels}-level song: {total:.2f} s of compute "
                  f"per second of audio per song (estimate, from the medians)")  # fmt: skip
            results.append({"preset": preset, "level": "song", "batch": batch, "s_per_audio_s": total})
            if preset == "tiny":
                e2e = end_to_end(models, batch, args.song_seconds)
                print(f"{preset:<6} {'e2e':<7} {batch:>3}  measured {args.song_seconds:.0f} s song, SongSampler: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in e2e.items())
                      + f" = {sum(e2e.values()):.2f} s/s (sampling only, one run)")  # fmt: skip
                results.append({"preset": preset, "level": "e2e", "batch": batch, **e2e})
    return results


def side_by_side(args, load: float, preset: str = "small", overrides=("prior.top.arch=small_prior",)) -> list[dict]:
    """Per level and batch: our sampling rates and the reference's, after one untimed run of each, in
    `--repeats` interleaved rounds (ours, reference, ours, ...); both prime every row and leave the same
    WARM_TOKENS untimed. Ratios are of the medians."""
    import reference_prior

    ar = reference_prior.load(args.reference)
    formats = getattr(args, "weights", "fp32").split(",")
    built = {w: build(preset, w, tuple(overrides)) for w in formats}
    models = built[formats[0]]
    sides = {w: "jukebox-pl" if i == 0 else f"jukebox-pl {w}" for i, w in enumerate(formats)}
    rows = []
    print(
        f"{'level':<7} {'B':>3} {'weights':>7} {'ref prime':>9} {'our prime':>9} {'ref sample':>10} "
        f"{'our sample':>10} {'ref s/s':>16} {'our s/s':>16} {'ratio':>6}   (tokens/s over all streams; s/s = "
        f"sampling compute per audio second per song, median [min-max] of {args.repeats} interleaved repeats)"
    )
    for batch in (int(b) for b in args.batches.split(",")):
        song = {"reference": 0.0, **{side: 0.0 for side in sides.values()}}
        for level in sorted(models.priors, reverse=True):
            ref_model = reference_model(ar, models, level)
            fns = {side: lambda lv=level, b=batch, m=built[w]: level_rates(m, lv, b, args.tokens, decode=False)
                   for w, side in sides.items()}  # fmt: skip
            fns["reference"] = lambda lv=level, b=batch, m=ref_model: reference_rates(ar, m, models, lv, b, args.tokens)
            runs = measure.interleaved(fns, args.repeats)
            med = {side: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for side, rs in runs.items()}
            st = {side: measure.stats([x["sample_s_per_audio_s"] for x in rs]) for side, rs in runs.items()}
            ref = med["reference"]
            song["reference"] += ref["sample_s_per_audio_s"]
            name = models.name(level)
            for w, side in sides.items():
                ours = med[side]
                song[side] += ours["sample_s_per_audio_s"]
                ratio = ref["sample_s_per_audio_s"] / ours["sample_s_per_audio_s"]
                rows.append({"level": name, "batch": batch, "weights": w, "reference": ref, "jukebox_pl": ours,
                             "ratio": ratio, "reference_stats": st["reference"], "jukebox_pl_stats": st[side],
                             "runs": {"jukebox-pl": runs[side], "reference": runs["reference"]}})  # fmt: skip
                print(f"{name:<7} {batch:>3} {w:>7} {ref['prime_tok_s']:>9.0f} {ours['prime_tok_s']:>9.0f} "
                      f"{ref['sample_tok_s']:>10.1f} {ours['sample_tok_s']:>10.1f} "
                      f"{measure.cell(st['reference'], '.1f'):>16} {measure.cell(st[side], '.1f'):>16} "
                      f"{ratio:>5.2f}x{measure.flag(st['reference'], load)}{measure.flag(st[side], load)}",
                      flush=True)  # fmt: skip
        for w, side in sides.items():
            ratio = song["reference"] / song[side]
            print(
                f"{'song':<7} {batch:>3} {w:>7}  sampling compute per audio second (sum of the levels' medians): "
                f"reference {song['reference']:.1f} s, jukebox-pl {song[side]:.1f} s: {ratio:.2f}x",
                flush=True,
            )
            rows.append({"level": "song", "batch": batch, "weights": w, "reference": song["reference"],
                         "jukebox-pl": song[side], "ratio": ratio})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
