"""Files keep what was written: every tensor's checksum travels with it and a flipped byte is refused naming the
tensor; an interrupted save's temporary file is cleaned at the next start; files get the umask's mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from prior_settings import VQVAE

from jukebox_pl.cli import main
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.training.checkpoints.checksums import CHECKSUM_KEY, ChecksumMismatch, verify_checksums
from jukebox_pl.training.checkpoints.read_write import atomic_torch_save, clean_interrupted_saves, load_any
from jukebox_pl.training.checkpoints.resume import resume_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = VQVAE + [
    "trainer.max_steps=2",
    "data.epoch_length=4",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "run.log_audio_every_n_steps=0",
    "run.checkpoint_every_n_steps=1",
]


def flip_inside(path: Path, values: torch.Tensor) -> None:
    """Flip one bit in the middle of where `values`' bytes lie in the file (a disk or copy error)."""
    data = bytearray(path.read_bytes())
    raw = values.detach().contiguous().view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "the tensor's bytes are stored as they are"
    data[at + len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def fake_checkpoint(path: Path) -> torch.Tensor:
    weight = torch.linspace(-1, 1, 4096).reshape(64, 64)
    state = {"model.encoder.weight": weight, "model.encoder.bias": torch.zeros(64)}
    atomic_torch_save({"state_dict": state, "hyper_parameters": {"level": 0}}, path)
    return weight


def test_a_flipped_byte_is_refused_naming_the_tensor(tmp_path):
    path = tmp_path / "model.ckpt"
    weight = fake_checkpoint(path)
    assert load_any(path)["state_dict"]["model.encoder.weight"].equal(weight), "intact: loads"
    flip_inside(path, weight)
    with pytest.raises(
        ChecksumMismatch, match=r"model\.ckpt is damaged: 1 tensor\(s\) .*state_dict\.model\.encoder\.weight"
    ):
        load_any(path)


def test_the_cli_refuses_a_damaged_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "model.ckpt"
    flip_inside(path, fake_checkpoint(path))
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0] and "encoder.weight" in err[0]
    assert not (tmp_path / "out.pt").exists()


def test_checksums_follow_values_not_storage():
    base = torch.arange(12.0).reshape(3, 4)
    saved = {"t": base.t(), "half": base[:, :2].to(torch.bfloat16), "n": torch.tensor(3), "empty": torch.zeros(0)}
    from jukebox_pl.training.checkpoints.checksums import with_checksums

    written = with_checksums(saved)
    assert set(written[CHECKSUM_KEY]) == {"t", "half", "n", "empty"}
    verify_checksums({**saved, "t": base.t().contiguous(), CHECKSUM_KEY: written[CHECKSUM_KEY]}, "x")
    with pytest.raises(ChecksumMismatch, match=r"x is damaged: 1 tensor\(s\) .*\(t\)"):
        verify_checksums({**saved, "t": base.t() + 1, CHECKSUM_KEY: written[CHECKSUM_KEY]}, "x")
    with pytest.raises(ChecksumMismatch, match=r"n \(missing\)"):
        verify_checksums({"t": saved["t"], "half": saved["half"], "empty": saved["empty"],
                          CHECKSUM_KEY: written[CHECKSUM_KEY]}, "x")  # fmt: skip


