"""The tracks a `features` run reads: audio files, the tracks of `prep`'s audio shards, or `encode`'s codes files.

Each track becomes one item: its audio prepared as the recipe says (`features.recipe.prepare_audio`) or its
top-level codes, its labels where the data has them, and its full length (for `--total-seconds track`). A track
that cannot be used (unreadable, damaged, shorter than `min_seconds`) becomes an item that says why, so one bad
file is reported and skipped, never the end of the run. The items form a map-style dataset, which Lightning's
predict loop splits across devices and nodes.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from jukebox_pl.audio import AudioDecodeError, audio_info, read_audio
from jukebox_pl.data.prep import MANIFEST_FILE, SPLITS
from jukebox_pl.errors import JukeboxError, MissingInputError, UserValueError
from jukebox_pl.features.recipe import prepare_audio

AUDIO_MEMBERS = ("flac", "wav", "ogg", "mp3")
KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Track:
    """One track to describe: `key` names its output files; `kind` is audio, shard or codes."""

    key: str
    source: str
    kind: str
    member: str | None = None  # the track's key inside a shard
    parts: tuple[tuple[str, int, int], ...] = ()  # its shard members: (extension, byte offset, size)
    error: str | None = None  # why it cannot be read (a damaged shard)


@dataclass(frozen=True)
class Reading:
    """How items are read: the model's rate and top-level hop, how much of each track (`seconds`; None: all), the
    shortest usable clip, peak normalisation, and the codes level name in codes files."""

    sample_rate: int
    hop_length: int
    seconds: float | None
    min_seconds: float
    normalize: bool = True
    level: str = "top"
    read_codes: Callable[[str], dict] | None = None  # a codes file -> its checked dict (`stages.codes.read_codes`)


def safe_key(text: str) -> str:
    """A file-name-safe track key (letters, digits, `._-`)."""
    return KEY_CHARS.sub("_", text).strip("._") or "track"


def _unique(keys: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        n = seen.get(key, 0)
        seen[key] = n + 1
        out.append(key if n == 0 else f"{key}_{n}")
    return out


def file_tracks(files: list[str | Path], kind: str) -> list[Track]:
    """Audio or codes files: keyed by file name (without extension), made unique in the order given."""
    paths = [Path(f) for f in files]
    keys = _unique([safe_key(p.stem) for p in paths])
    return [Track(key, str(p), kind) for key, p in zip(keys, paths)]


def shard_tracks(folder: str | Path) -> list[Track]:
    """Every track of both splits of a `prep` shard folder, in shard order (tar headers only are read)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise MissingInputError(
            f"--data {folder} has no {MANIFEST_FILE}; point it at a folder written by `jukebox-pl prep`"
        )
    manifest = json.loads(manifest_path.read_text())
    names = [name for split in SPLITS for name in (manifest.get("shards") or {}).get(split, [])]
    tracks = []
    for name in names:
        shard = folder / name
        try:  # headers only: where each member's bytes lie, so that a track is read without scanning its shard
            with tarfile.open(shard) as tar:
                members = [(*m.name.rsplit("/", 1)[-1].partition(".")[::2], m.offset_data, m.size)
                           for m in tar if m.isfile()]  # fmt: skip
        except (tarfile.TarError, OSError) as err:
            tracks.append(Track(safe_key(name), str(shard), "broken", error=f"{type(err).__name__}: {err}"))
            continue
        grouped: dict[str, list[tuple[str, int, int]]] = {}
        for member, ext, offset, size in members:
            grouped.setdefault(member, []).append((ext, offset, size))
        tracks += [Track(safe_key(m), str(shard), "shard", m, tuple(parts)) for m, parts in grouped.items()]
    keys = _unique([t.key for t in tracks])
    return [Track(key, t.source, t.kind, t.member, t.parts, t.error) for key, t in zip(keys, tracks)]


def _shard_members(track: Track) -> dict[str, bytes]:
    """A shard track's members by extension, read at the offsets its listing recorded."""
    out = {}
    with open(track.source, "rb") as fh:
        for ext, offset, size in track.parts:
            fh.seek(offset)
            out[ext] = fh.read(size)
            if len(out[ext]) != size:
                raise UserValueError(f"{track.source}:{track.member}.{ext} is cut short (the shard is truncated)")
    return out


