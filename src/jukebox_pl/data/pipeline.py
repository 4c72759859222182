"""One WebDataset pipeline builder for every kind of track shard (audio from `prep`, codes from `encode-shards`).

shards -> tar members (bad ones logged and skipped) -> tracks (parsed by the shard format) -> crop plans ->
crops drawn from many open tracks at once (training) -> examples (the format's content + labels, lyric window,
extra track fields) -> shuffle buffer -> collated batches. Training streams resampled shards forever;
validation walks each track once with fixed crops, split across ranks and workers so that every crop is seen
exactly once. What differs between audio and codes is a `ShardFormat` (how a track is parsed, where crops may
start, what a crop holds); everything else is here, once.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import webdataset as wds

from jukebox_pl.data.skips import SkipLedger
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.errors import UserValueError
from jukebox_pl.lyrics import LyricsTokenizer, lyric_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkipPolicy:
    """How skips are reported and when a training stream counts as starved (`data.max_skips_in_a_row`,
    `data.starve_seconds`, `data.skip_report_seconds`; the full list goes to `log_file`)."""

    log_file: str | None = None
    report_seconds: float = 60.0
    max_in_a_row: int = 1000
    starve_seconds: float = 600.0

    def ledger(self, train: bool) -> SkipLedger:
        """Validation walks a finite list, so it never starves; it still reports and lists its skips."""
        if not train:
            return SkipLedger(self.log_file, self.report_seconds, max_in_a_row=2**62, starve_seconds=math.inf)
        return SkipLedger(self.log_file, self.report_seconds, self.max_in_a_row, self.starve_seconds)


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


def shuffle_crops(bufsize: int, seed: int, start_epoch: int = 0):
    """WebDataset's buffer shuffle of finished examples, seeded per worker and pass (reproducible, not identical)."""
    epochs = itertools.count(start_epoch)

    def stage(crops: Iterable[dict]) -> Iterator[dict]:
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(seed, worker, next(epochs), 1))
        yield from wds.shuffle(bufsize, initial=max(1, bufsize // 2), rng=rng)(crops)

    return stage


def label_ids(info: dict, vocab: LabelVocab, max_genres: int) -> dict:
    """A track's artist id and genre ids padded with -1 (unknown names map to 0, as in training data). A genre
    may give several ids (a word bag of the reference's v2 vocabulary); the first `max_genres` are kept."""
    genres = [i for g in info.get("genres", []) for i in vocab.genre_ids(g, strict=False)][:max_genres]
    return {
        "artist": vocab.artist_id(info.get("artist", "unknown"), strict=False),
        "genres": genres + [-1] * (max_genres - len(genres)),
    }


class LyricWindows:
    """The lyric window of each crop. Crops of the open tracks arrive interleaved, so the tokens of the most
    recently seen tracks are kept (a bounded cache), not just the last one's."""

    def __init__(self, n_tokens: int, vocab: str, keep: int = 64):
        self.n_tokens, self.tokenizer, self.keep = n_tokens, LyricsTokenizer(vocab), keep
        self.tokens: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, key: str, lyrics: str, total: int, offset: int, duration: int) -> dict:
        tokens = self.tokens.get(key)
        if tokens is None:
            tokens = self.tokens[key] = self.tokenizer.encode(lyrics)
            if len(self.tokens) > self.keep:
                self.tokens.popitem(last=False)
        else:
            self.tokens.move_to_end(key)
        window, start = lyric_window(tokens, self.n_tokens, total, offset, duration)
        return {"lyrics": window, "lyric_start": start}


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
        elif isinstance(first, float):
            batch[name] = torch.tensor(values, dtype=torch.float32)
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


def _tar_handler(ledger: SkipLedger):
    def handler(exn: Exception) -> bool:
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a != str(exn.args[0])), "?")
        ledger.skip(url, "unreadable shard or member", f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}")
        return True  # keep going

    return handler


class ResampledShards(torch.utils.data.IterableDataset):
    """Training's endless shard stream: pass e of a worker draws shards from Random((seed, worker, e)), so
    every pass is a fixed function of its number and a resumed run can start again at the pass it stopped in
    (webdataset's ResampledShards counts passes from zero in each new process). A shard that yields no
    track at all is counted as a skip, so a folder of empty shards starves loudly instead of looping."""

    def __init__(self, urls: list[str], seed: int, ledger: SkipLedger, start_epoch: int = 0):
        super().__init__()
        self.urls, self.seed, self.ledger = list(urls), seed, ledger
        self.epochs = itertools.count(start_epoch)

    def __iter__(self):
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(self.seed, worker, next(self.epochs), 3))
        self.ledger.restart_clock()
        self.ledger.expect_shards(self.urls)
        while True:
            url = rng.choice(self.urls)
            before = self.ledger.events
            yield {"url": url}
            self.ledger.shard_read(url)  # the next shard is asked for once this one's samples were all parsed
            if self.ledger.events == before:
                self.ledger.skip(url, "no track in shard", "the shard is empty or holds no complete sample")
            self.ledger.check()


