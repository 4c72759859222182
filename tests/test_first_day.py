"""A new user's first day: shards made at the preset's rate, a mismatch refused before anything is printed, built or
written, a refused start leaving no folder, a short config summary, `--help` with defaults, a sensible epoch count
in the progress bar, and a base prior scored on a new artist's songs before fine-tuning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from audio_fixtures import new_artist_shards
from cli_output import one_line_error
from prior_settings import COMMON, PRIOR, VQVAE

from jukebox_pl.cli import build_parser, main
from jukebox_pl.data.prep import PrepOptions, prepare_shards
from jukebox_pl.training.callbacks import epoch_total

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards_44k(music, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards44") / "out"
    prepare_shards(PrepOptions(src=str(music["root"]), out=str(out), metadata=str(music["metadata"]), sr=44100,
                               val_fraction=0.4, shard_tracks=8, workers=1), progress=False)  # fmt: skip
    return out


def test_prep_with_a_preset_makes_shards_at_its_rate(music, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["prep", "--src", str(music["root"]), "--out", str(out), "--preset", "tiny", "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((out / "manifest.json").read_text())["sample_rate"] == 22050
    assert "22050 Hz, the data.sample_rate of --preset tiny" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one rate or the other, never both
        build_parser().parse_args(["prep", "--src", "a", "--out", "b", "--preset", "tiny", "--sr", "44100"])


def test_shards_at_another_rate_are_refused_before_any_output(shards_44k, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        code = main(["train", "vqvae", "--level", "top", "--data", str(shards_44k), "--run", str(run)])
    assert code == 2
    one_line_error(capsys, str(shards_44k), "44100 Hz", "22050 Hz", "--preset tiny", "data.sample_rate=44100")
    assert not run.exists(), "a refused start leaves no run folder"
    assert "config of" not in caplog.text and "Total params" not in caplog.text


def test_a_start_refused_after_its_folder_was_made_leaves_none(shards, tmp_path, capsys):
    """A refusal found once the stage is set up (here: no trained VQ-VAE for a prior) removes what it made."""
    run = tmp_path / "run"
    assert main(["train", "prior", "--level", "top", "--data", str(shards), "--run", str(run)]) == 2
    one_line_error(capsys)
    assert not run.exists()
    kept = tmp_path / "kept"
    (kept / "notes").mkdir(parents=True)
    assert main(["train", "prior", "--level", "top", "--data", str(shards), "--run", str(kept)]) == 2
    assert sorted(p.name for p in kept.iterdir()) == ["notes"], "a folder that existed before is left as it was"


def test_finetune_on_shards_at_another_rate_leaves_no_run(shards_44k, tmp_path, capsys):
    base = tmp_path / "base" / "prior_top"
    (base / "checkpoints").mkdir(parents=True)
    (base / "checkpoints" / "last.ckpt").write_bytes(b"not read: the rate is checked first")
    from jukebox_pl.config import load_config, save_config

    save_config(load_config("tiny"), base / "config.yaml")
    new = tmp_path / "new"
    assert main(["finetune", "--from", str(tmp_path / "base"), "--data", str(shards_44k), "--run", str(new)]) == 2
    one_line_error(capsys, "44100 Hz", "22050 Hz", str(base / "config.yaml"))
    assert not new.exists()


def test_a_stage_prints_what_differs_from_its_preset_and_print_config_prints_all(shards, tmp_path, caplog):
    from jukebox_pl.stages.train_vqvae import train_vqvae

    settings = ["vqvae.width=8", "vqvae.depth=1", "vqvae.l_bins=16", "trainer.max_steps=1", "data.epoch_length=8",
                "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        train_vqvae(tmp_path / "run", "top", "tiny", str(shards), settings)
    text = caplog.text
    assert "config of vqvae_top (new run): preset tiny with" in text
    assert "vqvae.width = 8 (was 32)" in text and f"data.shards = '{shards}'" in text
    assert "vqvae.emb_width" not in text, "unchanged keys are not listed"
    assert str(tmp_path / "run" / "vqvae_top" / "config.yaml") in text and "--print-config" in text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_vqvae(tmp_path / "run2", "top", "tiny", str(shards), settings, print_config=True)
    assert "resolved config of vqvae_top" in caplog.text and "  emb_width: " in caplog.text


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = capsys.readouterr().out
    assert "default: 0.99" in out and "default: ancestral" in out and "(default: 10.0)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_the_epoch_count_of_a_run_bounded_by_steps():
    assert epoch_total(-1, 100, 40) == 3  # Lightning's own bar reads "Epoch 0/-2" here
    assert epoch_total(None, 100, 40, accumulate=2) == 5
    assert epoch_total(4, 100, 40) == 4
    assert epoch_total(-1, -1, 40) is None and epoch_total(-1, 10, float("inf")) is None


@pytest.mark.slow
def test_a_base_prior_is_scored_on_new_names_and_finetune_records_it(shards, music, tmp_path, capsys):
    """`evaluate` of a base prior on a new artist's shards reads the new name as the unknown artist (and says
    so); `finetune` writes that "before" figure and the best one after into finetune.json."""
    from jukebox_pl.stages.train_prior import train_prior
    from jukebox_pl.stages.train_vqvae import train_vqvae

    base = tmp_path / "base"
    train_vqvae(base, "top", "tiny", str(shards), VQVAE + COMMON)
    train_prior(base, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    new_shards = new_artist_shards(music, tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--from", str(base), "--data", str(new_shards), "--json"]) == 0
    captured = capsys.readouterr()
    before = json.loads(captured.out.strip().splitlines()[-1])
    assert before["music_bits_per_token"] > 0
    assert "Zed Newcomer" in captured.err and "unknown label" in captured.err
    assert "/tmp" not in captured.err.replace(str(tmp_path), "RUN"), "no temporary path is named"

    new = tmp_path / "new"
    assert main(["finetune", "--from", str(base), "--data", str(new_shards), "--run", str(new), *COMMON,
                 "trainer.max_steps=2", "trainer.val_check_interval=1"]) == 0  # fmt: skip
    report = json.loads((new / "prior_top" / "finetune.json").read_text())
    assert report["base_val"]["music_bits_per_token"] == pytest.approx(before["music_bits_per_token"], rel=1e-5)
    assert "Zed Newcomer" in report["added"]["artists"] and "music_bits_per_token" in report["best_val"]
    shutil.rmtree(new)
