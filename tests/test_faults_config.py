"""Hostile or mistaken configs are refused in one line naming the file or key, before anything runs.

Resolver calls (`${oc.env:...}`) never resolve and never reach a saved config; YAML type tags are refused
without being constructed; every numeric key has a range (jukebox_pl.config.checks) checked after merging,
also when a run's saved config.yaml is loaded again; multi-value CLI flags do not swallow overrides.
"""

from __future__ import annotations

import dataclasses
import os
import typing
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from jukebox_pl import cli
from jukebox_pl.config import ConfigError, load_config, save_config
from jukebox_pl.config.checks import CROSS_RULES, RULES, rule_for
from jukebox_pl.config.schema import PriorLevels, RunConfig
from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.data.datamodule import data_config

HOME = os.environ.get("HOME", "/root")


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message, message
    return message


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- interpolation: references inside the config only -------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["${oc.env:HOME}", "${oc.env:HOME,/x}", "prefix-${oc.env:HOME}", '${oc.decode:"5"}', "${oc.select:seed}"],
)
def test_a_resolver_in_an_override_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [f"data.shards={value}"])
    message = one_line(err)
    assert "'data.shards'" in message and "command line" in message and "resolver" in message
    assert HOME not in message.replace(value, "")


def test_a_resolver_in_a_config_file_is_refused_naming_the_key_and_file(tmp_path):
    mine = write(tmp_path, "vqvae:\n  optim:\n    lr: 1.0e-3\ndata:\n  shards: ${oc.env:HOME}/music\n")
    with pytest.raises(ConfigError, match=r"'data\.shards' \(from .*mine\.yaml\).*'oc\.env'") as err:
        load_config(str(mine))
    one_line(err)


def test_a_registered_resolver_is_never_called(tmp_path):
    calls = []
    with warnings.catch_warnings():  # OmegaConf 2.4 renames it; 2.3 has only this name
        warnings.simplefilter("ignore", UserWarning)
        OmegaConf.register_new_resolver("spy_on_me", lambda *a: calls.append(a) or "leaked")
    try:
        with pytest.raises(ConfigError, match="'spy_on_me'"):
            load_config("tiny", ["data.vocab=${spy_on_me:x}"])
        with pytest.raises(ConfigError, match="'spy_on_me'"):
            load_config(str(write(tmp_path, "data:\n  vocab: ${spy_on_me:y}\n")))
        with pytest.raises(ConfigError, match=r"'prior\.lyrics_vocab'.*'spy_on_me'"):
            prior_config({"arch": "tiny_prior", "lyrics_vocab": "${spy_on_me:z}"})  # e.g. a checkpoint's hparams
        with pytest.raises(ConfigError, match=r"'data\.vocab'.*'spy_on_me'"):
            data_config({"vocab": "${spy_on_me:w}"})
    finally:
        OmegaConf.clear_resolver("spy_on_me")
    assert calls == []


def test_a_refused_resolver_leaves_no_saved_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "vqvae", "--level", "top", "--run", str(run), "data.shards=${oc.env:HOME}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'data.shards'" in err[0] and "oc.env" in err[0]
    assert not run.exists() or not list(run.rglob("config.yaml"))


def test_references_to_other_keys_still_work_and_are_saved_resolved(tmp_path):
    mine = write(tmp_path, "prior:\n  top:\n    arch: tiny_prior\n    optim:\n      lr: ${vqvae.optim.lr}\n")
    cfg = load_config(str(mine), ["vqvae.optim.lr=0.00125", "data.shards=/data/${preset}"])
    assert cfg.prior.top.optim.lr == 0.00125 and cfg.data.shards == "/data/mine"
    saved = save_config(cfg, tmp_path / "run" / "config.yaml").read_text()
    assert "${" not in saved and "lr: 0.00125" in saved
    again = load_config(str(tmp_path / "run" / "config.yaml"))
    assert again.prior.top.optim.lr == 0.00125