class SkipTrack(UserValueError):
    """A track (or crop) that cannot be used; it is skipped and counted, never fatal."""


class ShardFormat(Protocol):
    """What one kind of track shard contributes to `build_pipeline` (audio crops, code windows, ...)."""

    #: samples one crop spans (timing labels and the lyric window are measured against it)
    sample_length: int
    #: the sample rate the crops must have
    sample_rate: int

    def parse(self, sample: dict) -> dict:
        """A tar sample -> {"info": track json, "samples": total samples, ...}; raise SkipTrack (or a
        KeyError/ValueError) for a malformed track."""

    def offsets(self, track: dict, rng: random.Random | None, n_val: int) -> list[int]:
        """Crop starts in samples: random (rng given, training) or `n_val` fixed ones (validation)."""

    def example(self, crop: dict, rng: random.Random | None) -> dict:
        """The crop's content (e.g. `audio` or `codes`) and `length` (valid samples); raise SkipTrack if unreadable."""


@dataclass(frozen=True)
class TrackField:
    """A per-track value copied from the track's JSON into every example (e.g. a metadata column kept under
    `extra` by `prep`): how new conditioners get their inputs without a new pipeline. `path` is dotted
    (`extra.bpm`); a track without it gets `default`, or is skipped and counted when there is none."""

    name: str
    path: str
    default: float | int | None = None
    dtype: str = "float"  # "float" or "long"

    def value(self, info: dict) -> float | int:
        node: Any = info
        for part in self.path.split("."):
            if not isinstance(node, dict) or part not in node:
                if self.default is None:
                    raise SkipTrack(f"its json has no {self.path!r} (needed for the batch key {self.name!r})")
                node = self.default
                break
            node = node[part]
        try:
            return float(node) if self.dtype == "float" else int(node)
        except (TypeError, ValueError):
            raise SkipTrack(f"{self.path}={node!r} is not a {self.dtype} (batch key {self.name!r})") from None


@dataclass
class LabelSpec:
    """The labels every example carries besides its content: artist/genre ids, timing, lyric window, fields."""

    vocab: LabelVocab
    max_genres: int = 5
    n_lyric_tokens: int = 0
    lyrics_vocab: str = "v2"
    fields: Sequence[TrackField] = ()
    min_track_samples: int = 0


def parse_stage(fmt: ShardFormat, counter: SkipLedger):
    """Tar members -> track dicts; malformed members and tracks of another sample rate are skipped and counted."""

    def stage(samples: Iterable[dict]) -> Iterator[dict]:
        for s in samples:
            where = f"{s.get('__url__', '?')}:{s.get('__key__', '?')}"
            try:
                track = fmt.parse(s)
                sr = int(track["info"].get("sample_rate", fmt.sample_rate))
            except (StopIteration, KeyError, TypeError, ValueError, OSError, EOFError) as err:
                counter.skip(where, "missing or malformed track", f"{type(err).__name__}: {err}")
                continue
            if sr != fmt.sample_rate:
                counter.skip(where, "wrong sample rate", f"track is {sr} Hz but the config asks {fmt.sample_rate} Hz")
                continue
            counter.track_seen(where)
            yield {"key": s["__key__"], "where": where, **track}

    return stage


def plan_stage(
    fmt: ShardFormat, labels: LabelSpec, train: bool, ledger: SkipLedger, n_val: int = 1, seed: int = 0, start_epoch=0
):
    """Tracks -> (track, crop starts): random every pass for training, fixed and evenly spaced for validation."""
    epochs = itertools.count(start_epoch)  # lives in the worker (persistent workers): each pass draws new crops

    def stage(tracks: Iterable[dict]) -> Iterator[dict]:
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(seed, worker, next(epochs)) if train else seed)
        for t in tracks:
            if t["samples"] < labels.min_track_samples:
                ledger.track_failed(t["where"])
                ledger.skip(t["where"], "shorter than data.min_track_seconds", f"{t['samples']} samples")
                continue
            yield {**t, "rng": rng, "offsets": fmt.offsets(t, rng if train else None, n_val)}

    return stage