def test_files_without_checksums_still_load(tmp_path):
    """Files written before checksums existed (and the reference's) carry none: nothing to compare."""
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(3)}, "hyper_parameters": {}}, path)
    assert load_any(path)["state_dict"]["model.w"].sum() == 3


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_torch_save({"w": torch.ones(2)}, tmp_path / "w.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_only_interrupted_saves_are_cleaned(tmp_path):
    stale = [tmp_path / ".last.ckpt.k2j4x0_q.tmp", tmp_path / ".codes.pt.abcdefgh.tmp"]
    kept = [tmp_path / "last.ckpt", tmp_path / "notes.tmp", tmp_path / ".hidden.tmp"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(clean_interrupted_saves(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_a_run_resumes_only_from_an_intact_checkpoint(shards, tmp_path, capsys):
    """End to end: a trained stage's last.ckpt carries checksums; a flipped byte in it is refused in one line
    when a resume reads it; the interrupted save a kill left beside it is removed at the next start."""
    train_vqvae(str(tmp_path), "bottom", "tiny", str(shards), RUN)
    checkpoints = tmp_path / "vqvae_bottom" / "checkpoints"
    last = checkpoints / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert CHECKSUM_KEY in saved and any(k.startswith("state_dict.") for k in saved[CHECKSUM_KEY])
    assert any(k.startswith("optimizer_states.") for k in saved[CHECKSUM_KEY]), "the optimiser state too"
    stale = checkpoints / ".last.ckpt.zz99zz99.tmp"
    stale.write_bytes(b"half a checkpoint")
    weight = next(v for k, v in saved["state_dict"].items() if k.endswith("weight") and v.numel() >= 64)
    flip_inside(last, weight)
    with pytest.warns(
        UserWarning, match=r"last\.ckpt is damaged \(1 tensor\(s\) differ .*resuming from .*step00000002"
    ):
        assert resume_checkpoint(checkpoints).name == "step00000002.ckpt", "the newest intact file"
    for step_file in checkpoints.glob("step*.ckpt"):
        step_file.unlink()  # nothing to fall back to: the damaged file itself must be refused
    args = ["train", "vqvae", "--level", "bottom", "--run", str(tmp_path), "--resume", "trainer.max_steps=3"]
    assert main(args + [f"data.shards={shards}", *RUN[:-1]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "nothing to resume" in err[-1] and "last.ckpt is damaged (1 tensor(s) differ" in err[-1], err
    assert not stale.exists(), "the interrupted save's temporary file is removed at the next start"


def onto_full_disk(monkeypatch) -> None:
    """Every `torch.save` writes to /dev/full: torch's writer fails as on a full disk (in a RuntimeError)."""
    real = torch.save

    def save(obj, _file, *args, **kwargs):
        with open("/dev/full", "wb") as full:
            real(obj, full, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    from jukebox_pl.errors import DiskFullError

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous save")
    onto_full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match=r"no space left on the disk while writing .*last\.ckpt: .* keeps what"):
        atomic_torch_save({"w": torch.ones(100_000)}, target)
    assert target.read_bytes() == b"the previous save" and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_export_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    source = tmp_path / "model.ckpt"
    fake_checkpoint(source)
    onto_full_disk(monkeypatch)
    assert main(["export", "--ckpt", str(source), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "out.pt was not written" in err[0], err


def test_an_interrupted_save_in_a_sample_folder_is_not_foreign(tmp_path):
    """A sample killed while writing its first state leaves only a temporary file: the folder is still its own."""
    from jukebox_pl.errors import RefusedError
    from jukebox_pl.stages.sample import check_out

    out = tmp_path / "song"
    out.mkdir()
    (out / ".state.pt.k2j4x0_q.tmp").write_bytes(b"half")
    check_out(out, resume=False)
    (out / "index.html").write_text("someone else's")
    with pytest.raises(RefusedError, match="index.html"):
        check_out(out, resume=False)


def test_training_on_a_full_disk_stops_in_one_line(shards, tmp_path, capsys, monkeypatch):
    """The checkpoint writer meets a full disk mid-run: one line saying what was being written, exit 2."""
    onto_full_disk(monkeypatch)
    args = ["train", "vqvae", "--level", "bottom", "--run", str(tmp_path), "--data", str(shards), *RUN]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no space left on the disk while writing" in err[-1] and ".ckpt" in err[-1], err[-3:]
    assert err[-1].endswith("free some space, then run the same command again"), err[-1]
    assert "Traceback" not in "\n".join(err)


def test_a_checkpoint_the_resume_just_verified_is_not_summed_twice(tmp_path):
    """`resume_checkpoint` compared every checksum to pick the file: Lightning's load of that same, unchanged file
    skips the second pass, and any rewrite of the file (new size, time or inode) brings the check back."""
    from jukebox_pl.training.checkpoints.checksums import ChecksumMismatch
    from jukebox_pl.training.checkpoints.lightning_io import SafeCheckpointIO

    path = tmp_path / "last.ckpt"
    weight = fake_checkpoint(path)
    verified = SafeCheckpointIO(verified=path)
    stat = path.stat()
    flip_inside(path, weight)  # same size and inode; the time is put back below: the identity is unchanged
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verified.load_checkpoint(path, weights_only=True)  # not summed again: the flip goes unseen, as designed
    with pytest.raises(ChecksumMismatch, match="encoder.weight"):
        SafeCheckpointIO().load_checkpoint(path, weights_only=True)
    os.utime(path)  # rewritten after the resume checked it
    with pytest.raises(ChecksumMismatch, match="encoder.weight"):
        verified.load_checkpoint(path, weights_only=True)
