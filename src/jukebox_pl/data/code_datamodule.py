"""`CodeDataModule`: prior training batches cut from pre-encoded code shards (`jukebox-pl encode-shards`).

The same streaming design as `AudioDataModule` (resampled shards for training, `epoch_length / world_size`
crops per rank; validation reads each track once across ranks and workers), but crops are windows of codes,
so no audio is decoded and no VQ-VAE runs. Crop starts are multiples of the upper level's hop (of the prior's
own hop for a top prior), so an upsampler's conditioning codes line up exactly with its targets.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from omegaconf import OmegaConf

from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.schema import DataConfig
from jukebox_pl.data.code_shards import CODES_KIND, codes_ext
from jukebox_pl.data.datamodule import AudioDataModule, expand_urls
from jukebox_pl.data.pipeline import (
    LyricWindows,
    SkipCounter,
    ValidationShards,
    _tar_handler,
    collate,
    every_nth,
    label_ids,
    shuffle_crops,
    train_offsets,
    val_offsets,
    worker_info,
)
from jukebox_pl.data.prep import MANIFEST_FILE, VOCAB_FILE
from jukebox_pl.data.vocab import LabelVocab


@dataclass
class CodeCropSpec:
    """What the stages need to cut code windows (picklable, sent to DataLoader workers)."""

    level: int
    n_ctx: int
    hop: int
    sample_rate: int
    upper_level: int | None = None
    upper_hop: int | None = None
    aug_shift: bool = True
    n_lyric_tokens: int = 0
    lyrics_vocab: str = "v2"
    max_genres: int = 5
    min_track_samples: int = 0

    @property
    def sample_length(self) -> int:
        return self.n_ctx * self.hop

    @property
    def align(self) -> int:
        """Crop starts are multiples of this many samples, so every level's codes start on a token boundary."""
        return self.upper_hop or self.hop

    @property
    def n_upper(self) -> int:
        return self.sample_length // self.upper_hop if self.upper_hop else 0


def _load_codes(data: bytes, where: str, ext: str) -> np.ndarray:
    codes = np.load(io.BytesIO(data), allow_pickle=False)
    if codes.ndim != 1 or codes.dtype.kind not in "iu":
        raise ValueError(f"{where}.{ext} holds {codes.dtype} {codes.shape}, not 1-D integer codes")
    return codes


def parse_code_tracks(spec: CodeCropSpec, counter: SkipCounter):
    """Tar members -> track dicts with info and the needed levels' codes; malformed tracks are skipped and counted."""
    wanted = [(spec.level, spec.hop)] + ([(spec.upper_level, spec.upper_hop)] if spec.upper_hop else [])

    def stage(samples: Iterable[dict]) -> Iterator[dict]:
        for s in samples:
            where = f"{s.get('__url__', '?')}:{s.get('__key__', '?')}"
            try:
                info = json.loads(s["json"])
                total = int(info["samples"])
                codes = {}
                for level, hop in wanted:
                    codes[level] = _load_codes(s[codes_ext(level)], where, codes_ext(level))
                    if len(codes[level]) != math.ceil(total / hop):
                        raise ValueError(f"{len(codes[level])} level-{level} codes for {total} samples at hop {hop}")
            except (KeyError, TypeError, ValueError, OSError, EOFError) as err:
                counter.skip(where, f"missing or malformed codes/json ({type(err).__name__}: {err})")
                continue
            upper = codes.get(spec.upper_level) if spec.upper_hop else None
            yield {"key": s["__key__"], "where": where, "info": info, "samples": total, "codes": codes[spec.level],
                   "upper": upper}  # fmt: skip

    return stage


def code_offsets(total: int, spec: CodeCropSpec, rng: random.Random, train: bool, n_val: int) -> list[int]:
    """Crop starts in samples, on the `align` grid: the audio pipeline's offsets computed in units of `align`."""
    units, length = total // spec.align, spec.sample_length // spec.align
    offsets = train_offsets(units, length, rng, spec.aug_shift) if train else val_offsets(units, length, n_val)
    return [o * spec.align for o in offsets]


def cut_code_crops(spec: CodeCropSpec, counter: SkipCounter, train: bool, val_crops_per_track: int = 1, seed: int = 0):
    """Tracks -> crop starts (random each pass for training, fixed and evenly spaced for validation)."""
    epochs = itertools.count()  # lives in the worker (persistent workers), so each pass draws new crops

    def stage(tracks: Iterable[dict]) -> Iterator[dict]:
        worker, _ = worker_info()
        rng = random.Random(wds.utils.make_seed(seed, worker, next(epochs)) if train else seed)
        for t in tracks:
            if t["samples"] < spec.min_track_samples:
                continue
            sr = int(t["info"].get("sample_rate", spec.sample_rate))
            if sr != spec.sample_rate:
                counter.skip(t["where"], f"track is {sr} Hz but the code shards are {spec.sample_rate} Hz")
                continue
            for index, offset in enumerate(code_offsets(t["samples"], spec, rng, train, val_crops_per_track)):
                yield {**t, "offset": offset, "crop_index": index}

    return stage


