"""`AudioDataModule`: labelled audio crops from `prep` shards, the LightningDataModule VQ-VAE levels and priors
train on. The logic lives in `AudioData` (no Lightning base), so the same class can be bound to the unified
`lightning` package as well (`jukebox_pl.unified_lightning`)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
import webdataset as wds
from lightning_utilities.core.rank_zero import rank_zero_info

from jukebox_pl.config.loader import ConfigError, runs_or_fetches, url_schemes
from jukebox_pl.config.schema import DataConfig
from jukebox_pl.config.sections import data_config
from jukebox_pl.config.typed import plain
from jukebox_pl.data.audio_crops import AudioCrops
from jukebox_pl.data.epochs import EpochLoader, ResumePoint
from jukebox_pl.data.pipeline import LabelSpec, ShardFormat, SkipPolicy, TrackField, build_pipeline
from jukebox_pl.data.prep import MANIFEST_FILE, VOCAB_FILE
from jukebox_pl.data.vocab import LabelVocab, UnknownLabelError
from jukebox_pl.errors import MissingInputError, UnsafeFileError, UserValueError
from jukebox_pl.training.lightning_binding import check_same_package
from jukebox_pl.training.process_group import destroy_at_exit


def expand_urls(spec: str) -> list[str]:
    """Brace patterns and '::'-separated lists, as WebDataset writes them (local paths or `pipe:` URLs)."""
    return list(wds.shardlists.expand_urls(spec))


@dataclass
class Crops:
    """What one stage cuts from the shards (these differ per stage, so they live under the stage's config, not
    under `data`): crop length, channels, batch size, lyric characters, and extra per-track fields."""

    sample_length: int = 32768
    batch_size: int = 4
    channels: int = 1
    n_lyric_tokens: int = 0
    lyrics_vocab: str = "v2"
    val_batch_size: int | None = None
    seed: int = 0
    fields: tuple[TrackField, ...] = ()

    def __post_init__(self) -> None:
        for name in ("sample_length", "batch_size", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_lyric_tokens < 0:
            raise ConfigError(f"n_lyric_tokens must be >= 0, got {self.n_lyric_tokens!r}")
        self.fields = tuple(f if isinstance(f, TrackField) else TrackField(**f) for f in self.fields)


class AudioData:
    """Labelled audio crops from `jukebox-pl prep` shards, for one machine or many.

    `cfg` is the `data` section (shards, sample rate, workers, shuffling, epoch length, augmentation, labels);
    further keyword arguments may set any of its keys. The stage's crop settings (`Crops`: sample_length,
    batch_size, channels, n_lyric_tokens, lyrics_vocab, val_batch_size, seed, fields) are named arguments, so
    Lightning's `LightningCLI` sees and checks them too (`jukebox_pl.lightning_cli`). Training reads
    resampled shards, draws crops from many open tracks at once, `epoch_length / world_size` crops per rank,
    so every rank takes the same number of steps whatever the shard counts; a resumed fit reads exactly the
    batches the uninterrupted one would have (the position is saved in the checkpoint: `state_dict`).
    Validation reads every validation track exactly once across ranks and workers. Unusable samples are
    skipped, summarised in the log and listed in `skip_log` (a file, when given); a training stream that
    yields nothing usable stops with `DataStarvedError`.

    A batch of N crops is a dict: `audio` (N, channels, sample_length) float32 in [-1, 1] at `data.sample_rate`
    (a track shorter than the crop is zero-padded), `length` (N,) int64 valid samples, `offset` and `total_length`
    (N,) int64 where the crop starts in its track and the track's length, in samples; `artist` (N,) and `genres`
    (N, max_genres) int64 label ids (-1 pads genres; `LabelVocab`); with `n_lyric_tokens` > 0 `lyrics`
    (N, n_lyric_tokens) int64 character ids (`LyricsTokenizer`) and `lyric_start` (N,); one entry per extra
    `fields` item; `key` the N crop keys (`track/crop`) and `skipped` the running count of unusable samples.

    Shards are local files. A URL that runs a program or fetches from the network (`pipe:`, `https:`, `gs:`,
    ...: WebDataset hands it to a shell, curl or gsutil) is opened only when its spec is in `allow_urls`, the specs
    the user typed on this invocation's command line (`jukebox_pl.config.loader.command_line_urls(cfg)`), so a
    config or manifest read from a file never chooses a command to run.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | DataConfig | None = None,  # a dict, DictConfig or DataConfig
        skip_log: str | Path | None = None,
        allow_urls: tuple[str, ...] | frozenset[str] = (),
        *,
        sample_length: int = 32768,
        batch_size: int = 4,
        channels: int = 1,
        n_lyric_tokens: int = 0,
        lyrics_vocab: str = "v2",
        val_batch_size: int | None = None,
        seed: int = 0,
        fields: tuple[TrackField, ...] = (),
        **overrides: Any,
    ):
        super().__init__()
        self.skip_log = str(skip_log) if skip_log else None
        self.allow_urls = frozenset(str(u) for u in allow_urls)
        self._permitted: set[str] = set()  # the URLs of the allowed specs that run or fetch
        self.resume_point = ResumePoint()
        self.cfg = data_config(cfg, **overrides)
        self.crops = Crops(
            sample_length=sample_length, batch_size=batch_size, channels=channels, n_lyric_tokens=n_lyric_tokens,
            lyrics_vocab=lyrics_vocab, val_batch_size=val_batch_size, seed=seed, fields=tuple(fields),
        )  # fmt: skip
        self.save_hyperparameters({"data": plain(self.cfg), "crops": _plain(self.crops)})
        self.rank, self.world = 0, 1
        self.val_everywhere = False
        self.vocab: LabelVocab | None = None
        self._given_vocab: tuple[LabelVocab, str, bool] | None = None  # `use_vocab`
        self.unknown_labels: dict[str, list[str]] = {"artists": [], "genres": []}
        self.manifest: dict | None = None
        self.train_urls: list[str] = []
        self.val_urls: list[str] = []

    @property
    def batch_size(self) -> int:
        return self.crops.batch_size

    @property
    def trainer(self):
        return self.__dict__.get("_bound_trainer")

    @trainer.setter
    def trainer(self, trainer) -> None:
        """Set by the Trainer before it calls anything else: a Trainer of the other Lightning package is refused
        here in one line naming the class to import (Lightning itself fails later with "Expected a parent")."""
        if trainer is not None:
            check_same_package(self, trainer)
        self.__dict__["_bound_trainer"] = trainer

    # -- discovery ----------------------------------------------------------------------------------------
    def _distributed(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _read_manifest(self) -> dict | None:
        folder = Path(self.cfg.shards) if self.cfg.shards else None
        if folder is not None and (folder / MANIFEST_FILE).is_file():
            return json.loads((folder / MANIFEST_FILE).read_text())
        if folder is not None and not (self.cfg.train_urls or self.cfg.val_urls):
            raise MissingInputError(
                f"data.shards={self.cfg.shards!r} has no {MANIFEST_FILE}; run `jukebox-pl prep --src MUSIC --out "
                f"{self.cfg.shards}` first, or give data.train_urls / data.val_urls"
            )
        return None

    def _resolve(self) -> None:
        c = self.cfg
        folder = Path(c.shards) if c.shards else None
        self.manifest = self._read_manifest()
        if self.manifest is not None:
            self.train_urls = [str(folder / n) for n in self.manifest["shards"]["train"]]
            self.val_urls = [str(folder / n) for n in self.manifest["shards"]["val"]]
            self._refuse_running(self.train_urls + self.val_urls, f"the manifest {folder / MANIFEST_FILE}")
        for key, spec in (("data.train_urls", c.train_urls), ("data.val_urls", c.val_urls)):
            if not spec:
                continue
            if spec in self.allow_urls:
                self._permitted.update(url_schemes(spec))
            urls = expand_urls(spec)
            self._refuse_running(urls, f"{key}={spec!r}")
            setattr(self, key.split(".")[1], urls)
        if not self.train_urls and not self.val_urls:
            raise ConfigError("no shards: set data.shards to a `jukebox-pl prep` folder or data.train_urls")
        if self._given_vocab is not None:
            self.vocab = self._given_vocab[0]
        else:
            vocab_path = c.vocab or (str(folder / VOCAB_FILE) if folder and (folder / VOCAB_FILE).is_file() else None)
            self.vocab = LabelVocab.load(vocab_path) if vocab_path else LabelVocab()
        self._check_labels()

    def use_vocab(self, vocab: LabelVocab, source: str, unknown_as_unknown: bool = False) -> None:
        """Label the shards with `vocab` (e.g. a trained prior's, from its checkpoint) instead of `data.vocab`;
        `source` names it in messages. With `unknown_as_unknown`, names it lacks read as the unknown label (id
        0, as a model that never saw them would take them) and are listed in `unknown_labels`; otherwise they
        are refused. Call before `setup`."""
        self._given_vocab = (vocab, source, unknown_as_unknown)
        self.vocab = None

    def _refuse_running(self, urls: list[str], source: str) -> None:
        """UnsafeFileError for a URL that would run a program or fetch (`pipe:`, `https:`, ...) unless its spec was
        typed on this command line (`allow_urls`): checked when the URLs are resolved and again right before
        any loader opens them."""
        running = [u for u in urls if runs_or_fetches(u) and u not in self._permitted]
        if running:
            raise UnsafeFileError(
                f"shard URL {running[0]!r} (from {source}) is refused: a URL that runs a program or fetches from the "
                "network is opened only when typed on this command line (data.train_urls=... / data.val_urls=...); "
                "otherwise use local shard paths"
            )

    def _check_labels(self) -> None:
        """Fail before training when the shards name artists/genres the (e.g. pretrained) vocab lacks, or, for a
        vocab given with `unknown_as_unknown`, list them in `unknown_labels`."""
        given = self._given_vocab
        if not self.manifest or not (self.cfg.vocab or given):
            return
        artists = {t["artist"] for t in self.manifest["tracks"]}
        genres = {g for t in self.manifest["tracks"] for g in t["genres"]}
        missing = [a for a in sorted(artists) if self.vocab.artist_id(a, strict=False) == 0 and a != "unknown"]
        missing_g = [g for g in sorted(genres) if 0 in self.vocab.genre_ids(g, strict=False) and g != "unknown"]
        self.unknown_labels = {"artists": missing, "genres": missing_g}
        if not (missing or missing_g) or (given and given[2]):
            return
        source = given[1] if given else f"data.vocab={self.cfg.vocab}"
        fix = (
            f"re-run `jukebox-pl prep --base-vocab {self.cfg.vocab}` so they get new ids after the existing ones"
            if not given
            else "fine-tune the model on them (`jukebox-pl finetune`) to give them rows"
        )
        raise UnknownLabelError(
            f"the shards in {self.cfg.shards} name labels missing from {source}: artists {missing}, genres "
            f"{missing_g}; {fix} (known artists: {sorted(self.vocab.artists)[:20]})"
        )

    def setup(self, stage: str | None = None) -> None:
        self.rank, self.world = self._distributed()
        if dist.is_available() and dist.is_initialized():
            destroy_at_exit()
        if self.vocab is None:
            self._resolve()
        if stage in (None, "fit", "validate") and self.manifest and self.val_urls:
            n_val = self.manifest["counts"]["tracks"]["val"]
            self.val_everywhere = 0 < n_val < self.world
            if self.val_everywhere:
                rank_zero_info(
                    f"the validation split has {n_val} track(s) for {self.world} ranks: every rank validates all of "
                    "them (a rank without a track would leave the others waiting for its figures)"
                )

    @property
    def val_split(self) -> tuple[int, int]:
        """(rank, world) for splitting the validation tracks: each rank its share, or, when there are fewer
        tracks than ranks, every rank all of them (so the reduced figures are exactly one process's)."""
        return (0, 1) if self.val_everywhere else (self.rank, self.world)

    # -- what is read (CodeData reads other shards through the same loaders) ------------------------------
    @property
    def shard_format(self) -> ShardFormat:
        c = self.crops
        return AudioCrops(c.sample_length, self.cfg.sample_rate, c.channels, self.cfg.aug_shift, self.cfg.aug_blend)

    @property
    def shard_sample_rate(self) -> int | None:
        return self.manifest["sample_rate"] if self.manifest else None

    @property
    def label_spec(self) -> LabelSpec:
        c, rate = self.cfg, self.shard_format.sample_rate
        return LabelSpec(
            vocab=self.vocab,
            max_genres=c.max_genres,
            n_lyric_tokens=self.crops.n_lyric_tokens,
            lyrics_vocab=self.crops.lyrics_vocab,
            fields=self.crops.fields,
            min_track_samples=int(c.min_track_seconds * rate),
        )

    def _check_sample_rate(self) -> None:
        have = self.shard_sample_rate
        if have is not None and have != self.cfg.sample_rate:
            raise ConfigError(
                f"data.sample_rate={self.cfg.sample_rate} but the shards in {self.cfg.shards} are {have} Hz; "
                f"prep them again with --sr {self.cfg.sample_rate} (or set data.sample_rate={have})"
            )

    # -- loaders ------------------------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        """Training batches each rank yields per epoch (the same on every rank, so DDP never waits)."""
        return max(1, math.ceil(self.cfg.epoch_length / (self.world * self.crops.batch_size)))

    @property
    def skip_policy(self) -> SkipPolicy:
        c = self.cfg
        return SkipPolicy(self.skip_log, c.skip_report_seconds, c.max_skips_in_a_row, c.starve_seconds)

    def _loader(self, pipeline: wds.DataPipeline) -> wds.WebLoader:
        """Persistent workers: each keeps its pass counter, so every epoch is a new, numbered pass."""
        n = self.cfg.num_workers
        return wds.WebLoader(pipeline, batch_size=None, num_workers=n, persistent_workers=n > 0, pin_memory=False)

    def train_dataloader(self) -> EpochLoader:
        if self.vocab is None:
            self.setup("fit")
        if not self.train_urls:
            raise UserValueError(f"no training shards in {self.cfg.shards or self.cfg.train_urls}")
        self._refuse_running(self.train_urls, "the training shard list")
        self._check_sample_rate()
        c = self.cfg

        def loader(start_epoch: int) -> wds.WebLoader:
            return self._loader(build_pipeline(
                self.train_urls, self.shard_format, self.label_spec, self.crops.batch_size, train=True,
                seed=self.crops.seed + 7919 * self.rank, shuffle_buffer=c.shuffle_buffer, open_tracks=c.open_tracks,
                start_epoch=start_epoch, skips=self.skip_policy,
            ))  # fmt: skip

        resume, self.resume_point = self.resume_point, ResumePoint()  # used once: a later fit starts afresh
        return EpochLoader(loader, self.batches_per_epoch, resume)

    # -- resuming ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The training stream's position (saved in every checkpoint by Lightning): the epoch in progress and
        the batches of it already trained on."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        # from the run's total count of batches trained on: Lightning marks an epoch completed when max_steps
        # stops it midway, so its epoch counter would resume a finished run at the start of the next epoch
        total = trainer.fit_loop.epoch_loop.batch_progress.total.processed
        epoch, batches = divmod(int(total), self.batches_per_epoch)
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state_dict: dict) -> None:
        if "epoch" in state_dict:
            self.resume_point = ResumePoint(int(state_dict["epoch"]), int(state_dict.get("batches", 0)))

    def val_dataloader(self) -> wds.WebLoader | list:
        if self.vocab is None:
            self.setup("validate")
        if not self.val_urls:
            return []
        self._refuse_running(self.val_urls, "the validation shard list")
        self._check_sample_rate()
        pipe = build_pipeline(
            self.val_urls, self.shard_format, self.label_spec, self.crops.val_batch_size or self.crops.batch_size,
            train=False, val_crops_per_track=self.cfg.val_crops_per_track, rank=self.val_split[0],
            world=self.val_split[1], skips=self.skip_policy,
        )  # fmt: skip
        return self._loader(pipe)


def _plain(crops: Crops) -> dict:
    out = dataclasses.asdict(crops)
    out["fields"] = [dataclasses.asdict(f) for f in crops.fields]
    return out


class AudioDataModule(AudioData, pl.LightningDataModule):
    """`AudioData` as a `pytorch_lightning.LightningDataModule` (see `AudioData` for the arguments and the batch
    keys: `audio` (N, channels, sample_length) float32 in [-1, 1] at `data.sample_rate`, labels, lyrics)."""
