"""`CodeDataModule`: prior training batches cut from pre-encoded code shards (`jukebox-pl encode-shards`).

The same loaders, epoch length, rank checks and label handling as `AudioDataModule` (one pipeline builder,
`jukebox_pl.data.pipeline.build_pipeline`); only the shard format differs (`CodeCrops`: windows of codes, so no
audio is decoded and no VQ-VAE runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.schema import DataConfig
from jukebox_pl.config.sections import data_config
from jukebox_pl.config.typed import plain
from jukebox_pl.data.code_crops import CodeCrops
from jukebox_pl.data.code_shards import CODES_KIND
from jukebox_pl.data.datamodule import AudioData, _plain
from jukebox_pl.data.pipeline import TrackField
from jukebox_pl.data.prep import MANIFEST_FILE
from jukebox_pl.errors import MissingInputError, UserValueError


class CodeData(AudioData):
    """Windows of `n_ctx` codes of one level (plus the aligned codes of the level above) with labels.

    `level` / `upper_level` are level indices (or names such as "top"); `upper_level` is None for a top prior.
    The crop spans `n_ctx * hop` samples, so `sample_length` and `channels` are not arguments here.

    A batch holds `codes` (N, n_ctx) int64 in [0, l_bins) of this level, with `upper_level` `upper_codes`
    (N, n_ctx / upsample ratio) int64 of the level above, aligned; `length`, `offset`, `total_length` (in audio
    samples), `artist`, `genres`, `lyrics` and `key` as in `AudioData`.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | DataConfig | None = None,
        skip_log: str | Path | None = None,
        allow_urls: tuple[str, ...] | frozenset[str] = (),
        *,
        level: int | str,
        n_ctx: int,
        upper_level: int | str | None = None,
        batch_size: int = 4,
        n_lyric_tokens: int = 0,
        lyrics_vocab: str = "v2",
        val_batch_size: int | None = None,
        seed: int = 0,
        fields: tuple[TrackField, ...] = (),
        **overrides: Any,
    ):
        for name in ("sample_length", "channels"):
            if name in overrides:
                raise ConfigError(f"{name} does not apply to code shards: a crop is n_ctx codes")
        cfg = data_config(cfg, **overrides)  # not forwarded as **kwargs: LightningCLI would offer AudioData's crops
        super().__init__(
            cfg, skip_log, allow_urls, batch_size=batch_size, n_lyric_tokens=n_lyric_tokens, lyrics_vocab=lyrics_vocab,
            val_batch_size=val_batch_size, seed=seed, fields=fields,
        )  # fmt: skip
        if int(n_ctx) <= 0:
            raise ConfigError(f"n_ctx must be positive, got {n_ctx}")
        self.n_ctx, self._level_arg, self._upper_arg = int(n_ctx), level, upper_level
        self.save_hyperparameters(
            {"data": plain(self.cfg), "crops": _plain(self.crops), "level": level,
             "n_ctx": n_ctx, "upper_level": upper_level}
        )  # fmt: skip
        self.level: int | None = None
        self.upper_level: int | None = None

    # -- discovery (rank detection and the vocab check are AudioData's) -----------------------------------------
    def _read_manifest(self) -> dict:
        c = self.cfg
        if not c.shards:
            raise ConfigError("data.shards must name a code-shard folder written by `jukebox-pl encode-shards`")
        path = Path(c.shards) / MANIFEST_FILE
        if not path.is_file():
            raise MissingInputError(
                f"data.shards={c.shards!r} has no {MANIFEST_FILE}; write code shards with `jukebox-pl encode-shards "
                f"--shards AUDIO_SHARDS --out {c.shards} --run RUN` first"
            )
        manifest = json.loads(path.read_text())
        if manifest.get("kind") != CODES_KIND:
            raise UserValueError(
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
            raise UserValueError(
                f"{what} {spec!r} is not in the code shards in {self.cfg.shards}; they hold levels {have} "
                "(encode it with `jukebox-pl encode-shards --levels ...`)"
            )
        return idx

    def _resolve(self) -> None:
        super()._resolve()  # manifest (ours), shard URLs, vocab and its check
        self.level = self._level_in_shards(self._level_arg, "level")
        if self._upper_arg is not None:
            self.upper_level = self._level_in_shards(self._upper_arg, "upper_level")
            self._check_hops()

    def _check_hops(self) -> None:
        """The upper level's codes must cover the crop in whole tokens, or they could not line up."""
        hop, upper = self.hop_length, self.upper_hop_length
        if upper <= hop or upper % hop or (self.n_ctx * hop) % upper:
            raise UserValueError(
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
    def shard_format(self) -> CodeCrops:
        self._ensure()
        return CodeCrops(
            level=self.level, n_ctx=self.n_ctx, hop=self.hop_length, sample_rate=self.sample_rate,
            upper_level=self.upper_level, upper_hop=self.upper_hop_length, aug_shift=self.cfg.aug_shift,
        )  # fmt: skip

    @property
    def shard_sample_rate(self) -> int:
        return self.sample_rate


class CodeDataModule(CodeData, pl.LightningDataModule):
    """`CodeData` as a `pytorch_lightning.LightningDataModule` (see `CodeData` for the arguments and the batch
    keys: `codes` (N, n_ctx) int64 of one level, the aligned `upper_codes` of the level above, labels)."""
