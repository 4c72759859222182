"""The toy set: deterministic, the promised mix of formats, and labels recoverable from the sound."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukebox_pl.audio import resample
from jukebox_pl.data.toy import (
    ARTISTS,
    GENRES,
    NearestCentroid,
    make_toy_dataset,
    rhythm_features,
    song_plan,
    timbre_features,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    meta = make_toy_dataset(out, songs_per_pair=2, seconds=(5.0, 7.0), seed=0)
    return out, meta, list(csv.DictReader(meta.open(newline="")))


def test_metadata_and_files(toy):
    out, meta, rows = toy
    assert len(rows) == len(ARTISTS) * len(GENRES) * 2
    assert {r["artist"] for r in rows} == set(ARTISTS)
    assert {r["genre"] for r in rows} == {"march", "waltz;folk", "swing"}
    rates, channels, exts = set(), set(), set()
    for r in rows:
        path = out / "audio" / r["path"]
        data, sr = sf.read(path, always_2d=True)
        rates.add(sr)
        channels.add(data.shape[1])
        exts.add(path.suffix)
        assert 5.0 <= len(data) / sr <= 7.0 + 1e-3
        assert 0.5 < np.abs(data).max() <= 1.0
        if r["lyrics"].endswith(".txt"):
            assert (out / r["lyrics"]).read_text().strip()
        else:
            assert r["lyrics"].strip()
    assert rates == {22050, 44100} and channels == {1, 2} and exts == {".flac", ".wav", ".ogg"}
    assert any(r["lyrics"].endswith(".txt") for r in rows)


@pytest.mark.slow
def test_deterministic(toy, tmp_path):
    out, _, rows = toy
    again = make_toy_dataset(tmp_path / "a", songs_per_pair=2, seconds=(5.0, 7.0), seed=0)
    other = make_toy_dataset(tmp_path / "b", songs_per_pair=2, seconds=(5.0, 7.0), seed=1)
    assert again.read_text() == (out / "metadata.csv").read_text()
    for r in rows:
        if r["path"].endswith((".flac", ".wav")):
            assert (out / "audio" / r["path"]).read_bytes() == (tmp_path / "a" / "audio" / r["path"]).read_bytes()
    assert other.read_text() != again.read_text()


def test_lyrics_are_sung_syllables_spread_over_the_song():
    for plan in song_plan(seed=0, songs_per_pair=1, seconds=(6.0, 6.0)):
        syllables = plan.lyrics.split()
        assert all(len(s) == 2 and s[1] in "aeiou" for s in syllables)
        assert len(syllables) == int(6.0 * {"march": 132, "waltz": 84, "swing": 108}[plan.genre] / 60)


def _clip(out: Path, rel: str) -> np.ndarray:
    data, sr = sf.read(out / "audio" / rel, always_2d=True)
    return resample(data.T.astype(np.float32), sr, 22050)


def test_artist_and_genre_are_recoverable_from_the_sound(toy):
    out, _, rows = toy
    train = [r for r in rows if Path(r["path"]).stem.endswith("_0")]
    test = [r for r in rows if Path(r["path"]).stem.endswith("_1")]
    clips = {r["path"]: _clip(out, r["path"]) for r in rows}
    artist = NearestCentroid().fit(
        [timbre_features(clips[r["path"]], 22050) for r in train], [r["artist"] for r in train]
    )
    hits = [
        p == r["artist"] for p, r in zip(artist.predict([timbre_features(clips[r["path"]], 22050) for r in test]), test)
    ]
    assert np.mean(hits) >= 0.9
    genre = NearestCentroid().fit(
        [rhythm_features(clips[r["path"]], 22050) for r in train], [r["genre"] for r in train]
    )
    hits = [
        p == r["genre"] for p, r in zip(genre.predict([rhythm_features(clips[r["path"]], 22050) for r in test]), test)
    ]
    assert np.mean(hits) >= 0.9


@pytest.mark.slow
def test_script_runs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "data_prep" / "make_toy_dataset.py"),
            "--out",
            str(tmp_path),
            "--songs-per-pair",
            "1",
            "--seconds",
            "3",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 songs" in proc.stdout and (tmp_path / "metadata.csv").is_file()
