"""The DataModule each stage trains on, built from the resolved config: what `train` uses and what
`jukebox-pl inspect-data --stage S --level L` shows, so the two can never disagree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jukebox_pl.config.levels import Levels
from jukebox_pl.config.loader import ConfigError, command_line_urls
from jukebox_pl.config.schema import RunConfig
from jukebox_pl.config.typed import run_config
from jukebox_pl.data.code_shards import is_code_shards
from jukebox_pl.data.datamodule import AudioDataModule
from jukebox_pl.data.pipeline import TrackField
from jukebox_pl.data.prep import MANIFEST_FILE
from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.conditioning import extra_track_fields


def check_shard_rate(cfg: RunConfig, preset: str) -> None:
    """Refuse shards at another rate than the config reads, before anything is printed, built or written: one line
    naming both rates and the prep command that makes fitting shards (prep --preset takes the preset's rate)."""
    shards = cfg.data.shards
    manifest = Path(shards) / MANIFEST_FILE if shards else None
    if manifest is None or not manifest.is_file() or cfg.data.train_urls or cfg.data.val_urls:
        return
    try:
        have = json.loads(manifest.read_text()).get("sample_rate")
    except (OSError, ValueError, AttributeError):
        return  # an unreadable manifest is reported by the DataModule, naming the file
    want = cfg.data.sample_rate
    if isinstance(have, int) and have != want:
        raise UserValueError(
            f"the shards in {shards} are {have} Hz but preset {preset} reads {want} Hz audio (data.sample_rate); "
            f"make shards at its rate (`jukebox-pl prep --src MUSIC --out NEW_FOLDER --preset {preset}`) or train "
            f"at theirs (data.sample_rate={have})"
        )


def vqvae_datamodule(cfg: RunConfig | Any, skip_log: str | Path | None = None) -> AudioDataModule:
    """Crops of `vqvae.sample_length` samples (a multiple of the top hop, see jukebox_pl.config.checks) in
    `vqvae.channels` channels; unusable samples are listed in `skip_log` (the stage's `skipped.tsv`)."""
    cfg = run_config(cfg)
    v = cfg.vqvae
    return AudioDataModule(
        cfg.data,
        sample_length=v.sample_length,
        batch_size=v.batch_size,
        channels=v.channels,
        seed=cfg.seed,
        skip_log=skip_log,
        allow_urls=command_line_urls(cfg),
    )


def prior_datamodule(cfg: RunConfig | Any, level: int | str, skip_log: str | Path | None = None):
    """Audio crops of n_ctx x hop samples (encoded on the fly by the frozen VQ-VAE) or, for a folder written by
    `jukebox-pl encode-shards`, code crops of n_ctx tokens; with the lyric window and the per-track fields the
    prior's extra conditioners declare (`Conditioner.track_fields`)."""
    cfg = run_config(cfg)
    levels = Levels.from_config(cfg)
    idx = levels.index(level)
    p = getattr(cfg.prior, levels.name(idx))
    lyric_tokens = p.n_tokens if p.lyrics != "none" else 0
    common = dict(
        batch_size=p.batch_size, n_lyric_tokens=lyric_tokens, lyrics_vocab=p.lyrics_vocab, seed=cfg.seed,
        skip_log=skip_log, allow_urls=command_line_urls(cfg),
        fields=tuple(
            TrackField(name, **spec)
            for name, spec in extra_track_fields(p.conditioners, f"prior.{levels.name(idx)}").items()
        ),
    )  # fmt: skip
    if cfg.data.shards and is_code_shards(cfg.data.shards):
        from jukebox_pl.data.code_datamodule import CodeDataModule

        return CodeDataModule(cfg.data, level=idx, n_ctx=p.n_ctx, upper_level=levels.above(idx), **common)
    return AudioDataModule(cfg.data, sample_length=p.n_ctx * levels.hop(idx), channels=1, **common)


def stage_datamodule(cfg: RunConfig | Any, stage: str, level: int | str):
    """The DataModule of `stage` ("vqvae" or "prior") at `level`."""
    if stage == "vqvae":
        return vqvae_datamodule(cfg)
    if stage == "prior":
        return prior_datamodule(cfg, level)
    raise ConfigError(f"unknown stage {stage!r}; choose vqvae or prior")


def describe_batch(batch: dict, vocab) -> dict:
    """What a batch mixes: distinct tracks and artists, offsets (what `inspect-data` prints)."""
    tracks = [k.rsplit("/", 1)[0] for k in batch["key"]]
    artists = [vocab.artist_name(a) for a in batch["artist"].tolist()]
    return {
        "shapes": {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape") and v.ndim},
        "tracks": tracks,
        "distinct_tracks": len(set(tracks)),
        "artists": artists,
        "distinct_artists": len(set(artists)),
        "offsets": batch["offset"].tolist(),
    }


def inspect_data(cfg: RunConfig | Any, stage: str, level: str, n_batches: int = 2, echo=print) -> list[dict]:
    """Pull `n_batches` training and validation batches from exactly the DataModule `stage` trains on."""
    cfg = run_config(cfg)
    dm = stage_datamodule(cfg, stage, level)
    dm.setup("fit")
    crops = dm.crops
    echo(
        f"{stage} {level}: {type(dm).__name__} batch_size={crops.batch_size} "
        f"sample_length={getattr(dm, 'sample_length', crops.sample_length)} channels={crops.channels} "
        f"lyric_tokens={crops.n_lyric_tokens} open_tracks={cfg.data.open_tracks} "
        f"shuffle_buffer={cfg.data.shuffle_buffer} train shards={len(dm.train_urls)} val shards={len(dm.val_urls)}"
    )
    described = []
    for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader())):
        for i, batch in zip(range(n_batches), loader):
            d = describe_batch(batch, dm.vocab)
            described.append({"split": split, **d})
            echo(
                f"{split} batch {i}: {d['shapes']} tracks {d['distinct_tracks']}/{len(d['tracks'])} "
                f"artists {d['distinct_artists']} {d['artists']} offsets={d['offsets']}"
            )
            if "lyrics" in batch:
                from jukebox_pl.lyrics import LyricsTokenizer

                text = LyricsTokenizer(crops.lyrics_vocab).decode(batch["lyrics"][0])
                echo(f"  lyric window of {batch['key'][0]}: {text!r}")
    return described
