"""Below the loader, config is typed: stages, models and DataModules receive the schema dataclasses, each value is
checked once where it enters, and a setting is followed by name from its YAML key to the attribute that reads it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import jukebox_pl
import jukebox_pl.config.checks as checks
from jukebox_pl.config.loader import ConfigError, command_line_urls, load_config, to_yaml
from jukebox_pl.config.schema import DataConfig, OptimConfig, PriorConfig, RunConfig, TrainerConfig, VQVAEConfig
from jukebox_pl.config.sections import data_config, prior_config, vqvae_config
from jukebox_pl.config.typed import is_checked, plain, run_config
from jukebox_pl.prior.model import JukeboxPrior
from jukebox_pl.training.runner import prepare_stage, stage_request
from jukebox_pl.vqvae.model import VQVAELevelModel

PACKAGE = Path(jukebox_pl.__file__).parent
TINY_VQ = dict(levels=1, downs_t=[2], strides_t=[2], l_bins=16, emb_width=8, width=8, depth=1)


def test_the_loaders_config_becomes_the_schema_dataclasses():
    cfg = run_config(load_config("tiny", ["vqvae.l_bins=64", "prior.top.width=48"]))
    assert isinstance(cfg, RunConfig)
    assert isinstance(cfg.data, DataConfig) and isinstance(cfg.trainer, TrainerConfig)
    assert isinstance(cfg.vqvae, VQVAEConfig) and isinstance(cfg.vqvae.optim, OptimConfig)
    assert isinstance(cfg.prior.top, PriorConfig)
    assert cfg.vqvae.l_bins == 64 and cfg.prior.top.width == 48
    assert isinstance(cfg.vqvae.downs_t, list) and isinstance(cfg.prior.top.conditioners, dict)


def test_the_typed_form_saves_to_the_same_yaml_with_literal_dollar_braces():
    raw = load_config("tiny", [r"data.shards=/music/\${not_a_key}"])
    typed = run_config(raw)
    assert typed.data.shards == "/music/${not_a_key}"
    assert to_yaml(typed) == to_yaml(raw)


def test_urls_typed_on_the_command_line_stay_allowed_in_the_typed_form():
    raw = load_config("tiny", ["data.train_urls=pipe:cat /tmp/a.tar"])
    assert command_line_urls(run_config(raw)) == command_line_urls(raw) == {"pipe:cat /tmp/a.tar"}


def test_a_stage_receives_the_typed_config(tmp_path):
    overrides, asked, name = stage_request("tiny", [], None, "top")
    assert isinstance(asked, RunConfig) and name == "top"
    run = prepare_stage(tmp_path / "run", "vqvae_top", "tiny", overrides, resume=False)
    assert isinstance(run.cfg, RunConfig) and isinstance(run.cfg.vqvae, VQVAEConfig)
    assert (run.dir / "config.yaml").read_text() == to_yaml(run.cfg)


def test_models_and_datamodules_hold_their_sections_dataclass():
    assert isinstance(VQVAELevelModel(TINY_VQ).cfg, VQVAEConfig)
    prior = JukeboxPrior({"arch": "tiny_prior", "labels": False, "lyrics": "none", "attn_order": 2}, 0, 1, 16, 4, 8000)
    assert isinstance(prior.cfg, PriorConfig)
    assert isinstance(data_config(num_workers=0), DataConfig)


def _count_checks(monkeypatch) -> list:
    calls = []
    real = checks.problems

    def counted(tree, at=""):
        calls.append(at)
        return real(tree, at)

    import jukebox_pl.config.loader as loader

    monkeypatch.setattr(loader, "problems", counted)
    return calls


def test_a_checked_section_is_not_checked_again(monkeypatch):
    section = run_config(load_config("tiny")).vqvae
    assert is_checked(section)
    calls = _count_checks(monkeypatch)
    assert vqvae_config(section) is section
    VQVAELevelModel(section, 0)
    assert calls == []


def test_a_section_changed_after_its_check_is_checked_again():
    section = vqvae_config(**TINY_VQ)
    section.l_bins = 0
    assert not is_checked(section)
    with pytest.raises(ConfigError, match="vqvae.l_bins"):
        VQVAELevelModel(section, 0)


def test_a_dataclass_built_in_python_is_checked_where_it_enters():
    with pytest.raises(ConfigError, match="prior.width"):
        prior_config(PriorConfig(width=0))
    with pytest.raises(ConfigError, match="data.num_workers"):
        data_config(DataConfig(num_workers=-1))


def test_hparams_hold_plain_data():
    section = vqvae_config(**TINY_VQ)
    tree = plain(section)
    assert tree == dataclasses.asdict(section) and type(tree) is dict and type(tree["optim"]) is dict
    assert vqvae_config(tree) == section


def test_stages_and_sampling_never_touch_omegaconf():
    """What lies below the loader reads attributes of dataclasses: no `cfg["key"]`, no OmegaConf API."""
    bad = []
    for folder in ("stages", "sampling"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if (module or "").startswith("omegaconf") or any(n.startswith("omegaconf") for n in names):
                    bad.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not bad, bad