def _window(codes: np.ndarray, start: int, n: int) -> np.ndarray:
    """codes[start:start+n] as int64, zero-padded at the end to n."""
    out = np.zeros(n, dtype=np.int64)
    piece = codes[start : start + n]
    out[: len(piece)] = piece
    return out


def make_code_examples(spec: CodeCropSpec, vocab: LabelVocab, counter: SkipCounter):
    """Crops -> prior-ready examples: code windows, label ids, timing in samples, and the lyric window."""
    lyrics = LyricWindows(spec.n_lyric_tokens, spec.lyrics_vocab) if spec.n_lyric_tokens > 0 else None

    def stage(crops: Iterable[dict]) -> Iterator[dict]:
        for c in crops:
            offset, info = c["offset"], c["info"]
            example = {
                "codes": _window(c["codes"], offset // spec.hop, spec.n_ctx),
                **label_ids(info, vocab, spec.max_genres),
                "offset": offset,
                "total_length": c["samples"],
                "length": max(0, min(spec.sample_length, c["samples"] - offset)),
                "key": f"{c['key']}/{c['crop_index']}",
            }
            if spec.upper_hop:
                example["upper_codes"] = _window(c["upper"], offset // spec.upper_hop, spec.n_upper)
            if lyrics is not None:
                example |= lyrics(c["key"], info.get("lyrics", ""), c["samples"], offset, spec.sample_length)
            example["skipped"] = counter.count
            yield example

    return stage


def code_train_pipeline(
    urls: list[str], spec: CodeCropSpec, vocab: LabelVocab, batch_size: int, shuffle_buffer: int, seed: int
) -> wds.DataPipeline:
    """Endless shuffled training batches from resampled shards (reproducible per seed, different per rank/worker)."""
    counter = SkipCounter()
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(handler=_tar_handler(counter)),
        parse_code_tracks(spec, counter),
        cut_code_crops(spec, counter, train=True, seed=seed),
        shuffle_crops(shuffle_buffer, seed),
        make_code_examples(spec, vocab, counter),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )


def code_val_pipeline(
    urls: list[str], spec: CodeCropSpec, vocab: LabelVocab, batch_size: int, crops_per_track: int, rank: int, world: int
) -> wds.DataPipeline:
    """Each validation track exactly once over all ranks and workers, at fixed crops."""
    counter = SkipCounter()
    source = ValidationShards(urls, rank, world)
    return wds.DataPipeline(
        source,
        wds.tarfile_to_samples(handler=_tar_handler(counter)),
        every_nth(source),
        parse_code_tracks(spec, counter),
        cut_code_crops(spec, counter, train=False, val_crops_per_track=crops_per_track),
        make_code_examples(spec, vocab, counter),
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )


class CodeDataModule(AudioDataModule):
    """Windows of `n_ctx` codes of one level (plus the aligned codes of the level above) with labels.

    `level` / `upper_level` are level indices (or names such as "top"); `upper_level` is None for a top prior.
    Uses `data.shards` (a code-shard folder), batch size, workers, shuffle buffer, epoch length, seed,
    validation crops, lyrics and genre settings from the same `DataConfig` as `AudioDataModule`;
    `data.sample_length`, `channels` and `aug_blend` do not apply (the crop is `n_ctx * hop` samples).
    """

    def __init__(
        self,
        cfg: DataConfig | dict | None = None,
        *,
        level: int | str,
        n_ctx: int,
        upper_level: int | str | None = None,
        batch_size: int | None = None,
        **overrides: Any,
    ):
        if batch_size is not None:
            overrides["batch_size"] = batch_size
        super().__init__(cfg, **overrides)
        if int(n_ctx) <= 0:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        self.n_ctx, self._level_arg, self._upper_arg = int(n_ctx), level, upper_level
        self.save_hyperparameters(
            {"data": OmegaConf.to_container(self.cfg, resolve=True), "level": level, "n_ctx": n_ctx,
             "upper_level": upper_level}
        )  # fmt: skip
        self.level: int | None = None
        self.upper_level: int | None = None

    # -- discovery (rank detection and the vocab check are AudioDataModule's) ------------------------------
    def _read_manifest(self) -> dict:
        c = self.cfg
        if not c.shards:
            raise ConfigError("data.shards must name a code-shard folder written by `jukebox-pl encode-shards`")
        path = Path(c.shards) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"data.shards={c.shards!r} has no {MANIFEST_FILE}; write code shards with `jukebox-pl encode-shards "
                f"--shards AUDIO_SHARDS --out {c.shards} --run RUN` first"
            )
        manifest = json.loads(path.read_text())
        if manifest.get("kind") != CODES_KIND:
            raise ValueError(
                f"{path} describes {manifest.get('kind', 'audio')} shards, not code shards; encode them with "
                f"`jukebox-pl encode-shards --shards {c.shards} --out CODES --run RUN` and set data.shards=CODES"
            )
        return manifest

    def _level_in_shards(self, spec: int | str, what: str) -> int:
        """A level index present in the shards, from an index or a name; the error lists what is there."""
        names = self.manifest.get("level_names", {})
        by_name = {n: int(i) for i, n in names.items()}
        idx = by_name.get(spec) if isinstance(spec, str) and not spec.isdigit() else int(spec)
        if idx is None or str(idx) not in self.manifest["levels"]:
            have = ", ".join(f"{i} ({names.get(i, '?')})" for i in self.manifest["levels"])
            raise ValueError(
                f"{what} {spec!r} is not in the code shards in {self.cfg.shards}; they hold levels {have} "
                "(encode it with `jukebox-pl encode-shards --levels ...`)"
            )
        return idx

    def _resolve(self) -> None:
        c = self.cfg
        self.manifest = self._read_manifest()
        self.level = self._level_in_shards(self._level_arg, "level")
        if self._upper_arg is not None:
            self.upper_level = self._level_in_shards(self._upper_arg, "upper_level")
            self._check_hops()
        folder = Path(c.shards)
        self.train_urls = (
            expand_urls(c.train_urls) if c.train_urls else [str(folder / n) for n in self.manifest["shards"]["train"]]
        )
        self.val_urls = (
            expand_urls(c.val_urls) if c.val_urls else [str(folder / n) for n in self.manifest["shards"]["val"]]
        )
        vocab_path = c.vocab or (str(folder / VOCAB_FILE) if (folder / VOCAB_FILE).is_file() else None)
        self.vocab = LabelVocab.load(vocab_path) if vocab_path else LabelVocab()
        self._check_labels()

    def _check_hops(self) -> None:
        """The upper level's codes must cover the crop in whole tokens, or they could not line up."""
        hop, upper = self.hop_length, self.upper_hop_length
        if upper <= hop or upper % hop or (self.n_ctx * hop) % upper:
            raise ValueError(
                f"upper_level {self.upper_level} (hop {upper}) cannot condition level {self.level} (hop {hop}) with "
                f"n_ctx={self.n_ctx}: the upper hop must be a larger multiple of the level's hop and divide "
                f"n_ctx * hop = {self.n_ctx * hop}"
            )

    def _ensure(self) -> None:
        if self.manifest is None:
            self._resolve()

    # -- what a prior needs to know -----------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        self._ensure()
        return int(self.manifest["levels"][str(self.level)])

    @property
    def upper_hop_length(self) -> int | None:
        self._ensure()
        return None if self.upper_level is None else int(self.manifest["levels"][str(self.upper_level)])

    @property
    def sample_length(self) -> int:
        """Samples one crop spans (n_ctx * hop), the reference's sample_length for timing labels and lyrics."""
        return self.n_ctx * self.hop_length

    @property
    def sample_rate(self) -> int:
        self._ensure()
        return int(self.manifest["sample_rate"])

    def l_bins(self, level: int | None = None) -> int:
        """Codebook size of `level` (default: the prior's level)."""
        self._ensure()
        return int(self.manifest["l_bins"][str(self.level if level is None else level)])

    @property
    def crop_spec(self) -> CodeCropSpec:
        self._ensure()
        c = self.cfg
        return CodeCropSpec(
            level=self.level,
            n_ctx=self.n_ctx,
            hop=self.hop_length,
            sample_rate=self.sample_rate,
            upper_level=self.upper_level,
            upper_hop=self.upper_hop_length,
            aug_shift=c.aug_shift,
            n_lyric_tokens=c.n_lyric_tokens,
            lyrics_vocab=c.lyrics_vocab,
            max_genres=c.max_genres,
            min_track_samples=int(c.min_track_seconds * self.sample_rate),
        )

    def _check_sample_rate(self) -> None:
        if self.sample_rate != self.cfg.sample_rate:
            raise ConfigError(
                f"data.sample_rate={self.cfg.sample_rate} but the code shards in {self.cfg.shards} are "
                f"{self.sample_rate} Hz; set data.sample_rate={self.sample_rate}"
            )

    # -- what is read ---------------------------------------------------------------------------------------
    def _train_pipeline(self, seed: int) -> wds.DataPipeline:
        c = self.cfg
        return code_train_pipeline(self.train_urls, self.crop_spec, self.vocab, c.batch_size, c.shuffle_buffer, seed)

    def _val_pipeline(self) -> wds.DataPipeline:
        c = self.cfg
        batch = c.val_batch_size or c.batch_size
        spec = self.crop_spec
        return code_val_pipeline(self.val_urls, spec, self.vocab, batch, c.val_crops_per_track, self.rank, self.world)
