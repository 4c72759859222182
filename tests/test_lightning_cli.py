"""Lightning's own LightningCLI drives our classes from a YAML written like Lightning's docs, with either package;
a class of the other package is refused in one line naming the one to use; frozen sub-modules raise no eval-mode
warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import pytorch_lightning as pl
import torch
import yaml

from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.data.datamodule import AudioDataModule
from jukebox_pl.errors import RefusedError
from jukebox_pl.lightning_cli import main
from jukebox_pl.prior.lightning import PriorModule

pytestmark = pytest.mark.usefixtures("one_thread")

VQ = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], l_bins=16, emb_width=8, width=8, depth=1, bandwidth_batches=1)
EVAL_WARNING = "module(s) in eval mode at the start of training"


def trainer_section(root: Path) -> dict:
    return dict(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1, default_root_dir=str(root),
    )  # fmt: skip


def vqvae_yaml(tmp_path: Path, shards: Path, model: str = "jukebox_pl.VQVAELevel", data: str = "") -> Path:
    config = {
        "seed_everything": 0,
        "trainer": trainer_section(tmp_path / "root"),
        "model": {"class_path": model, "init_args": {"vqvae": VQ, "level": "top"}},
        "data": {
            "class_path": data or "jukebox_pl.AudioDataModule",
            "init_args": {"cfg": {"shards": str(shards), "epoch_length": 4}, "sample_length": 4096, "batch_size": 2},
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "package, model, data",
    [
        ("pytorch_lightning", "jukebox_pl.VQVAELevel", "jukebox_pl.AudioDataModule"),
        ("lightning", "jukebox_pl.unified_lightning.VQVAELevel", "jukebox_pl.unified_lightning.AudioDataModule"),
        ("lightning", "VQVAELevel", "AudioDataModule"),  # short names resolve within the chosen package
    ],
)
def test_one_step_vqvae_fit_from_a_lightning_style_yaml(shards, tmp_path, capsys, package, model, data):
    run_yaml = vqvae_yaml(tmp_path, shards, model, data)
    assert main(["--lightning-package", package, "fit", "--config", str(run_yaml)]) == 0, capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "root" / "config.yaml").read_text())  # LightningCLI's own record
    assert saved["model"]["init_args"]["vqvae"]["l_bins"] == 16 and saved["trainer"]["max_steps"] == 1


def test_the_cli_object_holds_our_classes_trained_one_step(shards, tmp_path):
    from jukebox_pl.lightning_cli import run

    run_yaml = vqvae_yaml(tmp_path, shards, "VQVAELevel", "AudioDataModule")
    cli = run(["--lightning-package=lightning", "fit", "--config", str(run_yaml)])
    assert isinstance(cli.model, L.LightningModule) and not isinstance(cli.model, pl.LightningModule)
    assert cli.trainer.global_step == 1 and bool(cli.model.bandwidth_ready)
    assert cli.datamodule.crops.sample_length == 4096 and cli.datamodule.cfg.epoch_length == 4


def test_prior_one_step_fit_from_code_shards(shards, tmp_path, capsys):
    from test_code_shards import tiny_vqvae

    from jukebox_pl.stages.encode_shards import encode_shards

    codes = tmp_path / "codes"
    encode_shards(shards, codes, tiny_vqvae(0))
    prior = dict(
        arch="tiny_prior", n_ctx=32, blocks=4, width=32, depth=2, prime_blocks=4, lyrics="none", y_bins=[20, 20]
    )
    config = {
        "trainer": trainer_section(tmp_path / "root"),
        "model": {"class_path": "jukebox_pl.PriorModule",
                  "init_args": {"prior": prior, "level": "top", "vqvae_cfg": VQ, "sample_rate": 22050}},
        "data": {"class_path": "jukebox_pl.CodeDataModule",
                 "init_args": {"cfg": {"shards": str(codes), "epoch_length": 4}, "level": "top", "n_ctx": 32,
                               "batch_size": 2}},
    }  # fmt: skip
    path = tmp_path / "prior.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0, capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "root" / "config.yaml").read_text())
    assert saved["model"]["init_args"]["prior"]["arch"] == "tiny_prior"  # the arch is honoured, not overwritten


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.init_args.vqvae.l_bins=-1"], "'vqvae.l_bins' = -1 is not allowed: must be an integer >= 1"),
        (["--data.batch_size=0"], "batch_size must be a positive integer, got 0"),
        (["--trainer.max_steps=abc"], "trainer.max_steps"),
        (["--model", "os.system"], "model.class_path 'os.system' is refused"),
        (["--data.init_args.allow_urls=[pipe:cat x]"], "--data.init_args.allow_urls cannot be set"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(shards, tmp_path, capsys, extra, expected):
    run_yaml = vqvae_yaml(tmp_path, shards)
    assert main(["fit", "--config", str(run_yaml), *extra]) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "root").exists()  # refused before anything ran


def test_a_class_of_the_other_package_is_named_in_one_line(shards, tmp_path, capsys):
    run_yaml = vqvae_yaml(tmp_path, shards)  # jukebox_pl.VQVAELevel: a pytorch_lightning class
    assert main(["--lightning-package", "lightning", "fit", "--config", str(run_yaml)]) == 2
    line = one_line_error(capsys)
    assert "jukebox_pl.AudioDataModule is a pytorch_lightning class; with a lightning.Trainer use " in line
    assert "use jukebox_pl.unified_lightning.AudioDataModule" in line
    run_yaml = vqvae_yaml(tmp_path, shards, data="AudioDataModule")
    assert main(["--lightning-package", "lightning", "fit", "--config", str(run_yaml)]) == 2
    assert "use jukebox_pl.unified_lightning.VQVAELevel" in one_line_error(capsys)
    run_yaml = vqvae_yaml(tmp_path, shards, data="jukebox_pl.unified_lightning.AudioDataModule")
    assert main(["fit", "--config", str(run_yaml)]) == 2
    assert "AudioDataModule is a lightning class; with a pytorch_lightning.Trainer use " in one_line_error(capsys)


def test_a_python_datamodule_of_the_other_package_is_refused_naming_the_class(shards):
    from jukebox_pl import unified_lightning as unified

    module = unified.VQVAELevel(vqvae_config(**VQ), "top", 22050)
    dm = AudioDataModule(shards=str(shards), sample_length=4096, batch_size=2, epoch_length=4)
    quiet = dict(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RefusedError) as err:
        L.Trainer(**quiet).fit(module, datamodule=dm)
    assert str(err.value).startswith(
        "AudioDataModule is a pytorch_lightning class; with a lightning.Trainer use "
        "jukebox_pl.unified_lightning.AudioDataModule"
    )
    from jukebox_pl import VQVAELevel

    reverse = unified.AudioDataModule(shards=str(shards), sample_length=4096, batch_size=2, epoch_length=4)
    with pytest.raises(RefusedError, match=r"with a pytorch_lightning.Trainer use jukebox_pl.AudioDataModule"):
        pl.Trainer(**quiet).fit(VQVAELevel(vqvae_config(**VQ), "top", 22050), datamodule=reverse)


def prior_with_ema() -> PriorModule:
    torch.manual_seed(0)
    prior = prior_config(arch="tiny_prior", n_ctx=32, blocks=4, width=32, n_tokens=8, prime_blocks=4, lyrics="none",
                         attn_order=2, depth=2, ema_decay=0.99)  # fmt: skip
    return PriorModule(prior, "top", vqvae_config(**VQ), 22050, y_bins=(3, 4))


def fit_one_step(module: pl.LightningModule) -> list[str]:
    batch = {"codes": torch.randint(0, 16, (2, 32)), "artist": torch.tensor([1, 2]), "genres": torch.tensor([[1], [2]]),
             "total_length": torch.tensor([22050 * 30] * 2), "offset": torch.tensor([0, 22050])}  # fmt: skip
    loader = torch.utils.data.DataLoader([batch], batch_size=None)
    t = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit(module, train_dataloaders=loader)
    assert t.global_step == 1
    return [str(w.message) for w in caught]


def test_the_frozen_ema_copy_stays_in_eval_mode_without_lightnings_warning():
    module = prior_with_ema()
    assert not module.ema_model.training and not module.train().ema_model.training and module.model.training
    assert not [m for m in fit_one_step(module) if EVAL_WARNING in m]
    assert not module.ema_model.training
    assert not [f for f in warnings.filters if f[1] is not None and "eval mode" in f[1].pattern]  # filter removed


def test_a_module_left_in_eval_mode_by_mistake_is_still_warned_about():
    module = prior_with_ema()
    module.model.eval()  # not frozen: Lightning's warning is the user's to see
    assert [m for m in fit_one_step(module) if EVAL_WARNING in m]


def test_the_shipped_example_config_fits_one_step(shards, tmp_path, capsys):
    """configs/lightning_cli/vqvae_top.yaml (what the README shows) runs as written, with shards and a step
    count given on the command line as a LightningCLI user would."""
    example = Path(__file__).parents[1] / "configs" / "lightning_cli" / "vqvae_top.yaml"
    args = ["fit", "--config", str(example), "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}", f"--data.init_args.cfg.shards={shards}",
            "--data.init_args.cfg.epoch_length=12", "--data.init_args.batch_size=2",
            "--model.init_args.vqvae.bandwidth_batches=1"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err[-2000:]
