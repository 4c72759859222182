"""Every file jukebox-pl reads is loaded as tensors and plain data: a crafted pickle is refused and never runs."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox_pl.cli import main
from jukebox_pl.errors import UnsafeFileError
from jukebox_pl.stages.codes import read_codes
from jukebox_pl.training.checkpoints.read_write import load_any, safe_load


class Payload:
    """Unpickling this calls Path.touch(marker): the marker file shows whether the payload ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def evil(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload(marker)}, "format": 1}, path)
    return path, marker


def test_the_loader_refuses_and_names_the_file(evil):
    path, marker = evil
    for load in (lambda: safe_load(path), lambda: load_any(path), lambda: read_codes(path)):
        with pytest.raises(UnsafeFileError, match=r"evil\.ckpt is refused: it holds Python objects"):
            load()
    assert not marker.exists()


def test_our_own_files_pass(tmp_path):
    saved = {"codes": {"top": torch.zeros(1, 4, dtype=torch.long)}, "settings": {"seed": 1, "names": ["a"]}}
    torch.save(saved, tmp_path / "ok.pt")
    assert torch.equal(safe_load(tmp_path / "ok.pt")["codes"]["top"], saved["codes"]["top"])


def reading_commands(path: pathlib.Path, tmp_path: pathlib.Path) -> list[list[str]]:
    """Every command that reads a checkpoint or codes file the user names, each given `path`."""
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.zeros(22050, dtype=np.float32), 22050)
    return [
        ["export", "--ckpt", str(path), "--out", str(tmp_path / "x.pt")],
        ["encode", "--ckpt", str(path), "--audio", str(wav), "--out", str(tmp_path / "c.pt")],
        ["decode", "--ckpt", str(path), "--codes", str(path), "--out", str(tmp_path / "d")],
        ["sample", "--prior", str(path), "--vqvae", str(path), "--out", str(tmp_path / "s"), "--no-progress"],
    ]


def test_every_command_that_reads_a_file_refuses_it(evil, tmp_path, capsys):
    path, marker = evil
    for args in reading_commands(path, tmp_path):
        assert main(args) == 2, args
        assert "is refused: it holds Python objects" in capsys.readouterr().err, args
    assert not marker.exists()


@pytest.mark.slow
def test_resuming_from_a_crafted_last_ckpt_never_runs_it(evil, shards, tmp_path):
    from jukebox_pl.stages.train_vqvae import train_vqvae

    path, marker = evil
    run = tmp_path / "run"
    small = ["vqvae.l_bins=16", "vqvae.width=8", "vqvae.depth=1", "vqvae.sample_length=2048", "vqvae.batch_size=2",
             "vqvae.bandwidth_batches=1", "trainer.max_steps=1", "trainer.limit_val_batches=0",
             "trainer.enable_progress_bar=false"]  # fmt: skip
    train_vqvae(run, "top", "tiny", str(shards), small)
    path.replace(run / "vqvae_top" / "checkpoints" / "last.ckpt")
    with pytest.raises(UnsafeFileError, match=r"last\.ckpt is refused.*Unsupported global"):
        train_vqvae(run, "top", "tiny", str(shards), ["trainer.max_steps=2"], resume=True)
    assert not marker.exists()
