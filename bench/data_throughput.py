"""Training-loader throughput at 44.1 kHz: crops/s and audio-seconds/s with 0 and 2 DataLoader workers.

Builds its own synthetic stereo tracks (no third-party audio), preps them into shards with `jukebox-pl prep`
and times the training DataLoader of `AudioDataModule`, after one warm-up batch.

    python bench/data_throughput.py [--tracks 16] [--seconds 60] [--batches 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from jukebox_pl.data.datamodule import AudioDataModule
from jukebox_pl.data.prep import PrepOptions, prepare_shards

SR = 44100


def synth_track(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f = 110 * 2 ** (rng.integers(0, 24, size=int(seconds * 2)) / 12)
    f = np.repeat(f, int(np.ceil(n / len(f))))[:n]
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.02 * rng.standard_normal(n)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    return np.stack([x, np.roll(x, 300)], axis=1).astype(np.float32)


def measure(shards: Path, sample_length: int, batch_size: int, workers: int, batches: int) -> tuple[float, float]:
    dm = AudioDataModule(
        shards=str(shards),
        sample_rate=SR,
        sample_length=sample_length,
        batch_size=batch_size,
        num_workers=workers,
        epoch_length=(batches + 1) * batch_size,
        shuffle_buffer=64,
    )
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)  # warm-up: worker start, first shard open
    start = time.perf_counter()
    crops = sum(b["audio"].shape[0] for _, b in zip(range(batches), it))
    elapsed = time.perf_counter() - start
    return crops / elapsed, crops * sample_length / SR / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--batches", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "music"), Path(tmp, "shards")
        src.mkdir()
        for i in range(args.tracks):
            sf.write(src / f"track{i:03d}.flac", synth_track(args.seconds, i), SR)
        t0 = time.perf_counter()
        manifest = prepare_shards(
            PrepOptions(src=str(src), out=str(out), sr=SR, val_fraction=0.1, shard_tracks=4, workers=2), progress=False
        )
        prep_s = time.perf_counter() - t0
        hours = manifest["hours"]["total"]
        print(
            f"prep: {args.tracks} x {args.seconds:.0f} s stereo FLAC at 44.1 kHz -> shards in {prep_s:.1f} s "
            f"({hours * 3600 / prep_s:.1f} audio-s/s, 2 workers)"
        )
        print(f"{'crop':>12} {'batch':>5} {'workers':>7} {'crops/s':>9} {'audio-s/s':>10}")
        for sample_length, batch_size in ((65536, 8), (1048576, 2)):
            for workers in (0, 2):
                crops, audio_s = measure(out, sample_length, batch_size, workers, args.batches)
                label = f"{sample_length / SR:.1f} s"
                print(f"{label:>12} {batch_size:>5} {workers:>7} {crops:>9.1f} {audio_s:>10.1f}")


if __name__ == "__main__":
    main()
