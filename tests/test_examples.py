"""The scripts in examples/ run end to end on a tiny toy set and a random-weight VQ-VAE level, in seconds."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.data.prep import PrepOptions, prepare_shards
from jukebox_pl.data.toy import ARTISTS, make_toy_dataset
from jukebox_pl.training.checkpoints.read_write import EXPORT_FORMAT
from jukebox_pl.vqvae.model import VQVAELevelModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SR = 22050
TINY = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], width=8, depth=1, emb_width=8, l_bins=16)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory) -> Path:
    """The toy set at one song per (artist, genre), 2 s each, as shards (like `make toy-shards`)."""
    root = tmp_path_factory.mktemp("toy")
    meta = make_toy_dataset(root / "toy", songs_per_pair=1, seconds=(2.0, 2.0))
    out = root / "toy_shards"
    opts = PrepOptions(src=str(root / "toy" / "audio"), metadata=str(meta), out=str(out), sr=SR, val_fraction=0.3,
                       shard_tracks=4, workers=1)  # fmt: skip
    prepare_shards(opts, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_level(tmp_path_factory) -> Path:
    """A random-weight top level (hop 16) saved as an export file, as `jukebox-pl export` writes it."""
    torch.manual_seed(0)
    cfg = vqvae_config(**TINY)
    model = VQVAELevelModel(cfg, 1).eval()
    with torch.no_grad():
        z = model.encoder(0.3 * torch.randn(1, 1, 4096))
        model.bottleneck.init_codebook(z.permute(0, 2, 1).reshape(-1, cfg.emb_width))
    hp = {"vqvae": plain(model.cfg), "level": model.level, "sample_rate": SR}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("vqvae") / "top.pt"
    torch.save({"format": EXPORT_FORMAT, "kind": "vqvae-level", "hparams": hp, "state_dict": state, "meta": {}}, path)
    return path


def test_vqvae_tokenizer_classifier(toy_shards, tiny_level, tmp_path, capsys):
    example = load_example("vqvae_tokenizer_classifier")
    args = ["--vqvae", str(tiny_level), "--shards", str(toy_shards), "--sample-length", "4096", "--batch-size", "4",
            "--epoch-length", "16", "--epochs", "2", "--accelerator", "cpu", "--out", str(tmp_path)]  # fmt: skip
    result = example.main(args)
    assert 0.0 <= result["train_acc"] <= 1.0 and 0.0 <= result["val_acc"] <= 1.0
    assert result["codes_shape"][1] == 4096 // 16
    model = result["model"]
    assert model.head.out_features == len(ARTISTS) + 1  # the vocab's artists and "unknown"
    assert not model.tokenizer.training and not any(p.requires_grad for p in model.tokenizer.parameters())
    assert "val" in capsys.readouterr().out


def test_transformer_block_next_step_loss_goes_down(capsys):
    example = load_example("transformer_block")
    result = example.main(["--task", "next", "--steps", "40", "--batch-size", "16", "--width", "32"])
    losses = result["losses"]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    assert 0.0 <= result["accuracy"] <= 1.0 and "loss" in capsys.readouterr().out


def test_transformer_block_classifier_uses_hidden_states():
    example = load_example("transformer_block")
    result = example.main(["--task", "classify", "--steps", "15", "--batch-size", "16", "--width", "32"])
    losses = result["losses"]
    assert sum(losses[-3:]) / 3 < losses[0] and result["accuracy"] > 0.5
    tokens = torch.randint(0, 16, (2, 32))
    hidden = result["model"].backbone.hidden(tokens)
    assert hidden.shape == (2, 32, 32)


def test_probe_recognises_the_artist_from_a_tiny_runs_features(tmp_path, capsys):
    """A tiny run (top VQ-VAE level and top prior, a few steps on the toy set), `jukebox-pl features` over the toy
    shards, then examples/probe.py: artists recognised well above chance (4 artists: 0.25)."""
    from prior_settings import COMMON, PRIOR, VQVAE

    from jukebox_pl.cli import main
    from jukebox_pl.stages.train_prior import train_prior
    from jukebox_pl.stages.train_vqvae import train_vqvae

    meta = make_toy_dataset(tmp_path / "toy", songs_per_pair=2, seconds=(3.0, 3.0))
    shards = tmp_path / "shards"
    prepare_shards(PrepOptions(src=str(tmp_path / "toy" / "audio"), metadata=str(meta), out=str(shards), sr=SR,
                               val_fraction=0.3, shard_tracks=4, workers=1), progress=False)  # fmt: skip
    run = tmp_path / "run"
    train_vqvae(run, "top", "tiny", str(shards), VQVAE + COMMON)
    train_prior(run, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    out = tmp_path / "features"
    assert main(["features", "--run", str(run), "--data", str(shards), "--out", str(out), "--layers", "2",
                 "--seconds", "3", "--batch-size", "8", "--no-progress"]) == 0  # fmt: skip
    probe = load_example("probe")
    result = probe.main(["--features", str(out), "--layer", "2", "--label", "artist", "--epochs", "60",
                         "--accelerator", "cpu"])  # fmt: skip
    assert result["classes"] == sorted(ARTISTS) and result["chance"] == 0.25
    assert result["val_acc"] >= 0.5, result  # measured 0.75-1.0 over split seeds 0-4
    assert "artist probe on layer 2" in capsys.readouterr().out