def mix_tracks(open_tracks: int, seed: int, start_epoch: int = 0):
    """Crops drawn from up to `open_tracks` open tracks at once, so that consecutive crops (and so a batch) come
    from different songs, as the reference's random crop of a random track. Each pick is a random open track
    among those not picked in the last half-pool picks, so any `open_tracks // 2 + 1` consecutive crops come
    from distinct tracks; a finished track is replaced by the next one from the stream. A track is read once
    per visit of its shard, and only its compressed bytes are held, not decoded audio."""
    epochs = itertools.count(start_epoch)

    def stage(plans: Iterable[dict]) -> Iterator[dict]:
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(seed, worker, next(epochs), 2))
        source = iter(plans)
        pool: list[list] = []  # [track plan, next crop index, last pick]
        exhausted, picks = False, 0
        while True:
            while not exhausted and len(pool) < max(1, open_tracks):
                plan = next(source, None)
                if plan is None:
                    exhausted = True
                elif plan["offsets"]:
                    pool.append([plan, 0, -(10**9)])
            if not pool:
                return
            cooldown = len(pool) // 2
            ready = [entry for entry in pool if picks - entry[2] > cooldown]
            entry = rng.choice(ready)
            plan, index = entry[0], entry[1]
            yield {**plan, "offset": plan["offsets"][index], "crop_index": index}
            entry[1], entry[2], picks = index + 1, picks, picks + 1
            if entry[1] == len(plan["offsets"]):
                pool.remove(entry)

    return stage


def in_order(plans: Iterable[dict]) -> Iterator[dict]:
    """Validation: every crop of every track, in order."""
    for plan in plans:
        for index, offset in enumerate(plan["offsets"]):
            yield {**plan, "offset": offset, "crop_index": index}


def example_stage(fmt: ShardFormat, labels: LabelSpec, counter: SkipLedger, train: bool):
    """Crops -> examples: the format's content + label ids, timing, lyric window and extra track fields."""
    lyrics = LyricWindows(labels.n_lyric_tokens, labels.lyrics_vocab) if labels.n_lyric_tokens > 0 else None
    # (the lyric cache holds more tracks than are open at once, so each track's lyrics are tokenised once a visit)

    def stage(crops: Iterable[dict]) -> Iterator[dict]:
        # an unreadable track's other crops are not decoded again, but each is counted (and listed) as a skip,
        # so that a stream of nothing but bad tracks starves on count instead of spinning silently
        bad_tracks: dict[str, str] = {}
        for c in crops:
            if c["key"] in bad_tracks:
                counter.skip(c["where"], "unusable crop", f"its track failed before: {bad_tracks[c['key']]}")
                continue
            info = c["info"]
            try:
                example = fmt.example(c, c["rng"] if train else None)
                fields = {f.name: f.value(info) for f in labels.fields}
            except SkipTrack as err:
                bad_tracks[c["key"]] = " ".join(str(err).split())[:200]
                counter.track_failed(c["where"])
                counter.skip(c["where"], "unusable crop", err)
                continue
            example |= {
                **label_ids(info, labels.vocab, labels.max_genres),
                "offset": c["offset"],
                "total_length": c["samples"],
                "key": f"{c['key']}/{c['crop_index']}",
                **fields,
            }
            if lyrics is not None:
                example |= lyrics(c["key"], info.get("lyrics", ""), c["samples"], c["offset"], fmt.sample_length)
            example["skipped"] = counter.count
            counter.example()
            yield example

    return stage


def build_pipeline(
    urls: list[str],
    fmt: ShardFormat,
    labels: LabelSpec,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    shuffle_buffer: int = 0,
    open_tracks: int = 16,
    val_crops_per_track: int = 1,
    rank: int = 0,
    world: int = 1,
    start_epoch: int = 0,
    skips: SkipPolicy | None = None,
) -> wds.DataPipeline:
    """Training: an endless stream of mixed, shuffled batches from resampled shards (reproducible for a seed, yet
    different on every rank, worker and pass; each iteration of the pipeline is one pass, numbered from
    `start_epoch`, and a fixed function of that number). Validation: each track exactly once over all ranks and
    workers, at fixed crops, in a fixed order. Unusable samples are skipped and reported as `skips` says."""
    ledger = (skips or SkipPolicy()).ledger(train)
    handler = _tar_handler(ledger)
    if train:
        return wds.DataPipeline(
            ResampledShards(urls, seed, ledger, start_epoch),
            wds.tarfile_to_samples(handler=handler),
            parse_stage(fmt, ledger),
            plan_stage(fmt, labels, train=True, ledger=ledger, seed=seed, start_epoch=start_epoch),
            mix_tracks(open_tracks, seed, start_epoch),
            example_stage(fmt, labels, ledger, train=True),
            *([shuffle_crops(shuffle_buffer, seed, start_epoch)] if shuffle_buffer > 1 else []),
            wds.batched(batch_size, collation_fn=collate, partial=False),
        )
    source = ValidationShards(urls, rank, world)
    return wds.DataPipeline(
        source,
        wds.tarfile_to_samples(handler=handler),
        every_nth(source),
        parse_stage(fmt, ledger),
        plan_stage(fmt, labels, train=False, ledger=ledger, n_val=val_crops_per_track),
        in_order,
        example_stage(fmt, labels, ledger, train=False),
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
