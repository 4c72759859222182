"""Write the synthetic toy music set (audio files + metadata.csv) that `make demo` and the tests use.

    python data_prep/make_toy_dataset.py --out data/toy [--songs-per-pair 2] [--seconds 8 14] [--seed 0]

Then shard it like any music folder:

    jukebox-pl prep --src data/toy/audio --metadata data/toy/metadata.csv --out data/toy_shards --sr 22050
"""

from __future__ import annotations

import argparse
import time

from jukebox_pl.data.toy import ARTISTS, GENRES, make_toy_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write (audio/ and metadata.csv go inside)")
    p.add_argument("--songs-per-pair", type=int, default=2, help="songs per (artist, genre) pair")
    p.add_argument("--seconds", type=float, nargs=2, default=(8.0, 14.0), metavar=("MIN", "MAX"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sr", type=int, default=22050, help="sample rate of most files (a third are 44100)")
    args = p.parse_args()
    start = time.perf_counter()
    meta = make_toy_dataset(
        args.out, songs_per_pair=args.songs_per_pair, seconds=tuple(args.seconds), seed=args.seed, sample_rate=args.sr
    )
    n = len(ARTISTS) * len(GENRES) * args.songs_per_pair
    print(
        f"{n} songs ({len(ARTISTS)} artists x {len(GENRES)} genres x {args.songs_per_pair}) in "
        f"{time.perf_counter() - start:.1f} s; metadata: {meta}"
    )


if __name__ == "__main__":
    main()
