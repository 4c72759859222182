"""Every input is bounded and every user mistake is one line, exit 2 (issue 21, item 2).

Each test drives the command (`jukebox_pl.cli.main`) with one mistaken or hostile input: a damaged audio
header, a config value beyond the machine, a FIFO or device where a file belongs, a codes file with bad
values, an output path of the wrong kind, a full disk. The command must end with exit 2 and ONE stderr line
naming the file, key or value (or, for prep, skip the one file and shard the others), never a traceback or a
hang.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import tone

from jukebox_pl import cli
from jukebox_pl.stages.codes import CODES_FORMAT

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 8000


def fails_in_one_line(capsys, argv: list[str], *expected: str) -> str:
    """Run the command; assert exit 2 and one stderr line holding every `expected` text; return the line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


def refused_by_argparse(capsys, argv: list[str], *expected: str) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    for text in expected:
        assert text in last, last
    return last


def make_src(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / f"good{i}.wav", tone(1.2, SR, 220 + 40 * i, seed=i), SR)
    return root


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.wav"
    os.mkfifo(path)
    return path


# -- prep: one damaged file is skipped, never the end of the run ---------------------------------------------


def test_prep_skips_a_wav_whose_header_says_1_hz_and_shards_the_others(tmp_path, capsys):
    src = make_src(tmp_path / "src")
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 5000).astype(np.float32)
    sf.write(src / "one_hz.wav", noise, 1)  # 5000 s at 1 Hz: 110 M samples at 22050 Hz before the fix
    out = tmp_path / "out"
    assert cli.main(["prep", "--src", str(src), "--out", str(out), "--sr", "22050", "--workers", "0",
                     "--val-fraction", "0", "--no-progress"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["tracks"]["train"] == 2
    assert manifest["skipped"] == [{"path": "one_hz.wav", "reason": "sample rate 1 Hz out of range [4000, 768000] Hz"}]
    assert "one_hz.wav: sample rate 1 Hz out of range" in capsys.readouterr().out


def test_prep_skips_a_track_over_max_seconds_before_decoding_it(tmp_path, monkeypatch):
    from jukebox_pl.data import prep

    src = make_src(tmp_path / "src", 1)
    sf.write(src / "long.wav", tone(3.0, SR, 300), SR)
    decoded = []
    real = prep.read_audio
    monkeypatch.setattr(prep, "read_audio", lambda path: decoded.append(Path(path).name) or real(path))
    assert cli.main(["prep", "--src", str(src), "--out", str(tmp_path / "out"), "--workers", "0", "--sr", "8000",
                     "--max-seconds", "2", "--no-progress"]) == 0  # fmt: skip
    assert decoded == ["good0.wav"]


def test_prep_refuses_a_target_rate_out_of_range(tmp_path, capsys):
    src = make_src(tmp_path / "src", 1)
    fails_in_one_line(capsys, ["prep", "--src", str(src), "--out", str(tmp_path / "o"), "--sr", "1"], "--sr 1 Hz")


# -- config values tied to the machine ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("vqvae.batch_size=100000000000", "'vqvae.batch_size' = 100000000000", "GiB"),
        ("vqvae.sample_length=1000000000000", "'vqvae.sample_length' = 1000000000000", "GiB"),
        ("prior.top.batch_size=100000000000", "'prior.top.batch_size' = 100000000000", "GiB"),
        ("trainer.precision=bogus", "'trainer.precision' = 'bogus'", "'16-mixed'"),
        ("prior.top.arch=../../x", "unknown prior arch '../../x'", "tiny_prior"),
    ],
)
def test_config_values_beyond_the_machine_or_the_presets_are_one_line(override, key, words, capsys):
    fails_in_one_line(capsys, ["config", override], key, words)


def test_a_prior_arch_is_a_preset_name_never_a_path(tmp_path, capsys, monkeypatch):
    """A YAML next to the presets' folder exists, but `../x` is still not an architecture name."""
    configs = tmp_path / "configs"
    (configs / "priors").mkdir(parents=True)
    from jukebox_pl.config.loader import configs_dir

    for name in ("tiny.yaml",):
        (configs / name).write_text((configs_dir() / name).read_text())
    for p in (configs_dir() / "priors").glob("*.yaml"):
        (configs / "priors" / p.name).write_text(p.read_text())
    (configs / "outside.yaml").write_text("width: 8\n")
    monkeypatch.setenv("JUKEBOX_PL_CONFIGS", str(configs))
    fails_in_one_line(capsys, ["config", "prior.top.arch=../outside"], "unknown prior arch '../outside'")


# -- sample: bounded length and lyrics; FIFOs and devices refused --------------------------------------------


