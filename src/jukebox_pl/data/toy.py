"""The toy set: deterministic, license-free synthetic songs whose labels can be heard.

Four "artists" differ in timbre (organ, reed, plucked string, FM bell) and vocal register; three "genres"
differ in tempo, scale and rhythm (march, waltz, swing); every song has "lyrics", consonant-vowel syllables
sung on the melody notes by a formant voice and spread evenly over the song (so the reference's linear lyric
alignment holds). Files come in mixed formats, sample rates and channel counts, with a metadata CSV, so the
same `jukebox-pl prep` path as real music is exercised. It is the built-in data of `make demo` and the tests.

`timbre_features`, `tempo_bpm` and `NearestCentroid` recognise artist and genre from the sound alone; the
demo uses them to check that generated songs sound like the artist they were asked for.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ARTISTS = ["Organ Ondine", "Reed Rasmus", "Pluck Petra", "Bell Bruno"]
GENRES = ["march", "waltz", "swing"]

# Per artist: voice register (multiplier of the melody pitch) and stereo/format habits are derived from index.
_VOICE_REGISTER = {"Organ Ondine": 2.0, "Reed Rasmus": 1.0, "Pluck Petra": 1.5, "Bell Bruno": 0.5}
# Per artist: the octave the accompaniment plays in (part of each artist's sound).
_ACCOMP_OCTAVE = {"Organ Ondine": 0.5, "Reed Rasmus": 1.0, "Pluck Petra": 1.0, "Bell Bruno": 2.0}


@dataclass(frozen=True)
class Genre:
    bpm: float
    beats_per_bar: int
    scale: tuple[int, ...]
    swing: float  # share of a beat taken by the first of two eighth notes (0.5 = straight)


GENRE_STYLE = {
    "march": Genre(132.0, 4, (0, 2, 4, 5, 7, 9, 11), 0.5),
    "waltz": Genre(84.0, 3, (0, 2, 3, 5, 7, 8, 10), 0.5),
    "swing": Genre(108.0, 4, (0, 2, 4, 7, 9), 0.67),
}
VOWEL_FORMANTS = {
    "a": (800, 1150, 2900),
    "e": (400, 2100, 2800),
    "i": (300, 2300, 3000),
    "o": (450, 800, 2830),
    "u": (325, 700, 2530),
}
CONSONANTS = "lmnkstpr"


@dataclass(frozen=True)
class SongPlan:
    index: int
    rel_path: str
    artist: str
    genre: str
    seconds: float
    sample_rate: int
    channels: int
    lyrics: str
    lyrics_in_file: bool


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def song_plan(seed: int = 0, songs_per_pair: int = 2, seconds=(8.0, 14.0), sample_rate: int = 22050) -> list[SongPlan]:
    """Every song of the set (paths, labels, lyrics, format) without rendering any audio."""
    plans = []
    formats = ("flac", "flac", "wav", "ogg")
    for a, artist in enumerate(ARTISTS):
        for g, genre in enumerate(GENRES):
            for n in range(songs_per_pair):
                i = len(plans)
                rng = np.random.default_rng([seed, i, 1])
                secs = float(rng.uniform(*seconds)) if seconds[1] > seconds[0] else float(seconds[0])
                style = GENRE_STYLE[genre]
                n_notes = int(secs * style.bpm / 60)
                syllables = [
                    CONSONANTS[rng.integers(len(CONSONANTS))] + "aeiou"[rng.integers(5)] for _ in range(n_notes)
                ]
                lines = [
                    " ".join(syllables[j : j + style.beats_per_bar]) for j in range(0, n_notes, style.beats_per_bar)
                ]
                ext = formats[i % len(formats)]
                plans.append(
                    SongPlan(
                        index=i,
                        rel_path=f"{_slug(artist)}/{genre}_{n}.{ext}",
                        artist=artist,
                        genre=genre,
                        seconds=secs,
                        sample_rate=44100 if i % 3 == 2 else sample_rate,
                        channels=2 if (a + g + n) % 2 else 1,
                        lyrics="\n".join(lines) + "\n",
                        lyrics_in_file=i % 3 == 1,
                    )
                )
    return plans


# -- synthesis ----------------------------------------------------------------------------------------------
def _envelope(n: int, sr: int, attack: float, decay: float | None) -> np.ndarray:
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / max(attack, 1e-4))
    if decay is not None:
        env *= np.exp(-t / decay)
    release = min(n, int(0.02 * sr))
    env[n - release :] *= np.linspace(1, 0, release)
    return env


def instrument_note(artist: str, freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note in the artist's timbre: the part of the sound that identifies the artist."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    if artist == "Organ Ondine":  # full harmonic series, slow attack, sustained
        for k, amp in enumerate((1.0, 0.6, 0.45, 0.3, 0.2, 0.12), 1):
            out += amp * np.sin(2 * np.pi * k * freq * t)
        out *= _envelope(n, sr, 0.04, None)
    elif artist == "Reed Rasmus":  # odd harmonics only, vibrato
        vib = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * t)
        phase = 2 * np.pi * freq * np.cumsum(vib) / sr
        for k in (1, 3, 5, 7, 9):
            out += np.sin(k * phase) / k
        out *= _envelope(n, sr, 0.02, None)
    elif artist == "Pluck Petra":  # bright attack, upper harmonics die first
        for k in range(1, 9):
            out += (
                (0.9**k) * np.sin(2 * np.pi * k * freq * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t * (2.0 + 1.5 * k))
            )
        out *= _envelope(n, sr, 0.002, None)
    else:  # "Bell Bruno": FM with a non-integer ratio, decaying index: inharmonic, metallic
        index = 3.0 * np.exp(-t * 4.0)
        out = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * 3.5 * freq * t)) * _envelope(n, sr, 0.001, 0.6)
    return out / max(1e-9, np.max(np.abs(out)))


def sung_syllable(syllable: str, freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A consonant burst then the vowel: a pulse-train source shaped by the vowel's formants."""
    consonant, vowel = syllable[0], syllable[1]
    t = np.arange(n) / sr
    f0 = freq * (1 + 0.01 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = VOWEL_FORMANTS[vowel]
    voice = np.zeros(n)
    for k in range(1, int(min(5000, sr / 2 - 200) / freq)):
        fk = k * freq
        gain = sum(np.exp(-0.5 * ((fk - fm) / (60 + 0.06 * fm)) ** 2) * w for fm, w in zip(formants, (1.0, 0.6, 0.3)))
        if gain > 1e-3:
            voice += gain / np.sqrt(k) * np.sin(k * phase)
    voice *= _envelope(n, sr, 0.03, None)
    c_len = min(n // 3, int(0.04 * sr))
    burst = rng.standard_normal(c_len) * np.exp(-np.arange(c_len) / (0.012 * sr))
    if consonant in "mnlr":  # voiced consonants: a low hum instead of noise
        burst = np.sin(2 * np.pi * freq * np.arange(c_len) / sr) * np.hanning(c_len)
    else:
        burst = np.diff(burst, prepend=0.0)
    voice[:c_len] *= np.linspace(0.2, 1.0, c_len)
    voice[:c_len] += 0.5 * burst
    return voice / max(1e-9, np.max(np.abs(voice)))


def drum(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if kind == "kick":
        return np.sin(2 * np.pi * (50 * t + 70 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 12)
    if kind == "snare":
        return (0.7 * rng.standard_normal(n) + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 25)
    return np.diff(rng.standard_normal(n), prepend=0.0) * np.exp(-t * 60)  # hat


def _place(track: np.ndarray, sound: np.ndarray, start: int, gain: float) -> None:
    end = min(len(track), start + len(sound))
    if end > start:
        track[start:end] += gain * sound[: end - start]


def render_song(plan: SongPlan, seed: int) -> np.ndarray:
    """(channels, samples) float32 audio at plan.sample_rate, peak about -1 dBFS."""
    rng = np.random.default_rng([seed, plan.index, 2])
    sr, style = plan.sample_rate, GENRE_STYLE[plan.genre]
    n = int(plan.seconds * sr)
    beat = 60.0 / style.bpm
    root = 220.0 * 2 ** (rng.integers(-3, 4) / 12)
    voice, accomp, drums = np.zeros(n), np.zeros(n), np.zeros(n)
    syllables = plan.lyrics.split()
    degree = 0
    bar_len = style.beats_per_bar
    for i, syllable in enumerate(syllables):
        start = int(i * beat * sr)
        if start >= n:
            break
        degree = int(np.clip(degree + rng.integers(-2, 3), -3, len(style.scale) + 3))
        octave, idx = divmod(degree, len(style.scale))
        freq = root * 2 ** (octave + style.scale[idx] / 12)
        note_n = int(beat * sr * 0.95)
        _place(voice, sung_syllable(syllable, freq * _VOICE_REGISTER[plan.artist] / 2, note_n, sr, rng), start, 0.3)
        if i % bar_len == 0:  # bass + chord in the artist's timbre, once per bar
            chord_root = (
                _ACCOMP_OCTAVE[plan.artist]
                * root
                * 2 ** (style.scale[[0, 3, 4, 0][(i // bar_len) % 4] % len(style.scale)] / 12)
            )
            bar_n = int(beat * bar_len * sr)
            _place(accomp, instrument_note(plan.artist, chord_root / 2, bar_n, sr, rng), start, 0.6)
            for interval in (0, style.scale[2 % len(style.scale)], 7):
                _place(
                    accomp, instrument_note(plan.artist, chord_root * 2 ** (interval / 12), bar_n, sr, rng), start, 0.25
                )
        # drums: the genre's rhythm
        pos = i % bar_len
        if pos == 0 or (bar_len == 4 and pos == 2):
            _place(drums, drum("kick", int(0.25 * sr), sr, rng), start, 0.9)
        if (bar_len == 4 and pos in (1, 3)) or (bar_len == 3 and pos in (1, 2)):
            _place(drums, drum("snare" if bar_len == 4 else "hat", int(0.2 * sr), sr, rng), start, 0.5)
        off = start + int(style.swing * beat * sr)
        _place(drums, drum("hat", int(0.08 * sr), sr, rng), off, 0.2)
    if plan.channels == 1:
        mix = (voice + accomp + drums)[None]
    else:
        mix = np.stack([0.6 * voice + 0.8 * accomp + drums, 0.4 * voice + 0.4 * accomp + drums])
    peak = np.max(np.abs(mix))
    return (mix * (10 ** (-1 / 20) / max(peak, 1e-9))).astype(np.float32)


def make_toy_dataset(
    out_dir: str | Path, *, songs_per_pair: int = 2, seconds=(8.0, 14.0), seed: int = 0, sample_rate: int = 22050
) -> Path:
    """Write `out_dir/audio/...` and `out_dir/metadata.csv` (paths relative to audio/); return the CSV path."""
    out = Path(out_dir)
    rows = []
    for plan in song_plan(seed, songs_per_pair, seconds, sample_rate):
        audio = render_song(plan, seed)
        path = out / "audio" / plan.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        kw = {"format": "OGG", "subtype": "VORBIS"} if path.suffix == ".ogg" else {"subtype": "PCM_16"}
        sf.write(path, audio.T, plan.sample_rate, **kw)
        lyrics = plan.lyrics
        if plan.lyrics_in_file:
            rel = f"lyrics/{Path(plan.rel_path).parent.name}_{Path(plan.rel_path).stem}.txt"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(plan.lyrics)
            lyrics = rel
        genre = "waltz;folk" if plan.genre == "waltz" else plan.genre
        rows.append({"path": plan.rel_path, "artist": plan.artist, "genre": genre, "lyrics": lyrics})
    meta = out / "metadata.csv"
    with meta.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "artist", "genre", "lyrics"])
        writer.writeheader()
        writer.writerows(rows)
    return meta


# -- recognising labels from sound ----------------------------------------------------------------------------
def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def timbre_features(audio: np.ndarray, sr: int, n_fft: int = 2048) -> np.ndarray:
    """Shape of the long-term spectrum in log-spaced bands, level-normalised: what makes an artist's timbre."""
    x = _mono(audio)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    hop = n_fft // 2
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = (np.abs(np.fft.rfft(frames, axis=-1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    edges = np.geomspace(60, min(8000, sr / 2), 33)
    bands = np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    logb = np.log10(bands + 1e-10)
    # flux of the spectrum (attack/decay character), also level-free
    frame_power = np.log10((np.abs(np.fft.rfft(frames, axis=-1)) ** 2).sum(-1) + 1e-10)
    return np.concatenate([logb - logb.mean(), [np.std(np.diff(frame_power))]])


def rhythm_features(audio: np.ndarray, sr: int, lo: float = 60.0, hi: float = 200.0, n: int = 48) -> np.ndarray:
    """Onset-envelope autocorrelation sampled on a BPM grid: a tempo/metre fingerprint of the genre."""
    ac, bpm = _onset_autocorrelation(audio, sr)
    grid = np.geomspace(lo, hi, n)
    order = np.argsort(bpm)
    return np.interp(grid, bpm[order], ac[order]) / max(ac[0], 1e-9)


def _onset_autocorrelation(audio: np.ndarray, sr: int, hop: int = 256, n_fft: int = 1024):
    """Autocorrelation of the spectral flux (rises of log-magnitude summed over bins), and the BPM of each lag.

    Spectral flux follows drum hits and note onsets while sustained tones add little, so it tracks the beat.
    """
    x = _mono(audio)
    if len(x) < n_fft + hop:
        x = np.pad(x, (0, n_fft + hop - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    logmag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=-1)))
    onset = np.maximum(0, np.diff(logmag, axis=0)).sum(1)
    onset = onset - onset.mean()
    ac = np.correlate(onset, onset, "full")[len(onset) - 1 :]
    bpm = 60 * sr / hop / np.maximum(np.arange(len(ac)), 1)
    return ac, bpm


def tempo_bpm(audio: np.ndarray, sr: int, lo: float = 70.0, hi: float = 150.0) -> float:
    """Tempo from the autocorrelation of the onset envelope, searched in [lo, hi] BPM."""
    ac, bpm = _onset_autocorrelation(audio, sr)
    ok = (bpm >= lo) & (bpm <= hi)
    return float(bpm[ok][np.argmax(ac[ok])]) if ok.any() else 0.0


class NearestCentroid:
    """Classify feature vectors by the nearest class mean (features standardised on the training set)."""

    def fit(self, features: np.ndarray, labels: list[str]) -> NearestCentroid:
        X = np.asarray(features, dtype=np.float64)
        self.mean, self.std = X.mean(0), X.std(0) + 1e-9
        Z = (X - self.mean) / self.std
        self.classes = sorted(set(labels))
        self.centroids = np.stack([Z[[lab == c for lab in labels]].mean(0) for c in self.classes])
        return self

    def predict(self, features: np.ndarray) -> list[str]:
        Z = (np.atleast_2d(np.asarray(features, dtype=np.float64)) - self.mean) / self.std
        d = ((Z[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return [self.classes[i] for i in d.argmin(1)]
