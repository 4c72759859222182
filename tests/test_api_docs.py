"""The API pages (`make docs`, pdoc) are built in CI: every public name of `jukebox_pl` has its page and its own
docstring, and the models and DataModules say the shapes and units of what goes in and out."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

import jukebox_pl

BUILD = Path(__file__).resolve().parents[1] / "docs" / "build_api.py"


def build_api():
    spec = importlib.util.spec_from_file_location("build_api", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    return build_api().build(tmp_path_factory.mktemp("api"))


def own_doc(obj) -> str:
    """The docstring the object itself has (not a base class's, not a dataclass's generated signature)."""
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__
    doc = inspect.cleandoc(doc or "")
    return "" if doc.startswith(f"{obj.__name__}(") else doc


@pytest.mark.parametrize("name", jukebox_pl.__all__)
def test_every_public_name_has_a_page_with_its_docstring(pages, name):
    obj = getattr(jukebox_pl, name)
    doc = own_doc(obj)
    assert doc, f"jukebox_pl.{name} has no docstring of its own"
    page = pages / (obj.__module__.replace(".", "/") + ".html")
    html = page.read_text()
    assert f'id="{name}"' in html, f"{page} has no entry for {name}"
    first_words = " ".join(doc.split()[:3]).replace("`", "")
    assert first_words.split()[0] in html, (name, first_words)
    index = (pages / "jukebox_pl.html").read_text()
    assert name in index


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("VQVAELevelModel.encode", ["(N, C, T)", "[-1, 1]", "sample rate", "int64", "hop"]),
        ("VQVAELevelModel.decode", ["(N, T')", "(N, C, T' * hop)"]),
        ("VQVAE.encode", ["(N, C, T)", "ceil(T / hop)"]),
        ("JukeboxPrior.sample", ["(n, length)", "int64", "hop_length"]),
        ("AudioDataModule", ["audio", "(N, channels, sample_length)", "[-1, 1]", "sample_rate"]),
        ("CodeDataModule", ["codes", "(N, n_ctx)", "upper_codes"]),
        ("Bottleneck", ["(N, emb_width, T)", "(N, T)", "int64"]),
        ("LyricsTokenizer", ["int64", "n_vocab"]),
        ("JukeboxFeatures.activations", ["(B, T)", "(B, T,", "width) float32"]),
        ("JukeboxFeatures.forward", ["(B, T)", "model's rate", "(B, codes, width)"]),
        ("FeaturesModule", ["TrackDataset", "layers"]),
    ],
)
def test_the_main_inputs_and_outputs_say_their_shapes_and_units(where, words):
    obj = jukebox_pl
    for part in where.split("."):
        obj = getattr(obj, part)
    doc = own_doc(obj)
    for word in words:
        assert word in doc, (where, word)