def test_an_escaped_interpolation_is_a_literal_string_also_when_saved_and_loaded_again(tmp_path):
    cfg = load_config("tiny", [r"data.train_urls=cat \${oc.env:HOME}", r"data.val_urls=a\\\${x}"])
    assert cfg.data.train_urls == "cat ${oc.env:HOME}" and cfg.data.val_urls == r"a\${x}"
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert HOME not in saved.read_text()
    again = load_config(str(saved))
    assert again.data.train_urls == "cat ${oc.env:HOME}" and again.data.val_urls == r"a\${x}"


def test_a_broken_interpolation_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.shards") as err:
        load_config(str(write(tmp_path, "data:\n  shards: a${b\n")))
    one_line(err)
    with pytest.raises(ConfigError, match="nowhere") as err:
        load_config("tiny", ["data.shards=${nowhere.at_all}"])
    one_line(err)


def test_the_presets_use_no_resolvers():
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.rglob("*.yaml")):
        assert "${" not in path.read_text(), path


# -- YAML files: plain data only --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        '!!python/object/apply:subprocess.call [["touch", "{marker}"]]',
        "!!python/name:os.system",
        "!!python/object/new:pathlib.Path ['{marker}']",
        "!!python/module:os",
        "!!binary aGVsbG8=",
        "!custom {marker}",
    ],
)
def test_a_yaml_type_tag_is_refused_in_one_line_and_never_constructed(tmp_path, payload):
    marker = tmp_path / "PWNED"
    mine = write(tmp_path, "seed: 1\ndata:\n  shards: " + payload.format(marker=marker) + "\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml, line 3: the YAML tag .* is not allowed") as err:
        load_config(str(mine))
    one_line(err)
    assert not marker.exists()


