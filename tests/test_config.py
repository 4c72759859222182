from pathlib import Path

import pytest
from omegaconf import OmegaConf

from jukebox_pl.cli import main
from jukebox_pl.config import PRESETS, ConfigError, load_config, save_config, to_yaml


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_validate(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert cfg.data.sample_rate in (22050, 44100)
    assert cfg.vqvae.sample_length > 0


def test_jukebox_preset_is_44k_with_bf16():
    cfg = load_config("jukebox")
    assert cfg.data.sample_rate == 44100 and cfg.trainer.precision == "bf16-mixed"


def test_overrides_are_typed_and_applied():
    cfg = load_config("tiny", ["vqvae.batch_size=9", "trainer.devices=2", "data.aug_blend=false"])
    assert cfg.vqvae.batch_size == 9 and cfg.trainer.devices == 2 and cfg.data.aug_blend is False


def test_typo_is_rejected_by_dotted_name_with_suggestion():
    with pytest.raises(ConfigError, match=r"data\.smaple_rate.*did you mean sample_rate"):
        load_config("tiny", ["data.smaple_rate=44100"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"vqvae\.batch_size.*'many'"):
        load_config("tiny", ["vqvae.batch_size=many"])


def test_typo_inside_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("data:\n  sample_rat: 44100\n")
    with pytest.raises(ConfigError, match=r"data\.sample_rat.*mine\.yaml"):
        load_config(str(bad))


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match="known presets: .*jukebox.*small.*tiny"):
        load_config("huge")


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("tiny", ["vqvae.batch_size"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("small", ["seed=3"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = OmegaConf.load(path)
    assert again.seed == 3 and again.data.sample_rate == cfg.data.sample_rate
    assert to_yaml(cfg) == Path(path).read_text()


def test_cli_config_prints_and_rejects(capsys):
    assert main(["config", "--preset", "tiny", "vqvae.batch_size=5"]) == 0
    assert "batch_size: 5" in capsys.readouterr().out
    assert main(["config", "--preset", "tiny", "data.nope=1"]) == 2
    assert "data.nope" in capsys.readouterr().err
