"""WebDataset stages that turn track shards into batches of labelled crops.

shards -> tar members (bad ones logged and skipped) -> tracks (FLAC bytes + JSON) -> crops (seek-decoded, so a
24 s window of a 5 min song decodes 24 s, not 5 min) -> examples (mono/stereo, label ids, lyric window) ->
collated batches. Training streams resampled shards forever; validation walks each track once with fixed
crops, split across ranks and workers so that every crop is seen exactly once.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds

from jukebox_pl.audio import AudioDecodeError, read_audio, to_mono
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.lyrics import LyricsTokenizer, lyric_window

log = logging.getLogger(__name__)


@dataclass
class CropSpec:
    """Everything the stages need to cut and label crops (picklable, sent to DataLoader workers)."""

    sample_length: int
    sample_rate: int
    channels: int = 1
    aug_shift: bool = True
    aug_blend: bool = True
    n_lyric_tokens: int = 0
    lyrics_vocab: str = "v2"
    max_genres: int = 5
    min_track_samples: int = 0


class SkipCounter:
    """Counts samples dropped for being unreadable; the count rides along in every batch as `skipped`."""

    def __init__(self) -> None:
        self.count = 0

    def skip(self, what: str, err: object) -> None:
        self.count += 1
        log.warning("skipping %s: %s (%d skipped so far in this worker)", what, err, self.count)


def worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def split_for_consumer(urls: list[str], rank: int, world: int, worker: int, n_workers: int):
    """Shards for one (rank, worker) and a modulus filter over tracks for when there are too few shards.

    Shards are split by rank when there are at least as many shards as ranks, else every rank reads every
    shard and keeps every world-th track; likewise for workers within a rank. Either way each track goes to
    exactly one consumer, whatever the shard count (odd counts included).
    """
    mod, rem = 1, 0
    if len(urls) >= world:
        urls = urls[rank::world]
    else:
        mod, rem = world, rank
    if mod == 1 and len(urls) >= n_workers:
        urls = urls[worker::n_workers]
    else:
        rem, mod = rem + mod * worker, mod * n_workers
    return urls, mod, rem


class ValidationShards(torch.utils.data.IterableDataset):
    """The validation shard list for this rank and worker, in a fixed order; a pipeline source."""

    def __init__(self, urls: list[str], rank: int, world: int):
        super().__init__()
        self.urls, self.rank, self.world = list(urls), rank, world

    def plan(self):
        worker, n_workers = worker_info()
        return split_for_consumer(self.urls, self.rank, self.world, worker, n_workers)

    def __iter__(self):
        urls, _, _ = self.plan()
        for url in urls:
            yield {"url": url}


def every_nth(source: ValidationShards):
    """Pipeline stage keeping only this consumer's tracks when shards had to be shared."""

    def stage(samples: Iterable[dict]) -> Iterator[dict]:
        _, mod, rem = source.plan()
        for i, sample in enumerate(samples):
            if i % mod == rem:
                yield sample

    return stage


def parse_tracks(counter: SkipCounter):
    """Tar members -> track dicts with FLAC bytes and parsed JSON; malformed members are skipped and counted."""

    def stage(samples: Iterable[dict]) -> Iterator[dict]:
        for s in samples:
            where = f"{s.get('__url__', '?')}:{s.get('__key__', '?')}"
            try:
                audio = next(s[k] for k in ("flac", "wav", "ogg", "mp3") if k in s)
                info = json.loads(s["json"]) if isinstance(s.get("json"), bytes | str) else s["json"]
                samples_total = int(info["samples"])
            except (StopIteration, KeyError, TypeError, ValueError) as err:
                counter.skip(where, f"missing or malformed audio/json ({type(err).__name__}: {err})")
                continue
            yield {"key": s["__key__"], "where": where, "audio": audio, "info": info, "samples": samples_total}

    return stage