def test_a_yaml_tag_in_an_override_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(ConfigError, match=r"override 'data\.shards=!!python") as err:
        load_config("tiny", [f'data.shards=!!python/object/apply:os.system ["touch {marker}"]'])
    one_line(err)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", r"mine\.yaml must hold `key: value` lines \(a mapping\), not a list"),
        ("just words\n", r"mine\.yaml must hold .* not the single value 'just words'"),
        ("42\n", r"mine\.yaml must hold .* not the single value '42'"),
        ("data: [1, 2\n", r"mine\.yaml is not valid YAML: .*\(line 2, column 1\)"),
        ("data:\n  shards: x\n bad indent: 1\n", r"mine\.yaml is not valid YAML: .*line 3"),
        ("seed: 1\n---\nseed: 2\n", r"mine\.yaml is not valid YAML: .*single document"),
        ("seed: 1\nseed: 2\n", r"mine\.yaml is not a valid config: .*duplicate key seed \(line 2"),
        ("a: &x [*x]\n", r"mine\.yaml is not a valid config: .*recursive"),
        ("seed: \x00\n", r"mine\.yaml is not valid YAML"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_one_line(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(str(write(tmp_path, text)))
    one_line(err)


def test_an_empty_file_is_an_empty_config(tmp_path):
    assert load_config(str(write(tmp_path, "# nothing set here\n"))).vqvae.batch_size == 4


def test_an_unreadable_file_is_one_line(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml cannot be read") as err:
        load_config(str(mine))
    one_line(err)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("=5", r"overrides must look like key=value"),
        ("+seed=1", r"overrides must look like key=value"),
        ("seed=[1", r"override 'seed=\[1' is not a valid key=value: .*line"),
        ("vqvae.downs_t.0=5", r"'vqvae\.downs_t' \(from command line\) is a mapping, but the schema holds a list"),
        ("vqvae.optim=[1]", r"'vqvae\.optim' \(from command line\) is a list, but the schema holds a mapping"),
    ],
)
def test_odd_override_words_are_one_line(override, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_config("tiny", [override])
    one_line(err)


def test_the_cli_and_the_loader_agree_on_what_an_override_is():
    from jukebox_pl.config.loader import OVERRIDE

    assert cli.OVERRIDE_WORD.pattern == OVERRIDE.pattern


# -- value ranges ------------------------------------------------------------------------------------------


def test_negative_max_steps_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["trainer.max_steps=-5"])
    assert one_line(err) == (
        "config key 'trainer.max_steps' = -5 (from command line) is not allowed: must be -1 or an integer >= 1"
    )


@pytest.mark.parametrize("key", ["vqvae.batch_size", "prior.top.batch_size", "prior.bottom.batch_size"])
def test_a_batch_size_of_zero_is_refused(key):
    with pytest.raises(ConfigError, match=rf"^config key '{key}' = 0 .*must be an integer >= 1$") as err:
        load_config("tiny", [f"{key}=0"])
    one_line(err)


@pytest.mark.parametrize("value", ["0", "-0.001", "inf", "-inf", "nan", ".nan"])
@pytest.mark.parametrize("key", ["vqvae.optim.lr", "prior.middle.optim.lr"])
def test_a_learning_rate_must_be_positive_and_finite(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' = .* must be a finite number > 0") as err:
        load_config("tiny", [f"{key}={value}"])
    one_line(err)


def test_a_bad_value_in_a_config_file_names_the_file(tmp_path):
    mine = write(tmp_path, "vqvae:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"'vqvae\.batch_size' = 0 \(from .*mine\.yaml\)"):
        load_config(str(mine))


# (override, the key named, what the message says is allowed)
REFUSED = [
    ("seed=-1", "seed", "an integer in [0, 2147483647]"),
    ("data.sample_rate=0", "data.sample_rate", "an integer >= 1"),
    ("data.num_workers=-1", "data.num_workers", "an integer >= 0"),
    ("data.open_tracks=0", "data.open_tracks", "an integer >= 1"),
    ("data.shuffle_buffer=-2", "data.shuffle_buffer", "an integer >= 0"),
    ("data.epoch_length=0", "data.epoch_length", "an integer >= 1"),
    ("data.val_crops_per_track=0", "data.val_crops_per_track", "an integer >= 1"),
    ("data.max_genres=0", "data.max_genres", "an integer >= 1"),
    ("data.min_track_seconds=-1", "data.min_track_seconds", "a finite number >= 0"),
    ("trainer.devices=0", "trainer.devices", "-1 (all)"),
    ("trainer.devices=[]", "trainer.devices", "a non-empty list"),
    ("trainer.num_nodes=0", "trainer.num_nodes", "an integer >= 1"),
    ("trainer.max_steps=0", "trainer.max_steps", "-1 or an integer >= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs", "null or -1 or an integer >= 1"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches", "an integer >= 1"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val", "null or a finite number >= 0"),
    ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val", "null or a finite number >= 0"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps", "an integer >= 0"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval", "an integer >= 1 (batches)"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval", "a number in (0, 1]"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch", "null or an integer >= 1"),
    ("trainer.limit_train_batches=-1", "trainer.limit_train_batches", "a number in [0, 1]"),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches", "a number in [0, 1]"),
    ("trainer.num_sanity_val_steps=-2", "trainer.num_sanity_val_steps", "an integer >= -1"),
    ("run.checkpoint_every_n_steps=0", "run.checkpoint_every_n_steps", "an integer >= 1"),
    ("run.keep_checkpoints=-2", "run.keep_checkpoints", "an integer >= -1"),
    ("run.log_audio_every_n_steps=-1", "run.log_audio_every_n_steps", "an integer >= 0"),
    ("run.n_audio_examples=-1", "run.n_audio_examples", "an integer >= 0"),
    ("vqvae.levels=0", "vqvae.levels", "an integer in [1, 3]"),
    ("vqvae.levels=4", "vqvae.levels", "an integer in [1, 3]"),
    ("vqvae.downs_t=[3,0,2]", "vqvae.downs_t", "each an integer >= 1"),
    ("vqvae.strides_t=[2,3,2]", "vqvae.strides_t", "each an even integer >= 2"),
    ("vqvae.strides_t=[]", "vqvae.strides_t", "a non-empty list"),
    ("vqvae.l_bins=0", "vqvae.l_bins", "an integer >= 1"),
    ("vqvae.emb_width=0", "vqvae.emb_width", "an integer >= 1"),
    ("vqvae.mu=1.5", "vqvae.mu", "a number in [0, 1]"),
    ("vqvae.revival_threshold=-1", "vqvae.revival_threshold", "a finite number >= 0"),
    ("vqvae.revival_relative=-0.5", "vqvae.revival_relative", "null or a finite number >= 0"),
    ("vqvae.commit=-0.02", "vqvae.commit", "a finite number >= 0"),
    ("vqvae.loss_l2=inf", "vqvae.loss_l2", "a finite number >= 0"),
    ("vqvae.multispectral=-1", "vqvae.multispectral", "a finite number >= 0"),
    ("vqvae.linf_k=0", "vqvae.linf_k", "an integer >= 1"),
    ("vqvae.mrstft_hop_sizes=[240,0,50]", "vqvae.mrstft_hop_sizes", "each an integer >= 1"),
    ("vqvae.mrstft_w_sc=-1", "vqvae.mrstft_w_sc", "a finite number >= 0"),
    ("vqvae.width=0", "vqvae.width", "an integer >= 1"),
    ("vqvae.depth=0", "vqvae.depth", "an integer >= 1"),
    ("vqvae.m_conv=0", "vqvae.m_conv", "a finite number > 0"),
    ("vqvae.dilation_growth_rate=0", "vqvae.dilation_growth_rate", "an integer >= 1"),
    ("vqvae.dilation_cycle=0", "vqvae.dilation_cycle", "null or an integer >= 1"),
    ("vqvae.multipliers=[2,0,1]", "vqvae.multipliers", "each an integer >= 1"),
    ("vqvae.channels=0", "vqvae.channels", "an integer >= 1"),
    ("vqvae.sample_length=0", "vqvae.sample_length", "an integer >= 1"),
    ("vqvae.bandwidth_batches=0", "vqvae.bandwidth_batches", "an integer >= 1"),
    ("vqvae.optim.weight_decay=-0.1", "vqvae.optim.weight_decay", "a finite number >= 0"),
    ("vqvae.optim.betas=[0.9,1.0]", "vqvae.optim.betas", "a list of 2 items, each a number in [0, 1)"),
    ("vqvae.optim.betas=[0.9]", "vqvae.optim.betas", "a list of 2 items"),
    ("vqvae.optim.eps=0", "vqvae.optim.eps", "a finite number > 0"),
    ("vqvae.optim.warmup_steps=-1", "vqvae.optim.warmup_steps", "an integer >= 0"),
    ("vqvae.optim.decay_steps=-1", "vqvae.optim.decay_steps", "an integer >= 0"),
    ("vqvae.optim.min_lr_factor=1.5", "vqvae.optim.min_lr_factor", "a number in [0, 1]"),
    ("prior.top.n_ctx=0", "prior.top.n_ctx", "an integer >= 1"),
    ("prior.top.width=0", "prior.top.width", "an integer >= 1"),
    ("prior.middle.depth=0", "prior.middle.depth", "an integer >= 1"),
    ("prior.top.heads=0", "prior.top.heads", "an integer >= 1"),
    ("prior.top.attn_order=-1", "prior.top.attn_order", "an integer >= 0"),
    ("prior.top.blocks=0", "prior.top.blocks", "an integer >= 1"),
    ("prior.top.m_attn=0", "prior.top.m_attn", "a finite number > 0"),
    ("prior.top.m_mlp=-1", "prior.top.m_mlp", "a finite number > 0"),
    ("prior.top.init_scale=0", "prior.top.init_scale", "a finite number > 0"),
    ("prior.top.y_bins=[0,5]", "prior.top.y_bins", "a list of 2 items, each an integer >= 1"),
    ("prior.top.y_bins=[3]", "prior.top.y_bins", "a list of 2 items"),
    ("prior.top.t_bins=0", "prior.top.t_bins", "an integer >= 1"),
    ("prior.top.min_duration=-1", "prior.top.min_duration", "a finite number >= 0"),
    ("prior.top.max_duration=0", "prior.top.max_duration", "a finite number > 0"),
    ("prior.top.n_tokens=-1", "prior.top.n_tokens", "an integer >= 0"),
    ("prior.top.prime_loss_fraction=1.5", "prior.top.prime_loss_fraction", "a number in [0, 1]"),
    ("prior.top.prime_width=0", "prior.top.prime_width", "an integer >= 1"),
    ("prior.top.prime_depth=0", "prior.top.prime_depth", "an integer >= 1"),
    ("prior.top.prime_heads=0", "prior.top.prime_heads", "an integer >= 1"),
    ("prior.top.prime_attn_order=-1", "prior.top.prime_attn_order", "an integer >= 0"),
    ("prior.top.prime_blocks=0", "prior.top.prime_blocks", "null or an integer >= 1"),
    ("prior.top.prime_m_attn=0", "prior.top.prime_m_attn", "a finite number > 0"),
    ("prior.top.prime_m_mlp=0", "prior.top.prime_m_mlp", "a finite number > 0"),
    ("prior.top.prime_init_scale=0", "prior.top.prime_init_scale", "a finite number > 0"),
    ("prior.middle.cond_width=0", "prior.middle.cond_width", "an integer >= 1"),
    ("prior.middle.cond_depth=0", "prior.middle.cond_depth", "an integer >= 1"),
    ("prior.middle.cond_m_conv=0", "prior.middle.cond_m_conv", "a finite number > 0"),
    ("prior.middle.cond_dilation_growth_rate=0", "prior.middle.cond_dilation_growth_rate", "an integer >= 1"),
    ("prior.middle.cond_dilation_cycle=0", "prior.middle.cond_dilation_cycle", "null or an integer >= 1"),
    ("prior.top.alignment_layer=-1", "prior.top.alignment_layer", "null or an integer >= 0"),
    ("prior.top.alignment_head=-1", "prior.top.alignment_head", "null or an integer >= 0"),
    ("prior.top.ema_decay=1.0", "prior.top.ema_decay", "null or a number in [0, 1)"),
    ("vqvae.optim.decay=cosin", "vqvae.optim.decay", "'none' or 'linear' or 'cosine'"),
    ("prior.top.lyrics=merge", "prior.top.lyrics", "'none' or 'encoder' or 'merged'"),
    ("prior.top.lyrics_vocab=v4", "prior.top.lyrics_vocab", "'v2' or 'v3'"),
    ("vqvae.spectral_mode=mel", "vqvae.spectral_mode", "'auraloss' or 'reference'"),
    ("data.max_skips_in_a_row=0", "data.max_skips_in_a_row", "an integer >= 1"),
    ("data.starve_seconds=0", "data.starve_seconds", "a finite number > 0"),
    ("run.max_nonfinite_steps_in_a_row=0", "run.max_nonfinite_steps_in_a_row", "an integer >= 1"),
    ("prior.bottom.optim.eps=-1", "prior.bottom.optim.eps", "a finite number > 0"),
    ("trainer.precision=bogus", "trainer.precision", "'32-true', '16-mixed'"),
    ("vqvae.batch_size=100000000000", "vqvae.batch_size", "small enough to fit"),
    ("vqvae.sample_length=1000000000000", "vqvae.sample_length", "small enough to fit"),
    ("prior.middle.batch_size=100000000000", "prior.middle.batch_size", "small enough to fit"),
]


@pytest.mark.parametrize(("override", "key", "allowed"), REFUSED, ids=[r[0] for r in REFUSED])
def test_each_range_rule_refuses_in_one_line(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    message = one_line(err)
    assert message.startswith(f"config key {key!r} = ") and "(from command line) is not allowed: must be " in message
    assert allowed in message, message


ACCEPTED = [
    "trainer.max_steps=-1", "trainer.max_steps=1", "trainer.max_epochs=-1", "trainer.max_epochs=null",
    "trainer.devices=auto", "trainer.devices=-1", "trainer.devices=[0,1]", "trainer.devices='0,1'",
    "trainer.gradient_clip_val=0", "trainer.gradient_clip_val=null", "trainer.log_every_n_steps=0",
    "trainer.val_check_interval=1.0", "trainer.val_check_interval=3", "trainer.val_check_interval=00:01:00:00",
    "trainer.limit_val_batches=0", "trainer.limit_train_batches=0.25", "trainer.num_sanity_val_steps=-1",
    "data.num_workers=0", "data.shuffle_buffer=0", "data.min_track_seconds=0", "run.keep_checkpoints=-1",
    "run.log_audio_every_n_steps=0", "seed=2147483647", "vqvae.mu=0", "vqvae.mu=1.0", "vqvae.multispectral=0",
    "vqvae.revival_relative=null", "vqvae.levels=1", "vqvae.downs_t=[3]", "vqvae.strides_t=[4]",
    "vqvae.optim.betas=[0.0,0.999]", "vqvae.optim.min_lr_factor=1", "prior.top.ema_decay=0.999",
    "prior.top.prime_loss_fraction=0",
]  # fmt: skip


@pytest.mark.parametrize("override", ACCEPTED)
def test_boundary_values_that_work_are_accepted(override):
    overrides = [override]
    if override.startswith(("vqvae.levels", "vqvae.downs_t", "vqvae.strides_t")):  # a one-level VQ-VAE, consistently
        overrides = ["vqvae.levels=1", "vqvae.downs_t=[3]", "vqvae.strides_t=[4]", "vqvae.sample_length=16384"]
    load_config("tiny", overrides)


def _numeric(annotation) -> bool:
    """Whether a schema annotation holds numbers (int, float, lists of them, or Any, which may)."""
    if annotation in (int, float, typing.Any):
        return True
    return any(_numeric(a) for a in typing.get_args(annotation) if a is not type(None))


def _schema_keys(cls, prefix: str = "") -> dict[str, object]:
    """Dotted key -> annotation of every leaf of the schema (a prior level written as `*`)."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + ("*" if cls is PriorLevels else f.name)
        hint = hints[f.name]
        out |= _schema_keys(hint, key + ".") if dataclasses.is_dataclass(hint) else {key: hint}
    return out


# Numeric-typed keys with no range of their own: free-form values that Lightning or a plug-in reads.
NO_RANGE = {"trainer.deterministic", "prior.*.conditioners", "trainer.logger", "trainer.callbacks"}


def test_every_numeric_schema_key_has_a_rule_and_every_rule_a_key():
    keys = _schema_keys(RunConfig)
    numeric = {k for k, hint in keys.items() if _numeric(hint)} - NO_RANGE
    assert not {k for k in numeric if rule_for(k) is None}, "numeric keys without a rule in config/checks.py"
    assert set(RULES) <= set(keys), f"rules for keys the schema lacks: {set(RULES) - set(keys)}"
    assert all(p in ("vqvae", "prior.*", "trainer") for p in CROSS_RULES)


def test_the_presets_and_prior_architectures_pass_every_rule():
    for preset in ("tiny", "small", "jukebox"):
        load_config(preset)
    for arch in sorted((Path(__file__).resolve().parents[1] / "configs" / "priors").glob("*.yaml")):
        load_config("tiny", [f"prior.top.arch={arch.stem}", f"prior.bottom.arch={arch.stem}"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["vqvae.levels=2"],
            r"'vqvae\.downs_t' = \[3, 2, 2\] \(from .*tiny\.yaml\) .*a list of 2 items, one per level",
        ),
        (["vqvae.multipliers=[2,1]"], r"'vqvae\.multipliers' = \[2, 1\] .*a list of 3 items, one per level"),
        (["vqvae.sample_length=16320"], r"'vqvae\.sample_length' = 16320 .*a multiple of the top level's hop 128"),
        (["vqvae.downs_t=[3,2,1000000000000]"], r"'vqvae\.sample_length' = 16384 .*strides_t \*\* downs_t > 16384"),
        (["prior.top.min_duration=60", "prior.top.max_duration=60"], r"'prior\.top\.max_duration' = 60\.0 .*> min"),
    ],
)
def test_keys_that_must_fit_together(overrides, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_config("tiny", overrides)
    one_line(err)


def test_a_consistent_two_level_vqvae_loads():
    cfg = load_config("tiny", ["vqvae.levels=2", "vqvae.downs_t=[5,3]", "vqvae.strides_t=[2,2]"])
    assert cfg.vqvae.levels == 2


def test_a_saved_run_config_is_checked_when_loaded_again(tmp_path):
    from jukebox_pl.training.runner import prepare_stage

    run = prepare_stage(tmp_path, "vqvae_top", "tiny", [], resume=False)
    saved = run.dir / "config.yaml"
    saved.write_text(saved.read_text().replace("batch_size: 6", "batch_size: 0", 1))
    (run.dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, run.dir / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match=r"'vqvae\.batch_size' = 0 \(from .*config\.yaml\)"):
        prepare_stage(tmp_path, "vqvae_top", "tiny", [], resume=True)


def test_sections_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"^config key 'vqvae\.batch_size' = 0 is not allowed"):
        vqvae_config(batch_size=0)
    with pytest.raises(ConfigError, match=r"'vqvae\.downs_t' = \[3, 2, 2\] .*one per level"):
        vqvae_config(levels=2)
    with pytest.raises(ConfigError, match=r"'prior\.n_ctx' = 0"):
        prior_config({"arch": "tiny_prior", "n_ctx": 0})
    with pytest.raises(ConfigError, match=r"'data\.num_workers' = -1"):
        data_config(num_workers=-1)


# -- the command line ----------------------------------------------------------------------------------------


def test_the_cli_names_a_bad_value_in_one_line_and_exits_2(tmp_path, capsys):
    assert cli.main(["config", "--preset", "tiny", "trainer.max_steps=-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "jukebox-pl config: error: config key 'trainer.max_steps' = -5 (from command line) is not allowed: "
        "must be -1 or an integer >= 1"
    ]
    run = tmp_path / "run"
    assert cli.main(["train", "vqvae", "--level", "top", "--run", str(run), "vqvae.batch_size=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'vqvae.batch_size' = 0" in err[0]
    assert not run.exists() or not list(run.rglob("config.yaml"))


def test_the_cli_refuses_a_tagged_config_file_in_one_line(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    mine = write(tmp_path, f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert cli.main(["config", "--preset", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine.yaml, line 1: the YAML tag !!python/object/apply:os.system" in err[0]
    assert not marker.exists()


TRAIN = ["train", "prior", "--level", "top", "--run", "r"]


def test_an_override_after_train_vqvae_paths_is_an_override():
    args = cli.parse_args([*TRAIN, "--vqvae", "A", "trainer.max_steps=1"])
    assert args.vqvae == ["A"] and args.overrides == ["trainer.max_steps=1"]
    args = cli.parse_args([*TRAIN, "--vqvae", "A", "B", "C", "trainer.max_steps=1", "prior.top.lr_x=2"])
    assert args.vqvae == ["A", "B", "C"] and args.overrides == ["trainer.max_steps=1", "prior.top.lr_x=2"]


def test_overrides_keep_the_order_they_were_typed_in():
    args = cli.parse_args(
        ["train", "prior", "seed=1", "--level", "top", "seed=2", "--vqvae", "A", "seed=3", "--run", "r"]
    )
    assert args.overrides == ["seed=1", "seed=2", "seed=3"] and args.vqvae == ["A"]


def test_a_path_with_an_equals_sign_stays_a_path():
    args = cli.parse_args([*TRAIN, "--vqvae", "./a=b.ckpt", "/ckpts/x=1.ckpt", "seed=3"])
    assert args.vqvae == ["./a=b.ckpt", "/ckpts/x=1.ckpt"] and args.overrides == ["seed=3"]


@pytest.mark.parametrize(
    ("word", "is_override"),
    [("a.b=1", True), ("_x=1", True), ("trainer.max-steps=1", True), ("prior.top.optim.lr=1e-3", True),
     ("./a=b", False), ("/abs/a=b", False), ("1a=b", False), ("C:\\x=1", False), ("a b=c", False), ("ab", False)],
)  # fmt: skip
def test_the_override_word_rule(word, is_override):
    assert bool(cli.OVERRIDE_WORD.match(word)) is is_override


def test_a_flag_left_with_only_an_override_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args([*TRAIN, "--vqvae", "trainer.max_steps=1"])
    assert exit_.value.code == 2 and "--vqvae: expected at least one value before trainer.max_steps=1" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("argv", "dest", "kept"),
    [
        (["sample", "--out", "o", "--prior", "P1", "P2", "seed=1", "--vqvae", "A"], "prior", ["P1", "P2"]),
        (["sample", "--out", "o", "--prior", "P", "--vqvae", "A", "B", "seed=1"], "vqvae", ["A", "B"]),
        (["encode", "--audio", "a", "--out", "o", "--ckpt", "A", "B", "seed=1"], "ckpt", ["A", "B"]),
        (["decode", "--codes", "c", "--out", "o", "--ckpt", "A", "seed=1"], "ckpt", ["A"]),
        (["encode", "--audio", "a", "--out", "o", "--run", "r", "--levels", "top", "seed=1"], "levels", ["top"]),
        (["encode-shards", "--shards", "s", "--out", "o", "--vqvae", "A", "seed=1"], "vqvae", ["A"]),
    ],
)
def test_other_multi_value_flags_hand_an_override_back(argv, dest, kept, capsys):
    args, _ = cli.build_parser().parse_known_args(argv)
    assert getattr(args, dest) == kept
    with pytest.raises(SystemExit) as exit_:  # these commands take no overrides: named, not read as a path
        cli.parse_args(argv)
    assert exit_.value.code == 2
    assert "unrecognized arguments: seed=1 (`" in capsys.readouterr().err
    clean = [w for w in argv if w != "seed=1"]
    assert getattr(cli.parse_args(clean), dest) == kept


def test_help_still_shows_the_multi_value_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--vqvae VQVAE [VQVAE ...]" in out and "[overrides ...]" in out


@pytest.mark.parametrize(
    ("args", "flag", "allowed"),
    [
        (["sample", "--run", "r", "--out", "o", "--max-batch", "0"], "--max-batch", "an integer >= 1"),
        (["sample", "--run", "r", "--out", "o", "--n-samples", "-2"], "--n-samples", "an integer >= 1"),
        (["sample", "--run", "r", "--out", "o", "--seconds", "-1"], "--seconds", "a number in (0, 14400]"),
        (["sample", "--run", "r", "--out", "o", "--seconds", "inf"], "--seconds", "a number in (0, 14400]"),
        (["sample", "--run", "r", "--out", "o", "--top-p", "2"], "--top-p", "a number in [0, 1]"),
        (["sample", "--run", "r", "--out", "o", "--temperature", "-1"], "--temperature", "a number >= 0"),
        (["prep", "--src", "a", "--out", "b", "--val-fraction", "1"], "--val-fraction", "a number in [0, 1)"),
        (["prep", "--src", "a", "--out", "b", "--workers", "-1"], "--workers", "an integer >= 0"),
        (["prep", "--src", "a", "--out", "b", "--shard-mb", "0"], "--shard-mb", "a number > 0"),
        (["prep", "--src", "a", "--out", "b", "--sr", "x"], "--sr", "'x' is not an integer >= 1"),
    ],
)
def test_numeric_flags_are_range_checked_in_one_line(args, flag, allowed, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(args)
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"jukebox-pl {args[0]}: error: argument {flag}: ") and allowed in last, last
