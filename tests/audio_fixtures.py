"""Generated test audio: small music folders with good, bad and odd files (no third-party audio)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int, freq: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A little melody: a few notes around `freq` with harmonics, (samples, channels) for soundfile."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    notes = freq * 2 ** (rng.integers(0, 12, size=max(1, int(seconds * 4))) / 12)
    f = np.repeat(notes, int(np.ceil(n / len(notes))))[:n]
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = 0.4 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.01 * rng.standard_normal(n)
    x *= 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2 * t))
    if channels == 1:
        return x[:, None].astype(np.float32)
    return np.stack([x, np.roll(x, 50) * 0.8], axis=1).astype(np.float32)


def make_music_folder(root: Path, n_good: int = 6, seconds: float = 3.0) -> dict:
    """Write good tracks of mixed formats/rates/channels plus every kind of bad file prep must survive."""
    root.mkdir(parents=True, exist_ok=True)
    formats = [("wav", 22050, 1), ("flac", 44100, 2), ("ogg", 48000, 2), ("flac", 22050, 1), ("wav", 32000, 2)]
    good, rows, channels = [], [], {}
    for i in range(n_good):
        ext, sr, ch = formats[i % len(formats)]
        rel = f"artist{i % 3}/song{i}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(seconds + 0.5 * i, sr, 220 * (1 + i % 3), ch, seed=i), sr)
        good.append(rel)
        channels[rel] = ch
        rows.append(
            {
                "path": rel,
                "artist": f"Artist {i % 3}",
                "genre": "rock;pop" if i % 2 else "jazz",
                "lyrics": f"la la song {i}\nsecond line {i}",
                "mood": "happy",
            }
        )
    bad = {}
    (root / "bad").mkdir(exist_ok=True)
    (root / "bad/corrupt.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "bad/notes.wav").write_text("this is a text file with an audio extension\n" * 20)
    sf.write(root / "bad/empty.wav", np.zeros((0, 1), np.float32), 22050)
    sf.write(root / "bad/silent.flac", np.zeros((22050 * 3, 1), np.float32), 22050)
    sf.write(root / "bad/short.wav", tone(0.3, 22050, 440), 22050)
    truncated = (root / good[1]).read_bytes()
    (root / "bad/truncated.flac").write_bytes(truncated[: len(truncated) // 50])
    (root / "bad/song.m4a").write_bytes(b"\0\0\0 ftypM4A " + bytes(100))
    bad = {
        "bad/corrupt.mp3": "cannot decode",
        "bad/notes.wav": "cannot decode",
        "bad/empty.wav": "empty",
        "bad/silent.flac": "silent",
        "bad/short.wav": "too short",
        "bad/song.m4a": "unsupported format",
    }
    (root / "README.txt").write_text("not audio")
    rows.append({"path": "missing/ghost.wav", "artist": "Ghost", "genre": "none", "lyrics": "", "mood": ""})
    meta = root.parent / f"{root.name}_metadata.csv"
    with meta.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "artist", "genre", "lyrics", "mood"])
        writer.writeheader()
        writer.writerows(rows)
    return {
        "root": root,
        "good": good,
        "channels": channels,
        "bad": bad,
        "metadata": meta,
        "truncated": "bad/truncated.flac",
    }


def new_artist_shards(music: dict, folder: Path, name: str = "Zed Newcomer") -> Path:
    """Shards of the music folder in which "Artist 0" is renamed `name` (a new artist for a fine-tuning test),
    at 22050 Hz with a larger validation split; returns the shard folder `folder/new_shards`."""
    from jukebox_pl.data.prep import PrepOptions, prepare_shards

    meta = folder / "new.csv"
    meta.write_text(Path(music["metadata"]).read_text().replace("Artist 0", name))
    shards = folder / "new_shards"
    prepare_shards(PrepOptions(src=str(music["root"]), out=str(shards), metadata=str(meta), sr=22050,
                               val_fraction=0.3, shard_tracks=8, workers=1), progress=False)  # fmt: skip
    return shards
