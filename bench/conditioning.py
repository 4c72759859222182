"""Conditioning you can hear: how often sampled songs are recognised as the artist and the genre asked for, per
level's decode, per classifier-free guidance scale, over several seeds.

    python bench/conditioning.py --run runs/demo --toy data/toy --scales 1,2,4 --seeds 0,1,2

For every seed and scale, the demo's request (each toy artist `--per-artist` times, each time in another toy
genre, the toy set's lyrics, `--seconds` long) is sampled through every level of the run (`sample_song`), and the
WAV of each level's decode (top, middle, bottom) is classified by nearest-centroid classifiers trained on clips of
the toy set's real songs:
  artist  timbre features, (a) plain: the real clips as they are; (b) codec-aware: the real clips passed
          through that level's VQ-VAE first, so the codec's own colouring is not held against the prior
  genre   rhythm features (tempo, metre, swing), plain and codec-aware the same way
The "real" rows are the ceiling: the toy set's own songs (their first `--seconds`), re-synthesised by each
level's VQ-VAE and classified the same way; a prior cannot be heard better than its codec lets real music be.
A scale other than 1 applies to the levels whose prior was trained with `cfg_drop` (the others are sampled
plainly, and the sampler says so). Prints a table of recognised / asked per seed with the mean and the spread
(min-max) for each (scale, level, label, classifier), then a JSON line. Samples go under --out (resumable:
a finished (seed, scale) is read back, not sampled again).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from jukebox_pl.data.toy import rhythm_features, timbre_features
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.stages.demo import (
    artist_classifier,
    ceiling,
    first_genre,
    genre_classifier,
    recognition,
    requested,
    resynthesised,
    toy_songs,
)
from jukebox_pl.stages.sample import SampleRequest, sample_song

LABELS = {"artist": (artist_classifier, timbre_features), "genre": (genre_classifier, rhythm_features)}


def classifiers(models: SamplingModels, toy: Path, seconds: float) -> dict:
    """(label, classifier kind, level name) -> a trained classifier; codec-aware ones per level's VQ-VAE."""
    out = {}
    for label, (make, _) in LABELS.items():
        plain = make(toy, models.sample_rate, seconds)
        for level in sorted(models.vqvae.available(), reverse=True):
            name = models.name(level)
            out[label, "plain", name] = plain
            out[label, "codec", name] = make(toy, models.sample_rate, seconds, models.vqvae.level(level))
    return out


def real_ceiling(models: SamplingModels, toy: Path, seconds: float, judges: dict) -> list[dict]:
    """Recognition of the real songs passed through each level's VQ-VAE, per (label, classifier, level)."""
    sr, out = models.sample_rate, []
    for level in sorted(models.vqvae.available(), reverse=True):
        name = models.name(level)
        _, heard, songs = resynthesised(toy, sr, seconds, models.vqvae.level(level))
        truth = {"artist": [s["artist"] for s in songs], "genre": [first_genre(s) for s in songs]}
        for (label, kind, lv), judge in judges.items():
            if lv == name:
                hits = ceiling(heard, truth[label], sr, judge, LABELS[label][1])
                out.append({"level": name, "label": label, "classifier": kind, "recognised": hits, "of": len(songs)})
    return out


def sample_once(models, out: Path, artists, genres, lyrics: str, seconds: float, seed: int, scale: float) -> float:
    """Sample the request into `out` unless it is there already; seconds spent."""
    if (out / "codes.pt").is_file() and not (out / "state.pt").is_file():
        return 0.0
    t0 = time.perf_counter()
    req = SampleRequest(out=str(out), artists=artists, genres_each=[[g] for g in genres], lyrics=lyrics,
                        seconds=seconds, seed=seed, cfg_scale=[scale] if scale != 1.0 else None,
                        resume=(out / "state.pt").is_file())  # fmt: skip
    sample_song(models, req)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="a run with every level (e.g. `make demo`'s)")
    p.add_argument("--toy", default="data/toy", help="the toy set (audio + metadata.csv)")
    p.add_argument("--out", default="runs/bench_conditioning", help="where the samples go (resumable)")
    p.add_argument("--scales", default="1,2,4", help="guidance scales, comma-separated (1 = none)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--per-artist", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args(argv)
    run, toy, root = Path(args.run), Path(args.toy), Path(args.out)
    models = SamplingModels.from_run(run)
    songs = toy_songs(toy)
    artists, genres = requested(songs, args.per_artist)
    lyrics = next(s["lyrics"] for s in songs if s["lyrics"].strip())
    scales = [float(s) for s in args.scales.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    judges = classifiers(models, toy, args.seconds)
    asked = {"artist": artists, "genre": genres}
    results, times = [], {}
    for scale in scales:
        for seed in seeds:
            out = root / f"scale{scale:g}_seed{seed}"
            times[f"scale{scale:g}_seed{seed}"] = sample_once(models, out, artists, genres, lyrics, args.seconds,
                                                              seed, scale)  # fmt: skip
            for (label, kind, level), judge in judges.items():
                r = recognition(out, asked[label], judge, level, features=LABELS[label][1])
                results.append({"scale": scale, "seed": seed, "level": level, "label": label, "classifier": kind,
                                "recognised": r["recognised"], "of": r["of"], "heard": r["heard"]})  # fmt: skip
    chance = {"artist": 1 / len(set(artists)), "genre": 1 / len(set(genres))}
    print(f"{len(artists)} songs of {args.seconds:g} s per (scale, seed); chance: artist {chance['artist']:.0%}, "
          f"genre {chance['genre']:.0%}; run {run}")  # fmt: skip
    print(f"{'scale':>5} {'level':<7} {'label':<6} {'classifier':<10} {'per seed':<14} {'mean':>5} {'spread':>7}")
    summary = []
    for scale in scales:
        for level in [models.name(lv) for lv in sorted(models.vqvae.available(), reverse=True)]:
            for label in LABELS:
                for kind in ("plain", "codec"):
                    rows = [r for r in results if (r["scale"], r["level"], r["label"], r["classifier"]) ==
                            (scale, level, label, kind)]  # fmt: skip
                    counts = [r["recognised"] for r in rows]
                    of = rows[0]["of"]
                    mean = statistics.mean(counts)
                    summary.append({"scale": scale, "level": level, "label": label, "classifier": kind,
                                    "per_seed": counts, "of": of, "mean": mean, "min": min(counts),
                                    "max": max(counts)})  # fmt: skip
                    per_seed = " ".join(f"{c}/{of}" for c in counts)
                    print(f"{scale:>5g} {level:<7} {label:<6} {kind:<10} {per_seed:<14} {mean:>5.2f} "
                          f"{min(counts)}-{max(counts):>2}")  # fmt: skip
    real = real_ceiling(models, toy, args.seconds, judges)
    for r in real:
        print(f"{'real':>5} {r['level']:<7} {r['label']:<6} {r['classifier']:<10} {r['recognised']}/{r['of']} real "
              f"songs through the codec ({r['recognised'] / r['of']:.0%})")  # fmt: skip
    print(json.dumps({"summary": summary, "results": results, "real": real, "sampling_s": times}))


if __name__ == "__main__":
    main()
