"""The codec's ceiling on the demo's artist check: how well the toy set's real songs are recognised after one
VQ-VAE level re-synthesises them, for VQ-VAE settings that fit the demo's budget.

    python bench/codec_ceiling.py --data data/toy_shards --toy data/toy --level bottom

A generated song can be recognised by the plain timbre classifier (trained on the real clips as they are) no
more often than real songs that went through the same codec. For each variant (tiny preset plus its overrides)
this trains the level from scratch (resumable: a trained variant is read back), re-synthesises the first
`--seconds` of every toy song and prints: artist recognised by the plain and the codec-aware classifiers, the
waveform SNR, and how far the reconstruction's 3.7-8 kHz bands sit below the real songs' (dB), with the training
time. Then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jukebox_pl.data.toy import timbre_features
from jukebox_pl.stages.demo import artist_classifier, ceiling, resynthesised
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.vqvae.vqvae import VQVAE

VARIANTS = {
    "demo": [],
    "lr 1e-3": ["vqvae.optim.lr=1e-3"],
    "800 steps": ["trainer.max_steps=800"],
    "log-mag x3": ["vqvae.mrstft_w_log_mag=3"],
    "no log-mag": ["vqvae.mrstft_w_log_mag=0"],
    "reference loss": ["vqvae.spectral_mode=reference"],
    "1024 codes": ["vqvae.l_bins=1024"],
    "width 64": ["vqvae.width=64"],
}
HIGH_BANDS = slice(27, 32)  # timbre_features' log-spaced bands from 3.7 to 8 kHz


def measure(codec, toy: Path, sr: int, seconds: float, plain) -> dict:
    """Artist recognition of the real songs through `codec` (plain and codec-aware), SNR and high-band loss."""
    clips, heard, songs = resynthesised(toy, sr, seconds, codec)
    artists = [row["artist"] for row in songs]
    aware = artist_classifier(toy, sr, seconds, codec)
    real_f = np.stack([timbre_features(c, sr) for c in clips])
    heard_f = np.stack([timbre_features(h, sr) for h in heard])
    hits = {"plain": ceiling(heard, artists, sr, plain), "codec": ceiling(heard, artists, sr, aware)}
    snr = np.mean([10 * np.log10((c**2).sum() / max(((c - h) ** 2).sum(), 1e-12)) for c, h in zip(clips, heard)])
    # timbre_features are log10 band powers minus their mean; the bands' mean offset is common to all, so
    # measure the high bands against the 60 Hz-3.7 kHz ones
    gap = (heard_f - real_f)[:, HIGH_BANDS].mean() - (heard_f - real_f)[:, : HIGH_BANDS.start].mean()
    return {"plain": hits["plain"], "codec": hits["codec"], "of": len(clips), "artists": len(set(artists)),
            "snr_db": float(snr),
            "high_band_db": float(10 * gap)}  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/toy_shards", help="the toy set's shards (`make toy-shards`)")
    p.add_argument("--toy", default="data/toy", help="the toy set (audio + metadata.csv)")
    p.add_argument("--level", default="bottom", choices=["top", "middle", "bottom"])
    p.add_argument("--out", default="runs/bench_codec_ceiling", help="one run folder per variant (resumable)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    toy, rows = Path(args.toy), []
    plain = None
    for name in names:
        run = Path(args.out) / name.replace(" ", "_")
        done = (run / f"vqvae_{args.level}" / "checkpoints" / "last.ckpt").is_file()
        t0 = time.perf_counter()
        if not done:
            train_vqvae(run, args.level, "tiny", args.data, VARIANTS[name], resume=False)
        trained = time.perf_counter() - t0
        vqvae = VQVAE.from_run(run, levels=[args.level])
        sr = vqvae.sample_rate
        plain = plain or artist_classifier(toy, sr, args.seconds)
        row = {"variant": name, "overrides": VARIANTS[name], "train_s": None if done else trained,
               **measure(vqvae.level(args.level), toy, sr, args.seconds, plain)}  # fmt: skip
        rows.append(row)
    print(f"{args.level} level; the toy set's real songs ({args.seconds:g} s) re-synthesised; artist recognised of "
          f"{rows[0]['of']} (chance {rows[0]['of'] / rows[0]['artists']:g})")  # fmt: skip
    print(f"{'variant':<16} {'plain':>6} {'codec-aware':>12} {'SNR dB':>7} {'3.7-8 kHz dB':>13} {'train s':>8}")
    for r in rows:
        train = "-" if r["train_s"] is None else f"{r['train_s']:.0f}"
        print(f"{r['variant']:<16} {r['plain']:>6} {r['codec']:>12} {r['snr_db']:>7.1f} {r['high_band_db']:>13.1f} "
              f"{train:>8}")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