def train_offsets(total: int, length: int, rng: random.Random, shift: bool) -> list[int]:
    """Crop starts on a grid of `length`, shifted by up to half a crop, clamped inside the track."""
    last = max(0, total - length)
    n = max(1, round(total / length))
    offsets = []
    for i in range(n):
        offset = i * length + (rng.randint(-length // 2, length // 2) if shift else 0)
        offsets.append(min(max(offset, 0), last))
    return offsets


def val_offsets(total: int, length: int, n: int) -> list[int]:
    """`n` evenly spaced crop starts (fewer for short tracks), identical every epoch."""
    last = max(0, total - length)
    n = max(1, min(n, math.ceil(total / length)))
    if n == 1:
        return [last // 2]
    return sorted({round(i * last / (n - 1)) for i in range(n)})


def cut_crops(spec: CropSpec, counter: SkipCounter, train: bool, val_crops_per_track: int = 1, seed: int = 0):
    """Tracks -> crops of `sample_length` samples (seek-decoded; zero-padded at the end of short tracks)."""

    epochs = itertools.count()  # lives in the worker (persistent workers), so each pass draws new crops

    def stage(tracks: Iterable[dict]) -> Iterator[dict]:
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(seed, worker, next(epochs)) if train else seed)
        for t in tracks:
            total = t["samples"]
            if total < spec.min_track_samples:
                continue
            sr = int(t["info"].get("sample_rate", spec.sample_rate))
            if sr != spec.sample_rate:
                counter.skip(t["where"], f"track is {sr} Hz but the config asks {spec.sample_rate} Hz")
                continue
            offsets = (
                train_offsets(total, spec.sample_length, rng, spec.aug_shift)
                if train
                else val_offsets(total, spec.sample_length, val_crops_per_track)
            )
            for index, offset in enumerate(offsets):
                try:
                    audio, _ = read_audio(t["audio"], start=offset, frames=spec.sample_length)
                except AudioDecodeError as err:
                    counter.skip(t["where"], err)
                    break
                yield {**t, "crop": audio, "offset": offset, "crop_index": index, "rng": rng}

    return stage


def shuffle_crops(bufsize: int, seed: int):
    """WebDataset's buffer shuffle with a generator seeded per worker and pass (reproducible, not identical)."""
    epochs = itertools.count()

    def stage(crops: Iterable[dict]) -> Iterator[dict]:
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(seed, worker, next(epochs), 1))
        yield from wds.shuffle(bufsize, initial=max(1, bufsize // 2), rng=rng)(crops)

    return stage


def fit_channels(audio: np.ndarray, channels: int, blend: float | None) -> np.ndarray:
    if channels == 1:
        return to_mono(audio, blend)
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    return audio[:channels]


def label_ids(info: dict, vocab: LabelVocab, max_genres: int) -> dict:
    """A track's artist id and genre ids padded with -1 (unknown names map to 0, as in training data)."""
    genres = [vocab.genre_id(g, strict=False) for g in info.get("genres", [])][:max_genres]
    return {
        "artist": vocab.artist_id(info.get("artist", "unknown"), strict=False),
        "genres": genres + [-1] * (max_genres - len(genres)),
    }


class LyricWindows:
    """The lyric window of each crop; crops of one track arrive together, so only its tokens are kept."""

    def __init__(self, n_tokens: int, vocab: str):
        self.n_tokens, self.tokenizer = n_tokens, LyricsTokenizer(vocab)
        self.key, self.tokens = None, None

    def __call__(self, key: str, lyrics: str, total: int, offset: int, duration: int) -> dict:
        if key != self.key:
            self.key, self.tokens = key, self.tokenizer.encode(lyrics)
        window, start = lyric_window(self.tokens, self.n_tokens, total, offset, duration)
        return {"lyrics": window, "lyric_start": start}


def make_examples(spec: CropSpec, vocab: LabelVocab, counter: SkipCounter, train: bool):
    """Crops -> model-ready examples: fixed-length audio, label ids, timing, and the lyric window."""
    lyrics = LyricWindows(spec.n_lyric_tokens, spec.lyrics_vocab) if spec.n_lyric_tokens > 0 else None

    def stage(crops: Iterable[dict]) -> Iterator[dict]:
        for c in crops:
            audio = c["crop"]
            blend = c["rng"].random() if (train and spec.aug_blend) else None
            audio = fit_channels(audio, spec.channels, blend)
            valid = audio.shape[1]
            if valid < spec.sample_length:
                audio = np.pad(audio, ((0, 0), (0, spec.sample_length - valid)))
            info = c["info"]
            example = {
                "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
                **label_ids(info, vocab, spec.max_genres),
                "offset": c["offset"],
                "total_length": c["samples"],
                "length": valid,
                "key": f"{c['key']}/{c['crop_index']}",
            }
            if lyrics is not None:
                example |= lyrics(c["key"], info.get("lyrics", ""), c["samples"], c["offset"], spec.sample_length)
            example["skipped"] = counter.count
            yield example

    return stage


def collate(examples: list[dict]) -> dict:
    """Stack examples into a batch dict: tensors and arrays stacked, ids as long tensors, `key` kept as a list
    of strings, `skipped` the running count of skipped members."""
    batch = {}
    for name, first in examples[0].items():
        values = [e[name] for e in examples]
        if name == "key":
            batch[name] = values
        elif name == "skipped":
            batch[name] = torch.tensor(max(values), dtype=torch.long)
        elif isinstance(first, torch.Tensor):
            batch[name] = torch.stack(values)
        elif isinstance(first, np.ndarray):
            batch[name] = torch.from_numpy(np.stack(values))
        else:
            batch[name] = torch.tensor(values, dtype=torch.long)
    return batch


def reference_labels(batch: dict, sample_length: int) -> torch.Tensor:
    """The reference's label vector per example: [total_length, offset, sample_length, artist, genres..., lyrics...]."""
    n = batch["artist"].shape[0]
    parts = [
        batch["total_length"][:, None],
        batch["offset"][:, None],
        torch.full((n, 1), sample_length, dtype=torch.long),
        batch["artist"][:, None],
        batch["genres"],
    ]
    if "lyrics" in batch:
        parts.append(batch["lyrics"])
    return torch.cat(parts, dim=1)


def _tar_handler(counter: SkipCounter):
    def handler(exn: Exception) -> bool:
        counter.skip("shard member", exn)
        return True  # keep going

    return handler


def train_pipeline(
    urls: list[str], spec: CropSpec, vocab: LabelVocab, batch_size: int, shuffle_buffer: int, seed: int
) -> wds.DataPipeline:
    """Endless stream of shuffled training batches from resampled shards.

    Reproducible for a given seed, yet different on every rank, worker and pass (ResampledShards mixes in the
    rank and worker; the crop generator the pass number).
    """
    counter = SkipCounter()
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(handler=_tar_handler(counter)),
        parse_tracks(counter),
        cut_crops(spec, counter, train=True, seed=seed),
        shuffle_crops(shuffle_buffer, seed),
        make_examples(spec, vocab, counter, train=True),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )


def val_pipeline(
    urls: list[str], spec: CropSpec, vocab: LabelVocab, batch_size: int, crops_per_track: int, rank: int, world: int
) -> wds.DataPipeline:
    """Each validation track exactly once over all ranks and workers, fixed crops, deterministic mono mix."""
    counter = SkipCounter()
    source = ValidationShards(urls, rank, world)
    return wds.DataPipeline(
        source,
        wds.tarfile_to_samples(handler=_tar_handler(counter)),
        every_nth(source),
        parse_tracks(counter),
        cut_crops(spec, counter, train=False, val_crops_per_track=crops_per_track),
        make_examples(spec, vocab, counter, train=False),
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
