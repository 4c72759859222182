"""What the feature recipe feeds the model: the audio as JukeMIR prepares it, and the labels it conditions on.

Castellon, Donahue and Liang (2021; code: p-lambda/jukemir, rodrigo-castellon/jukemirlib) read the released `5b`
top prior (no lyrics) this way, and these are the defaults here:

- audio: mixed to mono (the mean of the channels), resampled to the model's rate, scaled so that its peak is 1,
  and only its first 25 s encoded; the top-level codes of the first context window (8192 codes, 23.78 s) are read;
- labels: artist "unknown" and genre "unknown" (id 0 in the reference's tables), a song length (`total_length`)
  of 62 s rounded down to whole top-level codes (above the released prior's 60 s minimum), offset 0;
- lyrics: none (the `5b` prior reads none; a lyrics prior here gets empty lyrics).

For a run of ours the same flags choose otherwise (`Conditioning`): any artist and genre of the run's vocabulary,
another length and offset, or `track` for each track's own length (and its own labels where the data has them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jukebox_pl.audio import resample
from jukebox_pl.data.vocab import UNKNOWN, LabelVocab
from jukebox_pl.errors import UserValueError

RECIPE_TOTAL_SECONDS = 62.0  # jukemirlib's `get_cond`: sample_length_in_seconds = 62
RECIPE_AUDIO_SECONDS = 25.0  # its `get_z`: audio[: 44100 * 25] is encoded
TRACK = "track"  # --total-seconds track / --artist track: each track's own value


@dataclass(frozen=True)
class Conditioning:
    """The labels every window is conditioned on. `artist`/`genre`: names in the prior's vocabulary, or `track`
    (the track's own, where the data gives one; else unknown); `total_seconds`: the song length the timing signal
    reads, or `track` (each track's own length); `offset_seconds`: where the first window starts in that song
    (later windows of a long clip add their own start)."""

    artist: str = UNKNOWN
    genre: str = UNKNOWN
    total_seconds: float | str = RECIPE_TOTAL_SECONDS
    offset_seconds: float = 0.0

    def __post_init__(self) -> None:
        total = self.total_seconds
        if total != TRACK and not (isinstance(total, int | float) and total > 0):
            raise UserValueError(f"--total-seconds {total!r}: give a positive number of seconds or 'track'")
        if not self.offset_seconds >= 0:
            raise UserValueError(f"--offset-seconds {self.offset_seconds!r}: give a number of seconds >= 0")

    def names(self, track_artist: str | None, track_genre: str | None) -> tuple[str, str]:
        """The artist and genre names for one track."""
        artist = (track_artist or UNKNOWN) if self.artist == TRACK else self.artist
        genre = (track_genre or UNKNOWN) if self.genre == TRACK else self.genre
        return artist, genre

    def ids(self, vocab: LabelVocab | None, artist: str, genre: str, strict: bool) -> tuple[int, list[int]]:
        """Label ids of the names: a name the vocabulary lacks is an error when the user gave it (`strict`), the
        unknown id 0 when it came from a track."""
        if vocab is None:
            if (artist, genre) != (UNKNOWN, UNKNOWN) and strict:
                raise UserValueError(
                    f"this run has no label vocabulary, so --artist {artist!r} / --genre {genre!r} cannot be looked "
                    "up; leave them out (unknown, id 0)"
                )
            return 0, [0]
        # "unknown" is id 0 in every vocabulary (the reference's tables look names up with a default of 0)
        artist_id = 0 if artist == UNKNOWN else vocab.artist_id(artist, strict=strict)
        genre_ids = [0] if genre == UNKNOWN else vocab.genre_ids(genre, strict=strict)
        return artist_id, genre_ids

    def total_samples(self, track_samples: int, hop: int, sample_rate: int) -> int:
        """The song length in samples the timing signal reads, rounded down to whole codes of `hop` samples (as
        the reference's sampling does), at least one code."""
        seconds = track_samples / sample_rate if self.total_seconds == TRACK else float(self.total_seconds)
        return max(hop, int(seconds * sample_rate) // hop * hop)

    def offset_samples(self, hop: int, sample_rate: int) -> int:
        return int(self.offset_seconds * sample_rate) // hop * hop


def prepare_audio(audio: np.ndarray, sr: int, model_sr: int, seconds: float | None, normalize: bool = True,
                  name: str = "audio") -> np.ndarray:  # fmt: skip
    """(channels, samples) at `sr` -> mono float32 (samples,) at `model_sr`: the channels' mean, resampled,
    the first `seconds` kept (None: all), scaled to a peak of 1 when `normalize` (silence stays silence)."""
    mono = np.asarray(audio, dtype=np.float32).reshape(-1, audio.shape[-1]).mean(axis=0)
    if seconds is not None:
        mono = mono[: int(np.ceil(seconds * sr))]
    if sr != model_sr:
        mono = resample(mono[None], sr, model_sr, name=name)[0]
    if seconds is not None:
        mono = mono[: int(round(seconds * model_sr))]
    if normalize:
        peak = float(np.abs(mono).max()) if mono.size else 0.0
        if peak > 0:
            mono = mono / peak
    return np.ascontiguousarray(mono, dtype=np.float32)