class TrackDataset(Dataset):
    """Items for `FeaturesModule.predict_step`: {key, source, audio (float32 numpy) or codes (int64 tensor),
    samples (the track's whole length at the model's rate), artist, genre, error (None or why it is skipped)}."""

    def __init__(self, tracks: list[Track], reading: Reading):
        self.tracks, self.reading = list(tracks), reading

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> dict:
        track = self.tracks[index]
        item = {"key": track.key, "source": track.source if track.member is None else f"{track.source}:{track.member}",
                "audio": None, "codes": None, "samples": 0, "artist": None, "genre": None, "error": None}  # fmt: skip
        try:
            getattr(self, f"_read_{track.kind}")(track, item)
        except (JukeboxError, AudioDecodeError, OSError, tarfile.TarError, ValueError, KeyError) as err:
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            item["error"] = text.removeprefix(f"{track.source}: ")
            item["audio"] = item["codes"] = None
            return item
        used = len(item["audio"]) if item["audio"] is not None else len(item["codes"]) * self.reading.hop_length
        r = self.reading
        least = r.min_seconds if r.seconds is None else min(r.min_seconds, r.seconds)
        if used < least * r.sample_rate:
            item["error"] = f"{used / r.sample_rate:.2f} s of audio, shorter than --min-seconds {least:g}"
            item["audio"] = item["codes"] = None
        return item

    def _prepare(self, audio: np.ndarray, sr: int, name: str) -> np.ndarray:
        r = self.reading
        return prepare_audio(audio, sr, r.sample_rate, r.seconds, r.normalize, name)

    def _read_audio(self, track: Track, item: dict) -> None:
        info = audio_info(track.source)
        if info.sample_rate <= 0 or info.frames <= 0:
            raise UserValueError(f"{track.source} holds no audio")
        frames = -1 if self.reading.seconds is None else math.ceil(self.reading.seconds * info.sample_rate) + 1
        audio, sr = read_audio(track.source, frames=frames)
        item["samples"] = round(info.frames * self.reading.sample_rate / info.sample_rate)
        item["audio"] = self._prepare(audio, sr, track.source)

    def _read_shard(self, track: Track, item: dict) -> None:
        members = _shard_members(track)
        ext = next((e for e in AUDIO_MEMBERS if e in members), None)
        if ext is None:
            raise UserValueError(f"{item['source']}: no audio member (has {sorted(members)})")
        meta = json.loads(members["json"]) if "json" in members else {}
        audio, sr = read_audio(members[ext])
        item["samples"] = round(audio.shape[1] * self.reading.sample_rate / sr)
        item["artist"] = meta.get("artist") or None
        genres = meta.get("genres") or []
        item["genre"] = genres[0] if isinstance(genres, list) and genres else None
        item["audio"] = self._prepare(audio, sr, item["source"])

    def _read_codes(self, track: Track, item: dict) -> None:
        r = self.reading
        if r.read_codes is None:
            raise UserValueError("this reading was set up without a codes-file reader")
        obj = r.read_codes(track.source)
        level = r.level
        if level not in obj["codes"]:
            raise UserValueError(f"{track.source} holds no {level} codes (has {sorted(obj['codes'])})")
        hop = (obj.get("hop_lengths") or {}).get(level)
        if obj["sample_rate"] != r.sample_rate or (hop is not None and hop != r.hop_length):
            raise UserValueError(
                f"{track.source} holds codes of {obj['sample_rate']} Hz audio with a hop of {hop}; the prior reads "
                f"{r.sample_rate} Hz codes with a hop of {r.hop_length} (encode with this run's VQ-VAE)"
            )
        codes = torch.as_tensor(obj["codes"][level]).long().reshape(-1)
        if r.seconds is not None:
            codes = codes[: math.ceil(r.seconds * r.sample_rate / r.hop_length)]
        item["samples"] = int(obj["length"])
        item["codes"] = codes

    def _read_broken(self, track: Track, item: dict) -> None:
        raise UserValueError(f"shard {track.source} cannot be read ({track.error})")


def collate(items: list[dict]) -> list[dict]:
    """Items stay a list: rows of different lengths are padded by the module, which knows the hop."""
    return items