def test_sample_seconds_is_bounded(capsys):
    refused_by_argparse(capsys, ["sample", "--run", "r", "--out", "o", "--seconds", "1e9"], "--seconds", "14400")


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "missing", "latin1", "huge", "folder"])
def test_sample_lyrics_are_a_bounded_utf8_regular_file(kind, tmp_path, capsys):
    path = {"dev_zero": Path("/dev/zero"), "fifo": tmp_path / "l.fifo", "folder": tmp_path}.get(kind, tmp_path / "l")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "latin1":
        path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    elif kind == "huge":
        path.write_bytes(b"la " * 400_000)
    words = {"dev_zero": "not a regular file", "fifo": "not a regular file", "missing": "does not exist",
             "latin1": "not UTF-8", "huge": "1048576-byte limit", "folder": "is a folder"}[kind]  # fmt: skip
    argv = ["sample", "--run", str(tmp_path / "no_run"), "--out", str(tmp_path / "o"), "--lyrics", str(path)]
    fails_in_one_line(capsys, argv, f"--lyrics file {path}", words)


def test_encode_refuses_a_fifo_as_audio_instead_of_hanging(fifo, tmp_path, capsys):
    argv = ["encode", "--audio", str(fifo), "--out", str(tmp_path / "c.pt"), "--ckpt", str(tmp_path / "x.pt")]
    fails_in_one_line(capsys, argv, f"--audio file {fifo}", "not a regular file")


def test_decode_refuses_a_fifo_as_codes(tmp_path, capsys):
    pipe = tmp_path / "codes.pt"
    os.mkfifo(pipe)
    argv = ["decode", "--codes", str(pipe), "--out", str(tmp_path / "o"), "--ckpt", str(tmp_path / "x.pt")]
    fails_in_one_line(capsys, argv, f"codes file {pipe}", "not a regular file")


def test_prep_refuses_a_fifo_as_metadata(tmp_path, capsys):
    src = make_src(tmp_path / "src", 1)
    pipe = tmp_path / "meta.csv"
    os.mkfifo(pipe)
    argv = ["prep", "--src", str(src), "--out", str(tmp_path / "o"), "--metadata", str(pipe), "--sr", "8000"]
    fails_in_one_line(capsys, argv, f"metadata file {pipe}", "not a regular file")


# -- codes files: integers in range, non-empty --------------------------------------------------------------


def codes_file(path: Path, codes: dict, **extra) -> Path:
    torch.save({"format": CODES_FORMAT, "sample_rate": 22050, "length": 4096, "n_levels": 3, "codes": codes,
                **extra}, path)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("codes", "words"),
    [
        ({"top": torch.tensor([1, -3, 2])}, "code -3 is out of range"),
        ({"top": torch.tensor([1.0, 2.5])}, "must be integers, not float32"),
        ({"top": torch.zeros(0, dtype=torch.long)}, "holds no codes"),
        ({"top": torch.zeros(1, 2, 3, dtype=torch.long)}, "shape (1, 2, 3)"),
        ({"top": [1, 2, 3]}, "must be a tensor of integers, not list"),
        ({}, "holds no codes"),
    ],
)
def test_decode_names_the_file_level_and_bad_value(codes, words, tmp_path, capsys):
    path = codes_file(tmp_path / "bad.pt", codes)
    argv = ["decode", "--codes", str(path), "--out", str(tmp_path / "o"), "--ckpt", str(tmp_path / "x.pt")]
    fails_in_one_line(capsys, argv, str(path), words)


def test_decode_refuses_codes_beyond_the_codebook(tmp_path, capsys, monkeypatch):
    from sampling_models import tiny_models

    from jukebox_pl.stages import codes as codes_stage

    vqvae = tiny_models().vqvae  # 32 codes per level
    monkeypatch.setattr(codes_stage, "load_vqvae", lambda *a, **k: vqvae)
    path = codes_file(tmp_path / "big.pt", {"top": torch.tensor([0, 31, 32, 7])})
    argv = ["decode", "--codes", str(path), "--out", str(tmp_path / "o.wav"), "--ckpt", "x.pt"]
    fails_in_one_line(capsys, argv, f"{path}, level 'top'", "code 32 is out of range [0, 32)")


@pytest.mark.parametrize("mode", ["continue", "upsample"])
@pytest.mark.parametrize(
    ("codes", "words"),
    [
        ({"top": torch.tensor([[0, 40, 1]])}, "code 40 is out of range [0, 32)"),
        ({"top": torch.tensor([[0, -1]])}, "code -1 is out of range"),
        ({"top": torch.tensor([[0.5, 1.0]])}, "must be integers"),
        ({"top": torch.zeros(1, 0, dtype=torch.long)}, "holds no codes"),
    ],
)
def test_sample_from_codes_names_the_file_level_and_bad_value(mode, codes, words, tmp_path, capsys, monkeypatch):
    from sampling_models import tiny_models

    from jukebox_pl.sampling.models import SamplingModels

    monkeypatch.setattr(SamplingModels, "from_run", staticmethod(lambda *a, **k: tiny_models()))
    path = tmp_path / "codes.pt"
    torch.save({"codes": codes}, path)
    argv = ["sample", "--run", "r", "--out", str(tmp_path / "o"), "--mode", mode, "--codes", str(path),
            "--no-progress"]  # fmt: skip
    fails_in_one_line(capsys, argv, f"{path}, level 'top'", words)


