"""The public API: `import jukebox_pl` (and the CLI's parser) stays light — no Lightning, no torch — and every
exported name resolves to the object its module defines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAVY = ("pytorch_lightning", "lightning", "lightning_fabric", "torch", "omegaconf", "webdataset")


def loaded_after(code: str) -> dict:
    """Run `code` in a fresh interpreter; return which heavy modules it left in sys.modules (and what it printed)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import jukebox_pl",
        "import jukebox_pl.cli as cli; cli.build_parser().format_help()",
        "import jukebox_pl.data, jukebox_pl.config, jukebox_pl.vqvae, jukebox_pl.prior; dir(jukebox_pl)",
        "from jukebox_pl import JukeboxError, __version__",
    ],
)
def test_importing_the_package_and_building_the_cli_loads_nothing_heavy(code):
    loaded = loaded_after(code)
    assert not any(loaded.values()), f"`{code}` imported {[m for m, v in loaded.items() if v]}"


def test_plain_torch_models_do_not_import_lightning():
    code = (
        "from jukebox_pl import Encoder, Decoder, Bottleneck, VQVAELevelModel, AutoregressiveTransformer, "
        "Transformer, JukeboxPrior, LabelVocab, LyricsTokenizer, load_config, RunConfig, JukeboxFeatures"
    )
    loaded = loaded_after(code)
    assert loaded["torch"] and not loaded["pytorch_lightning"] and not loaded["lightning"]


def test_every_exported_name_resolves():
    import jukebox_pl

    packages = ("jukebox_pl", "jukebox_pl.data", "jukebox_pl.config", "jukebox_pl.vqvae", "jukebox_pl.prior",
                "jukebox_pl.features")  # fmt: skip
    for package in packages:
        module = __import__(package, fromlist=["__all__"])
        assert module.__all__ and set(module.__all__) <= set(dir(module)), package
        for name in module.__all__:
            obj = getattr(module, name)
            assert obj is not None and getattr(obj, "__name__", name) == name, f"{package}.{name}"
    required = {
        *("Encoder", "Decoder", "Bottleneck", "VQVAELevelModel", "VQVAE", "VQVAELevel"),
        *("AutoregressiveTransformer", "Transformer", "JukeboxPrior", "PriorModule"),
        *("AudioDataModule", "CodeDataModule", "LabelVocab", "LyricsTokenizer", "prepare_shards", "PrepOptions"),
        *("SongSampler", "SampleRequest", "sample_song", "SamplingModels", "JukeboxFeatures", "FeaturesModule"),
        *("load_config", "ConfigError", "JukeboxError", "Levels", "build_vqvae_level", "build_prior"),
        *("RunConfig", "DataConfig", "VQVAEConfig", "PriorConfig", "TrainerConfig"),
    }
    assert required <= set(jukebox_pl.__all__)
    from jukebox_pl.prior.lightning import PriorModule
    from jukebox_pl.vqvae.vqvae import VQVAE

    assert jukebox_pl.VQVAE is VQVAE and jukebox_pl.PriorModule is PriorModule
    assert issubclass(jukebox_pl.ConfigError, jukebox_pl.JukeboxError)


def test_unknown_names_raise_attribute_error_and_submodules_still_import():
    import jukebox_pl
    import jukebox_pl.data

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        jukebox_pl.Nope  # noqa: B018
    from jukebox_pl.data import toy  # a submodule, not an export

    assert hasattr(toy, "make_toy_dataset") and isinstance(jukebox_pl.__version__, str)
