"""`trainer.logger` and `trainer.callbacks` take Lightning loggers and callbacks by class path (LightningCLI's
`{class_path, init_args}`): several loggers at once, TensorBoard the default; classes outside Lightning's own
modules only when typed on this command line or allowed; every mistake one line naming the key and the class."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from cli_output import one_line_error
from omegaconf import OmegaConf
from prior_settings import VQVAE
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from jukebox_pl.cli import main
from jukebox_pl.config import conditioner_targets, load_config
from jukebox_pl.config.class_specs import CALLBACK, LOGGER, full_path
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.config.typed import run_config
from jukebox_pl.training.runner import StageRun, build_trainer, trainer_kwargs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = VQVAE + [
    "data.epoch_length=4", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0", "run.log_audio_every_n_steps=0", "trainer.max_steps=1",
    "trainer.log_every_n_steps=1",
]  # fmt: skip
CSV_AND_TB = (
    "trainer.logger=[{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {save_dir: csv}},"
    " {class_path: tensorboard, init_args: {name: tb}}]"
)


@pytest.fixture(autouse=True)
def nothing_allowed(monkeypatch):
    """Every test starts with no class allowed (the allow-list is per process) and toy_callback not imported."""
    monkeypatch.setattr(conditioner_targets, "_ALLOWED", set())
    monkeypatch.delitem(sys.modules, "toy_callback", raising=False)


def stage_trainer(tmp_path: Path, *overrides: str):
    """The Trainer `build_trainer` makes for a stage folder, without training."""
    run = StageRun(run_config(load_config("tiny", list(overrides))), tmp_path / "vqvae_top", None)
    return build_trainer(run)


def test_two_loggers_and_callbacks_from_the_command_line_run_then_a_resume_from_the_file_is_refused(
    shards, tmp_path, capsys
):
    run, marker = tmp_path / "run", tmp_path / "steps.txt"
    mine = f"{{class_path: toy_callback.StepMarker, init_args: {{path: {marker}}}}}"
    callbacks = f"trainer.callbacks=[LearningRateMonitor, {mine}]"
    args = ["train", "vqvae", "--level", "top", "--run", str(run), "--data", str(shards)]
    assert main([*args, *TINY, CSV_AND_TB, callbacks]) == 0, capsys.readouterr().err
    stage = run / "vqvae_top"
    metrics = next((stage / "csv").rglob("metrics.csv"))  # save_dir `csv` lies inside the stage folder
    rows = list(csv.DictReader(metrics.open()))
    assert any(k.startswith("train/") and "loss" in k for k in rows[0]), rows[0].keys()
    assert any(row.get("train/loss") not in (None, "") for row in rows), rows
    assert any(k.startswith("lr-") for k in rows[0]), rows[0].keys()  # LearningRateMonitor logged to both loggers
    assert list((stage / "tb").rglob("events.out.tfevents.*"))
    assert marker.read_text().split() == ["1"]  # the user's callback ran, once per step
    # the saved config.yaml names the user's callback: resuming without typing it again is refused, before import
    conditioner_targets._ALLOWED.clear()
    sys.modules.pop("toy_callback", None)
    saved = (stage / "config.yaml").read_text()
    assert main([*args, "--resume", "trainer.max_steps=2"]) == 2
    one_line_error(
        capsys, "trainer.callbacks.1", "toy_callback.StepMarker", str(stage / "config.yaml"), "--allow-class"
    )
    assert "toy_callback" not in sys.modules
    assert (stage / "config.yaml").read_text() == saved
    assert marker.read_text().split() == ["1"]


def test_the_loss_reaches_a_csv_logger(shards, tmp_path):
    from jukebox_pl.stages.train_vqvae import train_vqvae

    logger = "trainer.logger=[{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {save_dir: csv}}]"
    train_vqvae(tmp_path / "run", "top", "tiny", str(shards), [*TINY, logger])
    stage = tmp_path / "run" / "vqvae_top"
    rows = list(csv.DictReader(next((stage / "csv").rglob("metrics.csv")).open()))
    assert [float(r["train/loss"]) for r in rows if r.get("train/loss")], rows
    assert not (stage / "logs").exists()  # TensorBoard only when asked for or by default


def test_tensorboard_stays_the_default_and_false_turns_logging_off(tmp_path):
    trainer = stage_trainer(tmp_path)
    assert [type(lg) for lg in trainer.loggers] == [TensorBoardLogger]
    assert Path(trainer.logger.log_dir) == tmp_path / "vqvae_top" / "logs"
    assert stage_trainer(tmp_path, "trainer.logger=false").loggers == []


def test_short_names_relative_folders_and_init_args(tmp_path):
    trainer = stage_trainer(
        tmp_path,
        "trainer.logger=[csv, {class_path: CSVLogger, init_args: {save_dir: /abs/elsewhere, name: x}}]",
        "trainer.callbacks={class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {dirpath: best}}",
    )
    first, second = trainer.loggers
    assert isinstance(first, CSVLogger) and Path(first.save_dir) == tmp_path / "vqvae_top"
    assert Path(second.save_dir) == Path("/abs/elsewhere") and second.name == "x"
    mine = [c for c in trainer.callbacks if getattr(c, "dirpath", None) == str(tmp_path / "vqvae_top" / "best")]
    assert len(mine) == 1  # the unified package's spelling, built as the pytorch_lightning class the Trainer takes
    assert full_path(LOGGER, "mlflow") == "pytorch_lightning.loggers.MLFlowLogger"
    assert (
        full_path(CALLBACK, "lightning.pytorch.callbacks.EarlyStopping") == "pytorch_lightning.callbacks.EarlyStopping"
    )
    assert "logger" not in trainer_kwargs(run_config(load_config("tiny", ["trainer.logger=csv"])))


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("trainer.logger={class_path: pytorch_lightning.loggers.NoSuchLogger}", ["trainer.logger", "NoSuchLogger"]),
        ("trainer.logger=CSVLoger", ["trainer.logger", "CSVLoger", "did you mean CSVLogger"]),
        ("trainer.logger=[csv, no_such_module.Logger]", ["trainer.logger.1", "no_such_module.Logger", "no module"]),
        ("trainer.callbacks=pytorch_lightning.loggers.CSVLogger", ["trainer.callbacks", "not a Lightning callback"]),
        ("trainer.logger=collections.OrderedDict", ["trainer.logger", "collections.OrderedDict", "not a Lightning"]),
        ("trainer.logger={class_path: csv, init_args: {save_dri: x}}", ["trainer.logger.init_args.save_dri",
                                                                        "did you mean save_dir"]),
        ("trainer.callbacks={class_path: EarlyStopping}", ["trainer.callbacks", "needs init_args.monitor"]),
        ("trainer.logger={class_path: csv, init_arg: {}}", ["trainer.logger.init_arg", "class_path and init_args"]),
        ("trainer.logger=3", ["trainer.logger", "true (TensorBoard), false"]),
        ("trainer.callbacks=true", ["trainer.callbacks"]),
    ],
)  # fmt: skip
def test_a_wrong_class_or_argument_is_one_line_naming_the_key(tmp_path, capsys, override, names):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    for name in names:
        assert name in str(err.value), (name, str(err.value))
    run = tmp_path / "run"
    assert main(["train", "vqvae", "--level", "top", "--run", str(run), override]) == 2
    one_line_error(capsys, names[0])
    assert not run.exists()  # refused at config load, before any run folder is written


@pytest.mark.parametrize(("short", "package"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_service_logger_without_its_package_says_what_to_install(monkeypatch, short, package):
    monkeypatch.setitem(sys.modules, package, None)  # import machinery: "not installed"
    with pytest.raises(ConfigError, match=rf"trainer.logger.*needs the {package} package.*pip install {package}"):
        load_config("tiny", [f"trainer.logger={short}"])


def test_a_file_may_name_lightning_classes_but_not_others_unless_allowed(tmp_path):
    preset = tmp_path / "mine.yaml"
    lightning = {"logger": {"class_path": "pytorch_lightning.loggers.CSVLogger"}, "callbacks": ["LearningRateMonitor"]}
    preset.write_text(OmegaConf.to_yaml({"trainer": lightning}))
    cfg = run_config(load_config(str(preset)))
    assert cfg.trainer.callbacks == ["LearningRateMonitor"]
    mine = {"callbacks": [{"class_path": "toy_callback.StepMarker", "init_args": {"path": str(tmp_path / "m")}}]}
    preset.write_text(OmegaConf.to_yaml({"trainer": mine}))
    with pytest.raises(
        ConfigError, match=rf"'toy_callback.StepMarker' \(config key trainer.callbacks.0, from {preset}\)"
    ):
        load_config(str(preset))
    assert "toy_callback" not in sys.modules  # refused before its module was imported
    conditioner_targets.allow_classes("toy_callback.StepMarker")  # what --allow-class does
    trainer = StageRun(run_config(load_config(str(preset))), tmp_path / "vqvae_top", None)
    assert [type(c).__name__ for c in build_trainer(trainer).callbacks].count("StepMarker") == 1


def test_a_later_source_replaces_a_logger_entry_whole(tmp_path):
    preset = tmp_path / "mine.yaml"
    tb = {"class_path": "tensorboard", "init_args": {"name": "a", "default_hp_metric": False}}
    preset.write_text(
        OmegaConf.to_yaml({"trainer": {"logger": tb, "callbacks": {"class_path": "LearningRateMonitor"}}})
    )
    cfg = run_config(load_config(str(preset), ["trainer.logger={class_path: csv, init_args: {name: b}}"]))
    assert cfg.trainer.logger == {"class_path": "csv", "init_args": {"name": "b"}}  # no default_hp_metric merged in
    cfg = run_config(load_config(str(preset), ["trainer.callbacks=[LearningRateMonitor, ModelSummary]"]))
    assert cfg.trainer.callbacks == ["LearningRateMonitor", "ModelSummary"]  # a list over a mapping is fine


def test_the_allow_list_still_serves_conditioners():
    conditioner_targets.allow_conditioners("mine.Tempo")
    assert conditioner_targets.conditioner_allowed("mine.Tempo") and conditioner_targets.class_allowed("mine.Tempo")
    assert not conditioner_targets.class_allowed("other.Thing")
    assert conditioner_targets.class_allowed("pytorch_lightning.loggers.CSVLogger", LOGGER.trusted)
    assert not conditioner_targets.class_allowed("pytorch_lightning.loggersX.Evil", LOGGER.trusted)