# -- vocabularies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("[1, 2]", "needs 'artists' and 'genres'"),
        ('{"artist": {}, "genre": {}}', "needs 'artists' and 'genres'"),
        ('{"artists": "abc", "genres": {"unknown": 0}}', "needs 'artists' and 'genres'"),
        ('{"artists": [1, 2], "genres": {"unknown": 0}}', "needs 'artists' and 'genres'"),
        ('{"artists": {"unknown": "0"}, "genres": {"unknown": 0}}', "artists must map names to ids"),
        ("not json", "is not a jukebox-pl vocab.json"),
    ],
)
def test_prep_base_vocab_of_the_wrong_shape_is_one_line(content, words, tmp_path, capsys):
    src = make_src(tmp_path / "src", 1)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(content)
    out = tmp_path / "o"
    argv = ["prep", "--src", str(src), "--out", str(out), "--base-vocab", str(vocab), "--sr", "8000"]
    fails_in_one_line(capsys, argv, str(vocab), words)
    assert not out.exists()  # refused before anything was written


def test_prep_base_vocab_missing_is_one_line(tmp_path, capsys):
    src = make_src(tmp_path / "src", 1)
    argv = ["prep", "--src", str(src), "--out", str(tmp_path / "o"), "--base-vocab", str(tmp_path / "v.json")]
    fails_in_one_line(capsys, argv, f"{tmp_path / 'v.json'} does not exist")


# -- output paths of the wrong kind -------------------------------------------------------------------------


def test_prep_out_an_existing_file(tmp_path, capsys):
    src = make_src(tmp_path / "src", 1)
    (tmp_path / "o").write_text("x")
    fails_in_one_line(capsys, ["prep", "--src", str(src), "--out", str(tmp_path / "o")], "is an existing file")


def test_export_out_an_existing_folder(tmp_path, capsys):
    argv = ["export", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path)]
    fails_in_one_line(capsys, argv, f"--out {tmp_path} is an existing folder")


def test_sample_out_an_existing_file(tmp_path, capsys):
    (tmp_path / "o").write_text("x")
    argv = ["sample", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "o")]
    fails_in_one_line(capsys, argv, f"--out {tmp_path / 'o'} is an existing file")


def test_encode_out_an_existing_folder_or_inside_a_file(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, tone(0.5, SR, 220), SR)
    base = ["encode", "--audio", str(audio), "--ckpt", str(tmp_path / "x.pt"), "--out"]
    fails_in_one_line(capsys, [*base, str(tmp_path)], "is an existing folder")
    fails_in_one_line(capsys, [*base, str(audio / "c.pt")], f"{audio} is a file, not a folder")


def test_decode_out_of_the_wrong_kind(tmp_path, capsys):
    path = codes_file(tmp_path / "c.pt", {"top": torch.tensor([1, 2]), "middle": torch.tensor([1, 2])})
    base = ["decode", "--codes", str(path), "--ckpt", str(tmp_path / "x.pt"), "--out"]
    fails_in_one_line(capsys, [*base, str(path)], "is an existing file, not a folder")  # two levels: a folder
    fails_in_one_line(capsys, [*base, str(tmp_path / "a.mp4"), "--level", "top"], "unknown audio format '.mp4'")


# -- a full disk --------------------------------------------------------------------------------------------


def test_prep_on_a_full_disk_says_what_it_kept(tmp_path, capsys, monkeypatch):
    from jukebox_pl.data import prep

    def full(self, sample, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.out / "train-000000.tar.tmp"))

    monkeypatch.setattr(prep.ShardSink, "write", full)
    src = make_src(tmp_path / "src", 1)
    argv = ["prep", "--src", str(src), "--out", str(tmp_path / "o"), "--sr", "8000", "--no-progress"]
    fails_in_one_line(capsys, argv, "no space left on the disk while writing shards to", "0 complete shard(s) are kept")


def test_any_command_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    from jukebox_pl.training.checkpoints import read_write as checkpoints

    def full(ckpt, out, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(checkpoints, "export_weights", full)
    out = tmp_path / "w.pt"
    fails_in_one_line(capsys, ["export", "--ckpt", "x.ckpt", "--out", str(out)], f"while writing {out}", "free space")


def test_other_os_errors_keep_their_traceback(monkeypatch):
    from jukebox_pl.training.checkpoints import read_write as checkpoints

    def broken(ckpt, out, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoints, "export_weights", broken)
    with pytest.raises(OSError):
        cli.main(["export", "--ckpt", "x.ckpt", "--out", "w.pt"])


def test_a_fifo_or_device_as_a_config_file_is_named_for_what_it_is(tmp_path, capsys):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    fails_in_one_line(capsys, ["config", "--preset", str(fifo)], "config.yaml", "is not a regular file")
    device = tmp_path / "dev.yaml"
    device.symlink_to("/dev/zero")
    fails_in_one_line(capsys, ["config", "--preset", str(device)], "dev.yaml", "is not a regular file")
