"""A downloaded run folder is data, never code: nothing read from a file (a saved config, a checkpoint's
hyper-parameters, a reference pickle, a resumed `last.ckpt`) chooses a command to run or a module to import.
Each payload leaves a marker file if it ran; every test checks the marker never appears."""

from __future__ import annotations

import builtins
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cli_output import one_line_error
from omegaconf import OmegaConf
from prior_settings import VQVAE
from test_safe_loading import reading_commands

from jukebox_pl.cli import main
from jukebox_pl.config import conditioner_targets
from jukebox_pl.config.loader import ConfigError, command_line_urls, load_config, save_config, to_yaml
from jukebox_pl.data.datamodule import AudioDataModule
from jukebox_pl.errors import UnsafeFileError
from jukebox_pl.prior import conditioning
from jukebox_pl.training.checkpoints.read_write import safe_load
from jukebox_pl.training.checkpoints.resume import resume_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = VQVAE + [
    "data.epoch_length=4", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0", "run.log_audio_every_n_steps=0", "trainer.max_steps=1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_allowed_conditioners(monkeypatch):
    """Every test starts with nothing allowed (the allow-list is per process)."""
    monkeypatch.setattr(conditioner_targets, "_ALLOWED", set())


# -- 1. shard URLs that run a command -------------------------------------------------------------------------


def pipe_url(marker: Path, shards: Path) -> str:
    shard = next(iter(sorted(shards.glob("*train*.tar")) or sorted(shards.glob("*.tar"))))
    return f"pipe:touch {marker}; cat {shard}"


def with_urls(config: Path, **urls: str) -> None:
    cfg = OmegaConf.load(config)
    for key, value in urls.items():
        cfg.data[key] = value
    config.write_text(OmegaConf.to_yaml(cfg))


@pytest.fixture(scope="module")
def vq_run(shards, tmp_path_factory) -> Path:
    """A trained one-step tiny VQ-VAE level (a real `last.ckpt` a resume accepts)."""
    from jukebox_pl.stages.train_vqvae import train_vqvae

    run = tmp_path_factory.mktemp("vq") / "run"
    train_vqvae(run, "bottom", "tiny", str(shards), TINY)
    return run


@pytest.mark.parametrize("key", ["train_urls", "val_urls"])
def test_train_resume_refuses_a_pipe_url_saved_in_the_run_config(vq_run, shards, tmp_path, capsys, key):
    config = vq_run / "vqvae_bottom" / "config.yaml"
    original = config.read_text()
    marker = tmp_path / "pipe_ran"
    try:
        with_urls(config, **{key: pipe_url(marker, shards)})
        args = ["train", "vqvae", "--level", "bottom", "--run", str(vq_run), "--resume", "trainer.max_steps=2"]
        assert main(args) == 2
        one_line_error(capsys, f"data.{key}", str(config), "pipe:")
    finally:
        config.write_text(original)
    assert not marker.exists()


def test_finetune_from_refuses_a_pipe_url_saved_in_the_base_run(shards, tmp_path, capsys):
    base = tmp_path / "base"
    stage = base / "prior_top"
    (stage / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "hyper_parameters": {}}, stage / "checkpoints" / "last.ckpt")
    marker = tmp_path / "pipe_ran"
    save_config(load_config("tiny"), stage / "config.yaml")
    with_urls(stage / "config.yaml", train_urls=pipe_url(marker, shards))
    assert main(["finetune", "--from", str(base), "--data", str(shards), "--run", str(tmp_path / "new")]) == 2
    one_line_error(capsys, "data.train_urls", str(stage / "config.yaml"))
    assert not marker.exists()


def test_a_preset_file_may_not_name_a_pipe_url_but_the_command_line_may(shards, tmp_path, capsys):
    marker = tmp_path / "pipe_ran"
    url = pipe_url(marker, shards)
    preset = tmp_path / "mine.yaml"
    preset.write_text(to_yaml(load_config("tiny")))
    with_urls(preset, val_urls=url)
    assert main(["config", "--preset", str(preset)]) == 2
    one_line_error(capsys, "data.val_urls", str(preset), "on this command line")
    # typed on this invocation's command line, the same URL is the user's own choice
    cfg = load_config(str(preset), [f"data.val_urls={url}"])
    assert command_line_urls(cfg) == {url}
    assert not marker.exists()


