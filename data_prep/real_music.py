"""Build the real-music set: game soundtracks from Debian packages, a metadata CSV, shards at 22.05 and 44.1 kHz.

    python data_prep/real_music.py [--out data/real_music] [--rates 22050 44100] [--uncredited] [--no-install]

Installs the packages when their music is missing (apt-get; root, as on this project's machines), copies each
song whose composer the package names into OUT/audio/, writes OUT/metadata.csv (artist, genre where the title
tells it, split, game, licence) and OUT/LICENCES.txt, then preps shards into OUT_22k/ and OUT_44k/ (whole songs
held out: see jukebox_pl.data.debian_music.HELD_OUT). Reruns resume and copy nothing twice. The audio and the
shards stay on this machine: they are third-party works, never committed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from jukebox_pl.data.debian_music import SOURCES, find_songs, missing_packages, package_licence, summary, write_set
from jukebox_pl.data.prep import PrepOptions, prepare_shards

MIN_MINUTES, MIN_ARTISTS = 40, 4


def install(packages: list[str]) -> None:
    """apt-get install the packages; one line naming the command to run when that cannot be done here."""
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if os.geteuid() != 0:
        raise SystemExit(f"the music packages are not installed; run as root: {' '.join(command)}")
    print(f"installing {' '.join(packages)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (command, None):
        if attempt is None:  # the package lists may be missing or stale: update once, then try again
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
            attempt = command
        done = subprocess.run(attempt, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode == 0:
            return
    raise SystemExit(f"apt-get could not install {' '.join(packages)}: {done.stderr.strip().splitlines()[-1:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/real_music", help="the set's folder; shards go to OUT_22k/ and OUT_44k/")
    p.add_argument("--rates", type=int, nargs="+", default=[22050, 44100], help="shard sample rates")
    p.add_argument("--uncredited", action="store_true", help="also songs whose composer no file names")
    p.add_argument("--no-install", action="store_true", help="use only packages already installed")
    p.add_argument("--workers", type=int, default=2, help="decoding processes of the prep")
    args = p.parse_args()
    start = time.perf_counter()
    missing = missing_packages()
    if missing and not args.no_install:
        install(missing)
    for source in SOURCES:
        print(f"{source.package} ({source.game}): {package_licence(source.package)}")
    songs = find_songs(uncredited=args.uncredited)
    for line in summary(songs):
        print(line)
    minutes, artists = sum(s.seconds for s in songs) / 60, {s.artist for s in songs} - {"unknown"}
    if minutes < MIN_MINUTES or len(artists) < MIN_ARTISTS:
        sys.exit(
            f"only {minutes:.0f} min by {len(artists)} named artists found (want {MIN_MINUTES} min, "
            f"{MIN_ARTISTS} artists); missing packages: {', '.join(missing_packages()) or 'none'}"
        )
    out = Path(args.out)
    meta = write_set(songs, out)
    print(f"wrote {meta} and {out / 'LICENCES.txt'}", flush=True)
    for rate in args.rates:
        shards = out.parent / f"{out.name}_{rate // 1000}k"
        opts = PrepOptions(
            src=str(out / "audio"), out=str(shards), metadata=str(meta), sr=rate, val_fraction=0.0, workers=args.workers
        )
        manifest = prepare_shards(opts, progress=sys.stderr.isatty())
        tracks = manifest.get("tracks", [])
        held = sum(t.get("split") == "val" for t in tracks)
        print(f"{shards}: {len(tracks)} tracks at {rate} Hz ({held} held out)", flush=True)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
