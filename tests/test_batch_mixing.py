"""Training batches mix songs: crops are drawn from many open tracks at once, not a tiling of one track."""

from __future__ import annotations

from pathlib import Path

import pytest
from audio_fixtures import make_music_folder

from jukebox_pl.cli import main
from jukebox_pl.config import load_config
from jukebox_pl.config.loader import save_config
from jukebox_pl.data.prep import PrepOptions, prepare_shards
from jukebox_pl.stages.datamodules import describe_batch, vqvae_datamodule


@pytest.fixture(scope="module")
def twenty_tracks(tmp_path_factory) -> Path:
    """20 tracks of 6 s in ONE training shard (the worst case: every track of a batch could come from it)."""
    music = make_music_folder(tmp_path_factory.mktemp("mix") / "library", n_good=20, seconds=6.0)
    out = tmp_path_factory.mktemp("mix_shards") / "out"
    prepare_shards(
        PrepOptions(src=str(music["root"]), out=str(out), metadata=str(music["metadata"]), sr=22050,
                    val_fraction=0.0, shard_tracks=100, workers=1),
        progress=False,
    )  # fmt: skip
    return out


def _cfg(shards: Path, *extra: str):
    # crops of 8192 samples: each 6 s track holds 16 crops, so a tiling would fill whole batches from one song
    return load_config(
        "tiny", [f"data.shards={shards}", "vqvae.batch_size=8", "vqvae.sample_length=8192", "data.epoch_length=160",
                 *extra],
    )  # fmt: skip


def _distinct_tracks(dm) -> list[int]:
    dm.setup("fit")
    return [describe_batch(b, dm.vocab)["distinct_tracks"] for b in dm.train_dataloader()]


def test_a_batch_of_8_from_20_tracks_holds_at_least_6_tracks(twenty_tracks):
    dm = vqvae_datamodule(_cfg(twenty_tracks))
    distinct = _distinct_tracks(dm)
    assert len(distinct) == 20 and min(distinct) >= 6, distinct


def test_one_open_track_tiles_a_single_song(twenty_tracks):
    """The control: with one open track and no shuffle buffer a batch is one song, so the check above can fail."""
    dm = vqvae_datamodule(_cfg(twenty_tracks, "data.open_tracks=1", "data.shuffle_buffer=0"))
    assert max(_distinct_tracks(dm)) <= 2


def test_a_resumed_stage_reads_mixed_batches(twenty_tracks, tmp_path):
    """A resumed run rebuilds its DataModule from the stage's saved config.yaml: still mixed."""
    saved = save_config(_cfg(twenty_tracks), tmp_path / "vqvae_top" / "config.yaml")
    dm = vqvae_datamodule(load_config(str(saved), []))
    assert min(_distinct_tracks(dm)) >= 6


def test_inspect_data_prints_distinct_tracks_and_artists(twenty_tracks, capsys):
    args = ["inspect-data", "--data", str(twenty_tracks), "--stage", "vqvae", "--level", "top", "--batches", "2",
            "vqvae.batch_size=8", "vqvae.sample_length=8192"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "batch_size=8 sample_length=8192" in out
    lines = [line for line in out.splitlines() if line.startswith("train batch")]
    assert len(lines) == 2 and all("tracks " in line and "/8 artists " in line for line in lines)
    assert all(int(line.split("tracks ")[1].split("/")[0]) >= 6 for line in lines)