def test_the_datamodule_opens_a_pipe_url_only_when_told_it_was_typed(shards, tmp_path):
    """The backstop for any code path that builds a DataModule from a config it did not get from the user."""
    marker = tmp_path / "pipe_ran"
    url = pipe_url(marker, shards)
    for dm in (AudioDataModule({"train_urls": url}), AudioDataModule({"val_urls": f"{shards}/x.tar::{url}"})):
        with pytest.raises(UnsafeFileError, match=r"shard URL 'pipe:touch .* is refused"):
            dm.setup("fit")
    dm = AudioDataModule({"train_urls": "https://example.invalid/s-{0..1}.tar"})
    with pytest.raises(UnsafeFileError, match=r"https://example\.invalid/s-0\.tar"):
        dm.setup("fit")
    trusted = AudioDataModule({"train_urls": url}, allow_urls=(url,))
    trusted.setup("fit")  # resolved, not opened
    assert trusted.train_urls == [url]
    trusted.train_urls = [url.replace("touch", "touch -c")]  # a list changed after the check is checked again
    with pytest.raises(UnsafeFileError):
        trusted.train_dataloader()
    assert not marker.exists()


# -- 2. extra conditioners named by a file -------------------------------------------------------------------


@pytest.fixture
def evil_module(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A module on the import path (as a folder holding `some/module.py` is for `python -m jukebox_pl`) that
    leaves a marker when imported; returns (its Conditioner target, the marker)."""
    name = f"evil_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "import_ran"
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Cond: pass\n")
    monkeypatch.syspath_prepend(str(code))
    yield f"{name}.Cond", marker
    sys.modules.pop(name, None)


def checkpoint_naming(path: Path, target: str) -> Path:
    hparams = {"prior": {"conditioners": {"tempo": {"target": target}}}, "level": 2}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


def test_no_command_imports_a_conditioner_a_checkpoint_names(evil_module, tmp_path, capsys):
    target, marker = evil_module
    ckpt = checkpoint_naming(tmp_path / "prior.ckpt", target)
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.zeros(4096, dtype=np.float32), 22050)
    run = tmp_path / "run"
    (run / "prior_top").mkdir(parents=True)
    checkpoint_naming(run / "prior_top" / "export.pt", target)
    (run / "vqvae_top").mkdir()
    checkpoint_naming(run / "vqvae_top" / "export.pt", target)
    save_config(load_config("tiny"), run / "prior_top" / "config.yaml")
    commands = [
        (["sample", "--prior", str(ckpt), "--vqvae", str(ckpt), "--out", str(tmp_path / "s"), "--no-progress"], ckpt),
        (["sample", "--run", str(run), "--out", str(tmp_path / "s2"), "--no-progress"], run),
        (["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "x.pt")], ckpt),
        (["encode", "--ckpt", str(ckpt), "--audio", str(wav), "--out", str(tmp_path / "c.pt")], ckpt),
        (["decode", "--ckpt", str(ckpt), "--codes", str(ckpt), "--out", str(tmp_path / "d")], ckpt),
        (["evaluate", "--from", str(run), "--data", str(tmp_path)], run / "prior_top" / "export.pt"),
        (["finetune", "--from", str(run), "--data", str(tmp_path), "--run", str(tmp_path / "ft")], run),
    ]
    for args, named in commands:
        assert main(args) == 2, args
        one_line_error(capsys, str(named), target, "conditioners.tempo.target", "--allow-conditioner")
    assert not marker.exists()


def test_a_saved_run_config_naming_a_conditioner_is_refused_unless_allowed(evil_module, tmp_path):
    target, marker = evil_module
    saved = tmp_path / "config.yaml"
    save_config(load_config("tiny"), saved)
    cfg = OmegaConf.load(saved)
    cfg.prior.top.conditioners = {"tempo": {"target": target}}
    saved.write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match=rf"{target}.*prior\.top\.conditioners\.tempo\.target.*from {saved}"):
        load_config(str(saved))
    assert not marker.exists()
    conditioning.allow_conditioners(target)  # what --allow-conditioner does
    assert load_config(str(saved)).prior.top.conditioners.tempo.target == target
    assert not marker.exists()  # allowed, but nothing is imported until a model is built


def test_a_conditioner_named_on_the_command_line_or_allowed_resolves(evil_module, tmp_path, capsys):
    target, marker = evil_module
    ckpt = checkpoint_naming(tmp_path / "prior.ckpt", target)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "x.pt"), "--allow-conditioner", target]) == 0
    assert (tmp_path / "x.pt").is_file() and not marker.exists()  # allowed, and exporting builds no model
    load_config("tiny", [f"prior.top.conditioners={{tempo: {{target: {target}}}}}"])  # typed: allowed
    assert conditioning.conditioner_allowed(target)
    with pytest.raises(Exception, match="not a jukebox_pl Conditioner"):
        conditioning.resolve_target(target)
    assert marker.exists()  # the user chose it: now it is imported


def test_an_already_imported_conditioner_resolves_without_an_allow_list():
    from toy_conditioner import TempoConditioner

    assert conditioning.resolve_target("toy_conditioner.TempoConditioner") is TempoConditioner


# -- 3. import-openai --trust-pickle: the reference's classes, nothing else -----------------------------------


class Call:
    """Unpickling this calls `func(*args)` (a REDUCE of whatever global `func` pickles as)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def payloads(marker: Path) -> dict[str, object]:
    touch = f"touch {marker}"
    return {
        "posix.system": Call(os.system, touch),
        "builtins.exec": Call(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "builtins.eval": Call(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": Call(subprocess.Popen, ["touch", str(marker)]),
        "pathlib.Path.touch": Call(Path.touch, marker),
    }


@pytest.mark.parametrize("trust", [False, True])
def test_import_openai_refuses_payloads_with_or_without_trust_pickle(tmp_path, capsys, trust):
    marker = tmp_path / "payload_ran"
    for name, payload in payloads(marker).items():
        source = tmp_path / f"{name}.pth.tar"
        torch.save({"model": {"x": torch.zeros(2)}, "hps": {"sr": payload}}, source)
        args = ["import-openai", "--out", str(tmp_path / "run"), "--vqvae", str(source)]
        assert main([*args, *(["--trust-pickle"] if trust else [])]) == 2, name
        err = one_line_error(capsys, str(source), "refused")
        assert name.rsplit(".", 1)[-1] in err and "pass --trust-pickle" not in err, err
        assert not marker.exists(), name


# -- 4. safe_load and resuming: every unsafe global is refused, however torch words it --------------------------


def test_safe_load_refuses_every_spelling_never_inviting_an_unsafe_load(tmp_path):
    marker = tmp_path / "payload_ran"
    for name, payload in payloads(marker).items():
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": {}, "x": payload}, path)
        with pytest.raises(UnsafeFileError) as err:
            safe_load(path, "checkpoint")
        text = str(err.value)
        assert f"{path} is refused" in text and "weights_only=False" not in text and "\n" not in text, text
    reduce = tmp_path / "reduce.ckpt"
    torch.save({"x": Call(getattr, 1, "real")}, reduce)  # a REDUCE of a builtin torch does not allow
    with pytest.raises(UnsafeFileError, match=r"reduce\.ckpt is refused.*getattr"):
        safe_load(reduce)
    assert not marker.exists()


def test_a_damaged_file_is_named_without_the_advice_to_load_it_unsafely(tmp_path):
    garbage = tmp_path / "noise.ckpt"
    # fixed bytes: os.urandom sometimes began with what the unpickler reads as an object-building opcode, which is
    # (rightly) refused as unsafe instead of named as unreadable
    garbage.write_bytes(random.Random(0).randbytes(3000))
    with pytest.raises(Exception, match=r"noise\.ckpt is not a readable torch file") as err:
        safe_load(garbage)
    assert "weights_only" not in str(err.value)


def test_a_refused_last_or_numbered_checkpoint_stops_the_resume(tmp_path):
    marker = tmp_path / "payload_ran"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"state_dict": {}}, folder / "step00000002.ckpt")
    torch.save({"x": Call(os.system, f"touch {marker}")}, folder / "last.ckpt")
    with pytest.raises(UnsafeFileError, match=r"last\.ckpt is refused.*posix\.system"):
        resume_checkpoint(folder)  # never skipped as "damaged" in favour of step00000002
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    torch.save({"x": Call(subprocess.Popen, ["touch", str(marker)])}, folder / "step00000004.ckpt")
    with pytest.raises(UnsafeFileError, match=r"step00000004\.ckpt is refused"):
        resume_checkpoint(folder)
    assert not marker.exists()


def test_train_resume_from_a_posix_system_last_ckpt_exits_2(vq_run, tmp_path, capsys):
    last = vq_run / "vqvae_bottom" / "checkpoints" / "last.ckpt"
    original = last.read_bytes()
    marker = tmp_path / "payload_ran"
    try:
        torch.save({"x": Call(os.system, f"touch {marker}")}, last)
        args = ["train", "vqvae", "--level", "bottom", "--run", str(vq_run), "--resume", "trainer.max_steps=2"]
        assert main(args) == 2
        one_line_error(capsys, str(last), "posix.system", "refused")
    finally:
        last.write_bytes(original)
    assert not marker.exists()


def test_every_reading_command_refuses_a_posix_system_file(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Call(os.system, f"touch {marker}")}}, path)
    for args in reading_commands(path, tmp_path):
        assert main(args) == 2, args
        one_line_error(capsys, str(path), "posix.system", "is refused")
    assert not marker.exists()
