"""`AudioDataModule`: the LightningDataModule every stage trains on (VQ-VAE levels and priors alike)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
import webdataset as wds
from omegaconf import DictConfig, OmegaConf

from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.schema import DataConfig
from jukebox_pl.data.pipeline import CropSpec, train_pipeline, val_pipeline
from jukebox_pl.data.prep import MANIFEST_FILE, VOCAB_FILE
from jukebox_pl.data.vocab import LabelVocab, UnknownLabelError


def data_config(cfg: DataConfig | DictConfig | dict | None = None, **overrides: Any) -> DictConfig:
    """A validated data config; unknown keys or wrong types raise ConfigError naming `data.<key>`."""
    from omegaconf.errors import OmegaConfBaseException

    merged = OmegaConf.structured(DataConfig)
    try:
        if cfg is not None:
            merged = OmegaConf.merge(merged, cfg)
        if overrides:
            merged = OmegaConf.merge(merged, overrides)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", "?")
        raise ConfigError(f"data.{key}: {str(getattr(err, 'msg', err)).splitlines()[0]}") from None
    return merged


def expand_urls(spec: str) -> list[str]:
    """Brace patterns and '::'-separated lists, as WebDataset writes them (local paths or `pipe:` URLs)."""
    return list(wds.shardlists.expand_urls(spec))


class AudioDataModule(pl.LightningDataModule):
    """Labelled audio crops from `jukebox-pl prep` shards, for one machine or many.

    Training reads resampled shards through a shuffle buffer, `epoch_length / world_size` crops per rank, so
    every rank takes the same number of steps whatever the shard counts. Validation reads every validation
    track exactly once across ranks and workers. `sample_length` may be given here when a stage derives it
    (a prior's n_ctx * hop); otherwise `data.sample_length` is used.
    """

    def __init__(self, cfg: DataConfig | DictConfig | dict | None = None, **overrides: Any):
        super().__init__()
        self.cfg = data_config(cfg, **overrides)
        self.save_hyperparameters({"data": OmegaConf.to_container(self.cfg, resolve=True)})
        self.rank, self.world = 0, 1
        self.vocab: LabelVocab | None = None
        self.manifest: dict | None = None
        self.train_urls: list[str] = []
        self.val_urls: list[str] = []

    # -- discovery ----------------------------------------------------------------------------------------
    def _distributed(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _resolve(self) -> None:
        c = self.cfg
        folder = Path(c.shards) if c.shards else None
        if folder is not None and (folder / MANIFEST_FILE).is_file():
            self.manifest = json.loads((folder / MANIFEST_FILE).read_text())
            self.train_urls = [str(folder / n) for n in self.manifest["shards"]["train"]]
            self.val_urls = [str(folder / n) for n in self.manifest["shards"]["val"]]
        elif folder is not None and not (c.train_urls or c.val_urls):
            raise FileNotFoundError(
                f"data.shards={c.shards!r} has no {MANIFEST_FILE}; run `jukebox-pl prep --src MUSIC --out "
                f"{c.shards}` first, or give data.train_urls / data.val_urls"
            )
        if c.train_urls:
            self.train_urls = expand_urls(c.train_urls)
        if c.val_urls:
            self.val_urls = expand_urls(c.val_urls)
        if not self.train_urls and not self.val_urls:
            raise ConfigError("no shards: set data.shards to a `jukebox-pl prep` folder or data.train_urls")
        vocab_path = c.vocab or (str(folder / VOCAB_FILE) if folder and (folder / VOCAB_FILE).is_file() else None)
        self.vocab = LabelVocab.load(vocab_path) if vocab_path else LabelVocab()
        self._check_labels()

    def _check_labels(self) -> None:
        """Fail before training when the shards name artists/genres the (e.g. pretrained) vocab lacks."""
        if not self.manifest or not self.cfg.vocab:
            return
        artists = {t["artist"] for t in self.manifest["tracks"]}
        genres = {g for t in self.manifest["tracks"] for g in t["genres"]}
        missing = [a for a in sorted(artists) if self.vocab.artist_id(a, strict=False) == 0 and a != "unknown"]
        missing_g = [g for g in sorted(genres) if self.vocab.genre_id(g, strict=False) == 0 and g != "unknown"]
        if missing or missing_g:
            raise UnknownLabelError(
                f"the shards in {self.cfg.shards} name labels missing from data.vocab={self.cfg.vocab}: "
                f"artists {missing}, genres {missing_g}. Re-run `jukebox-pl prep --base-vocab {self.cfg.vocab}` "
                f"so they get new ids after the existing ones (known artists: {sorted(self.vocab.artists)[:20]})"
            )

    def setup(self, stage: str | None = None) -> None:
        self.rank, self.world = self._distributed()
        if self.vocab is None:
            self._resolve()
        if stage in (None, "fit", "validate") and self.manifest and self.val_urls:
            n_val = self.manifest["counts"]["tracks"]["val"]
            if n_val < self.world:
                raise ValueError(
                    f"the validation split has {n_val} track(s) but the run has {self.world} ranks; every rank "
                    "needs at least one (prep with a larger --val-fraction, or disable validation)"
                )

    # -- loaders ------------------------------------------------------------------------------------------
    @property
    def crop_spec(self) -> CropSpec:
        c = self.cfg
        return CropSpec(
            sample_length=c.sample_length,
            sample_rate=c.sample_rate,
            channels=c.channels,
            aug_shift=c.aug_shift,
            aug_blend=c.aug_blend,
            n_lyric_tokens=c.n_lyric_tokens,
            lyrics_vocab=c.lyrics_vocab,
            max_genres=c.max_genres,
            min_track_samples=int(c.min_track_seconds * c.sample_rate),
        )

    def _check_sample_rate(self) -> None:
        if self.manifest and self.manifest["sample_rate"] != self.cfg.sample_rate:
            raise ConfigError(
                f"data.sample_rate={self.cfg.sample_rate} but the shards in {self.cfg.shards} are "
                f"{self.manifest['sample_rate']} Hz; prep them again with --sr {self.cfg.sample_rate}"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Training batches each rank yields per epoch (the same on every rank, so DDP never waits)."""
        return max(1, math.ceil(self.cfg.epoch_length / (self.world * self.cfg.batch_size)))

    def _loader(self, pipeline: wds.DataPipeline) -> wds.WebLoader:
        n = self.cfg.num_workers
        return wds.WebLoader(pipeline, batch_size=None, num_workers=n, persistent_workers=n > 0, pin_memory=False)

    def train_dataloader(self) -> wds.WebLoader:
        if self.vocab is None:
            self.setup("fit")
        if not self.train_urls:
            raise ValueError(f"no training shards in {self.cfg.shards or self.cfg.train_urls}")
        self._check_sample_rate()
        pipe = self._train_pipeline(self.cfg.seed + 7919 * self.rank)
        n = self.batches_per_epoch
        with warnings.catch_warnings():  # webdataset warns that with_length is only a hint; here it is exact
            warnings.simplefilter("ignore", UserWarning)
            return self._loader(pipe).with_epoch(n).with_length(n)

    def val_dataloader(self) -> wds.WebLoader | list:
        if self.vocab is None:
            self.setup("validate")
        if not self.val_urls:
            return []
        self._check_sample_rate()
        return self._loader(self._val_pipeline())

    # -- what is read (subclasses read other shards through the same loaders) -----------------------------
    def _train_pipeline(self, seed: int) -> wds.DataPipeline:
        c = self.cfg
        return train_pipeline(self.train_urls, self.crop_spec, self.vocab, c.batch_size, c.shuffle_buffer, seed)

    def _val_pipeline(self) -> wds.DataPipeline:
        c = self.cfg
        batch = c.val_batch_size or c.batch_size
        spec = self.crop_spec
        return val_pipeline(self.val_urls, spec, self.vocab, batch, c.val_crops_per_track, self.rank, self.world)
