"""Shared fixtures: a generated music folder with good and bad files, and its shards (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from audio_fixtures import make_music_folder  # noqa: E402

from jukebox_pl.data.prep import PrepOptions, prepare_shards  # noqa: E402


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is ~10x faster than several on a busy machine (use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def music(tmp_path_factory) -> dict:
    return make_music_folder(tmp_path_factory.mktemp("music") / "library", n_good=8, seconds=3.0)


@pytest.fixture(scope="session")
def shards(music, tmp_path_factory) -> Path:
    """Shards at 22050 Hz with one track per shard, so shard counts are odd and splits are exercised."""
    out = tmp_path_factory.mktemp("shards") / "out"
    prepare_shards(
        PrepOptions(
            src=str(music["root"]),
            out=str(out),
            metadata=str(music["metadata"]),
            sr=22050,
            val_fraction=0.4,
            shard_tracks=1,
            workers=1,
        ),
        progress=False,
    )
    return out
