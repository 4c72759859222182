"""Every key of the resolved config takes effect where it is documented: `data.*` in the DataModules, the
per-stage crop keys under `vqvae` / `prior.<level>`, `trainer.*` in the Trainer's arguments."""

from __future__ import annotations

import dataclasses

import pytest

from jukebox_pl.config import ConfigError, load_config
from jukebox_pl.config.schema import DataConfig, TrainerConfig
from jukebox_pl.stages.datamodules import stage_datamodule
from jukebox_pl.training.runner import trainer_kwargs

# a non-default value for every data key (as command-line strings and as the value the DataModule must see)
DATA_VALUES = {
    "shards": None,  # set to the test shards below
    "train_urls": "/nowhere/train-{000000..000001}.tar",
    "val_urls": "/nowhere/val-000000.tar",
    "vocab": None,  # set to the shards' vocab below
    "sample_rate": 22050,
    "num_workers": 3,
    "open_tracks": 5,
    "shuffle_buffer": 7,
    "epoch_length": 99,
    "aug_shift": False,
    "aug_blend": False,
    "val_crops_per_track": 5,
    "max_genres": 4,
    "min_track_seconds": 1.5,
    "max_skips_in_a_row": 77,
    "starve_seconds": 42.0,
    "skip_report_seconds": 9.0,
}


def test_the_value_table_covers_every_data_key():
    assert set(DATA_VALUES) == {f.name for f in dataclasses.fields(DataConfig)}


@pytest.mark.parametrize("stage", ["vqvae", "prior"])
@pytest.mark.parametrize("key", sorted(DATA_VALUES))
def test_each_data_key_reaches_the_stage_datamodule(shards, stage, key):
    value = {"shards": str(shards), "vocab": str(shards / "vocab.json")}.get(key, DATA_VALUES[key])
    cfg = load_config("tiny", [f"data.shards={shards}", f"data.{key}={value}"])
    dm = stage_datamodule(cfg, stage, "top")
    assert getattr(dm.cfg, key) == value
    if key in ("train_urls", "val_urls"):
        dm.setup()  # the explicit URL lists win over the manifest's shards
        assert (dm.train_urls if key == "train_urls" else dm.val_urls)[0].startswith("/nowhere/")
    if key in ("aug_shift", "aug_blend") and stage == "vqvae":
        assert getattr(dm.shard_format, key) is False
    if key == "max_genres":
        dm.setup()
        assert dm.label_spec.max_genres == 4
    if key == "min_track_seconds":
        dm.setup()
        assert dm.label_spec.min_track_samples == int(1.5 * 22050)
    if key == "epoch_length":
        assert dm.batches_per_epoch == -(-99 // dm.crops.batch_size)
    if key in ("max_skips_in_a_row", "starve_seconds", "skip_report_seconds"):
        ledger = dm.skip_policy.ledger(train=True)
        field = {"max_skips_in_a_row": "max_in_a_row", "starve_seconds": "starve_seconds"}.get(key, "report_seconds")
        assert getattr(ledger, field) == value


def test_stage_crop_keys_reach_their_datamodules(shards):
    cfg = load_config(
        "tiny",
        [f"data.shards={shards}", "seed=7", "vqvae.batch_size=5", "vqvae.sample_length=8192", "vqvae.channels=2",
         "prior.top.batch_size=3", "prior.top.n_ctx=64", "prior.top.n_tokens=24", "prior.top.lyrics_vocab=v3",
         "prior.middle.batch_size=6", "prior.middle.n_ctx=128"],
    )  # fmt: skip
    v = stage_datamodule(cfg, "vqvae", "top").crops
    assert (v.batch_size, v.sample_length, v.channels, v.n_lyric_tokens, v.seed) == (5, 8192, 2, 0, 7)
    t = stage_datamodule(cfg, "prior", "top").crops
    assert (t.batch_size, t.sample_length, t.channels, t.n_lyric_tokens, t.lyrics_vocab) == (3, 64 * 128, 1, 24, "v3")
    m = stage_datamodule(cfg, "prior", "middle").crops
    assert (m.batch_size, m.sample_length, m.n_lyric_tokens) == (6, 128 * 32, 0)


def test_every_trainer_key_reaches_the_trainer_arguments():
    values = {"accelerator": "cpu", "devices": 2, "num_nodes": 2, "strategy": "ddp", "precision": "bf16-mixed",
              "max_steps": 11, "max_epochs": 3, "accumulate_grad_batches": 4, "gradient_clip_val": 0.5,
              "log_every_n_steps": 7, "val_check_interval": 0.5, "check_val_every_n_epoch": 2,
              "limit_train_batches": 9, "limit_val_batches": 3, "num_sanity_val_steps": 0, "deterministic": True,
              "benchmark": True, "enable_progress_bar": False, "use_distributed_sampler": True}  # fmt: skip
    # logger and callbacks name classes: build_trainer builds them (tests/test_loggers.py)
    assert set(values) == {f.name for f in dataclasses.fields(TrainerConfig)} - {"logger", "callbacks"}
    cfg = load_config("tiny", [f"trainer.{k}={v}" for k, v in values.items()])
    assert trainer_kwargs(cfg) == values


def test_trainer_max_steps_is_the_one_step_key(tmp_path):
    assert load_config("tiny").trainer.max_steps == 400
    for retired in ("vqvae.max_steps=5", "prior.top.max_steps=5"):
        with pytest.raises(ConfigError, match=rf"'{retired.split('=')[0]}' \(from command line\) no longer exists"):
            load_config("tiny", [retired])
    old = tmp_path / "old.yaml"  # a config.yaml saved by an earlier version: per-stage budgets, trainer's unset
    old.write_text("trainer:\n  max_steps: -1\nvqvae:\n  max_steps: 400\nprior:\n  top:\n    max_steps: 1200\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(old))
    assert str(old) in str(err.value) and "'prior.top.max_steps' = 1200" in str(err.value)
    assert "trainer.max_steps=1200" in str(err.value)
    assert load_config(str(old), ["trainer.max_steps=300"]).trainer.max_steps == 300  # resumes once it is given
    mine = tmp_path / "mine.yaml"
    mine.write_text("trainer:\n  max_steps: 1234\nvqvae:\n  max_steps: 400\n")
    assert load_config(str(mine)).trainer.max_steps == 1234  # the file's own trainer key is the step count


def test_an_older_checkpoints_sections_with_a_step_budget_still_load():
    from jukebox_pl.config.sections import prior_config, vqvae_config

    assert vqvae_config({"max_steps": 400, "l_bins": 64}).l_bins == 64
    assert prior_config({"arch": "tiny_prior", "max_steps": 1200}).arch == "tiny_prior"
