"""`jukebox-pl import-openai` on reference-format files: the fixtures reproduce the reference's outputs through
the command and the sampler's loading path; every released model's exact key set and shapes converts."""

from __future__ import annotations

import ast
import json
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf
import torch

from jukebox_pl.cli import main
from jukebox_pl.sampling.models import load_prior
from jukebox_pl.vqvae.vqvae import VQVAE

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "openai_jukebox"
RELEASED_KEYS = FIXTURES / "keys" / "released"


def reference_file(folder: Path, name: str, out: Path) -> tuple[Path, Path]:
    """A fixture as the reference saves a checkpoint ({'model': state, 'step': ...}) and its hparams as JSON."""
    state = torch.load(FIXTURES / name / "state_dict.pt", weights_only=True)
    path = out / f"{name}.pth.tar"
    torch.save({"model": state, "step": 0}, path)
    hps = out / f"{name}.json"
    hps.write_text(json.dumps(json.loads((FIXTURES / name / "meta.json").read_text())["hparams"]))
    return path, hps


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("import")
    vq, vq_hps = reference_file(FIXTURES, "small_vqvae", work)
    prior, prior_hps = reference_file(FIXTURES, "small_prior_w128_d6", work)
    run = work / "run"
    args = ["import-openai", "--out", str(run), "--vqvae", str(vq), "--hps", str(vq_hps), "--prior", str(prior),
            "--hps", str(prior_hps), "--level", "top"]  # fmt: skip
    assert main(args) == 0
    return run


def test_the_run_is_self_contained(imported):
    written = json.loads((imported / "import.json").read_text())["written"]
    assert sorted(written) == ["prior_top/export.pt", "vqvae_bottom/export.pt", "vqvae_top/export.pt"]
    for stage in ("vqvae_bottom", "vqvae_top", "prior_top"):
        text = (imported / stage / "config.yaml").read_text()
        assert "sample_rate: 22050" in text and str(imported.parent) not in text


def test_the_imported_vqvae_reproduces_the_reference(imported):
    from test_vqvae_reference import assert_codes_equal_up_to_near_ties

    io = torch.load(FIXTURES / "small_vqvae" / "io.pt", weights_only=True)
    vqvae = VQVAE.from_run(imported)  # what `sample --run` loads
    x = io["x"].permute(0, 2, 1)
    for level in (0, 1):
        model = vqvae.level(level)
        assert_codes_equal_up_to_near_ties(model, x, model.encode(x), io["zs"][level])
        audio = model.decode(io["zs"][level]).permute(0, 2, 1)
        torch.testing.assert_close(audio, io["x_ds"][level], atol=1e-4, rtol=0)


def test_the_imported_prior_reproduces_logits_bits_and_greedy_tokens(imported):
    io = torch.load(FIXTURES / "small_prior_w128_d6" / "io.pt", weights_only=True)
    prior, _ = load_prior(imported / "prior_top" / "export.pt")  # what `sample` loads
    with torch.no_grad():
        out = prior(io["z"], return_logits=True)
    torch.testing.assert_close(out.logits[0, io["logits_positions"]], io["logits"], atol=1e-4, rtol=0)
    assert out.music_bits.item() == pytest.approx(io["eval_loss"].item(), abs=1e-4)
    greedy = prior.sample(prior.condition(1), 1, length=300, temperature=0.0)
    assert greedy[0].tolist() == io["greedy_sample_tokens"].tolist()


def test_sample_writes_a_wav_from_the_imported_run(imported, tmp_path, capsys):
    out = tmp_path / "song"
    code = main(["sample", "--run", str(imported), "--out", str(out), "--levels", "1", "--seconds", "0.3",
                 "--temperature", "0", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    audio, sr = sf.read(out / "top" / "sample_0.wav")
    assert sr == 22050 and len(audio) >= 0.3 * 22050


# -- every released model's layout -----------------------------------------------------------------------------
def released_file(name: str, out: Path) -> Path:
    """A reference-format file with exactly the released model's keys, shapes and dtypes, each tensor a single
    stored value broadcast to its shape (a few kB on disk for a 5B model)."""
    state = {}
    for line in (RELEASED_KEYS / f"{name}.txt").read_text().splitlines():
        key, shape, dtype, _ = line.split("\t")
        dtype = getattr(torch, dtype.removeprefix("torch."))
        state[key] = torch.full((1,), 0.01, dtype=dtype).expand(ast.literal_eval(shape))
    path = out / f"{name}.pth.tar"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "step": 1}, path)
    return path


RELEASED = {
    "vqvae": ("vqvae", None),
    "prior_5b": ("5b", "top"),
    "prior_5b_lyrics": ("5b_lyrics", "top"),
    "prior_1b_lyrics": ("1b_lyrics", "top"),
    "upsampler_level_1": ("upsampler_level_1", "middle"),
    "upsampler_level_0": ("upsampler_level_0", "bottom"),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_every_released_layout_converts_with_nothing_missing_or_left_over(name, tmp_path, capsys):
    from jukebox_pl.interop.openai_hps import released_spec
    from jukebox_pl.interop.reference_files import prior_model

    hps, level = RELEASED[name]
    source = released_file(name, tmp_path)
    flag = "--vqvae" if level is None else "--prior"
    assert main(["import-openai", "--out", str(tmp_path / "run"), flag, str(source), "--hps", hps]) == 0
    if level is None:
        for stage in ("bottom", "middle", "top"):
            export = torch.load(tmp_path / "run" / f"vqvae_{stage}" / "export.pt", weights_only=True)
            assert export["kind"] == "vqvae-level" and export["hparams"]["sample_rate"] == 44100
        return
    export = torch.load(tmp_path / "run" / f"prior_{level}" / "export.pt", weights_only=True, mmap=True)
    ours = {f"model.{k}": tuple(v.shape) for k, v in prior_model(released_spec(hps)).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in export["state_dict"].items()} == ours
    stored = {str(v.dtype) for v in export["state_dict"].values()}
    assert stored == ({"torch.float16", "torch.float32"} if hps.startswith("5b") else {"torch.float32"})
    assert f"{level} prior ({hps})" in capsys.readouterr().out


def test_a_file_that_does_not_fit_is_refused_with_the_keys(tmp_path, capsys):
    source = released_file("upsampler_level_0", tmp_path)
    saved = torch.load(source, weights_only=True)["model"]
    saved.pop("module.prior.x_emb.weight")
    saved["module.prior.extra_head.w"] = torch.zeros(2, 2)
    torch.save({"model": saved}, source)
    code = main(["import-openai", "--out", str(tmp_path / "run"), "--prior", str(source), "--hps",
                 "upsampler_level_0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "1 of its keys have no place in our prior: prior.extra_head.weight" in err
    assert "1 of our keys are not in the file: prior.x_emb.weight" in err
    assert not (tmp_path / "run" / "prior_bottom").exists()


@contextmanager
def reference_hyperparams():
    """The reference's `jukebox.hparams.Hyperparams` (a dict subclass) importable while inside, so that a file
    pickled with it can be written as the reference wrote its checkpoints."""
    hparams = types.ModuleType("jukebox.hparams")

    class Hyperparams(dict):
        pass

    Hyperparams.__module__, Hyperparams.__qualname__ = "jukebox.hparams", "Hyperparams"
    hparams.Hyperparams = Hyperparams
    package = types.ModuleType("jukebox")
    package.hparams = hparams
    sys.modules["jukebox"], sys.modules["jukebox.hparams"] = package, hparams
    try:
        yield Hyperparams
    finally:
        del sys.modules["jukebox.hparams"], sys.modules["jukebox"]


def test_a_file_that_needs_pickle_requires_trust(tmp_path, capsys):
    """The reference pickled its `Hyperparams` (a dict subclass); such a file loads only with --trust-pickle,
    and then its own hparams are used when --hps is not given."""
    with reference_hyperparams() as Hyperparams:
        hps = Hyperparams(json.loads((FIXTURES / "small_vqvae" / "meta.json").read_text())["hparams"])
        state = torch.load(FIXTURES / "small_vqvae" / "state_dict.pt", weights_only=True)
        torch.save({"hps": hps, "model": state, "step": 0}, tmp_path / "vqvae.pth.tar")
    args = ["import-openai", "--out", str(tmp_path / "run"), "--vqvae", str(tmp_path / "vqvae.pth.tar")]
    assert main(args) == 2
    assert "needs pickle to load (Unsupported global: GLOBAL jukebox.hparams.Hyperparams" in capsys.readouterr().err
    assert main([*args, "--trust-pickle"]) == 0
    assert (tmp_path / "run" / "vqvae_top" / "export.pt").is_file()


@pytest.mark.slow
def test_an_imported_prior_fine_tunes_with_train_prior_init(imported, shards, tmp_path, capsys):
    """The imported run's config, VQ-VAE levels and prior are what `train prior --init` takes."""
    code = main(["train", "prior", "--level", "top", "--preset", str(imported / "prior_top" / "config.yaml"),
                 "--run", str(tmp_path / "ft"), "--data", str(shards), "--vqvae",
                 str(imported / "vqvae_bottom" / "export.pt"), str(imported / "vqvae_top" / "export.pt"),
                 "--init", str(imported / "prior_top" / "export.pt"), "trainer.max_steps=1",
                 "prior.top.batch_size=1", "trainer.limit_val_batches=0",
                 "trainer.enable_progress_bar=false"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-2000:]
    saved = torch.load(tmp_path / "ft" / "prior_top" / "checkpoints" / "last.ckpt", weights_only=True)
    start = torch.load(imported / "prior_top" / "export.pt", weights_only=True)["state_dict"]
    assert saved["global_step"] == 1
    moved = saved["state_dict"]["model.prior.x_emb.weight"] - start["model.prior.x_emb.weight"]
    assert 0 < moved.abs().max() < 0.1, "one step from the imported weights, not from scratch"


def write_ids(folder: Path) -> Path:
    """Small id tables in the reference's `name;id` format (its own tables are not part of the project)."""
    tables = {
        "v2_artist_ids.txt": "unknown;0\nalan_jackson;2\nthe_beatles;3\n",
        "v2_genre_ids.txt": "unknown;0\nrock;1\ncountry;5\n",
        "v3_artist_ids.txt": "unknown;0\nalan jackson;7\nthe beatles;8\n",
        "v3_genre_ids.txt": "unknown;0\ncountry rock;2\ncountry;4\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / name).write_text(text)
    return folder


def test_ids_give_each_prior_the_reference_label_table_of_its_version(tmp_path, capsys):
    from jukebox_pl.sampling.models import vocab_of

    ids = write_ids(tmp_path / "ids")
    top, middle = released_file("prior_1b_lyrics", tmp_path), released_file("upsampler_level_1", tmp_path)
    args = ["import-openai", "--out", str(tmp_path / "run"), "--prior", str(top), "--hps", "1b_lyrics",
            "--prior", str(middle), "--hps", "upsampler_level_1", "--ids", str(ids)]  # fmt: skip
    assert main(args) == 0
    assert "3 artist and 3 genre names" in capsys.readouterr().out
    vocabs = {}
    for level in ("top", "middle"):
        hp = torch.load(tmp_path / "run" / f"prior_{level}" / "export.pt", weights_only=True, mmap=True)["hparams"]
        vocabs[level] = vocab_of(hp)
    assert vocabs["top"].style == "openai-v3" and vocabs["middle"].style == "openai-v2"
    assert vocabs["top"].artist_id("Alan Jackson") == 7 and vocabs["middle"].artist_id("Alan Jackson") == 2
    assert vocabs["top"].genre_ids("Country Rock") == [2] and vocabs["middle"].genre_ids("Country Rock") == [5, 1]
    assert json.loads((tmp_path / "run" / "vocab.json").read_text())["style"] == "openai-v3"


def test_each_level_is_sampled_with_its_own_label_ids(tmp_path):
    """The 1B top prior reads v3 ids and its upsamplers v2 ids: one --artist gives each level its own."""
    from sampling_models import tiny_models

    from jukebox_pl.interop.ids import read_reference_ids
    from jukebox_pl.stages.sample import SampleRequest, level_labels, resolve_labels

    ids = write_ids(tmp_path / "ids")
    models = tiny_models()
    v3, v2 = read_reference_ids(ids, "v3"), read_reference_ids(ids, "v2")
    models.vocabs, models.vocab = {2: v3, 1: v2, 0: v2}, v3
    req = SampleRequest(out=str(tmp_path / "o"), artists=["Alan Jackson"], genres=["country"])
    artists, genres, _ = resolve_labels(models, req)
    assert artists == [7] and genres == [[4]]
    per_level = level_labels(models, req, 1)
    assert per_level == {1: {"artists": [2], "genres": [[5]]}, 0: {"artists": [2], "genres": [[5]]}}


@pytest.mark.parametrize("weights", ["fp16", "bf16"])
def test_an_imported_prior_samples_in_half_precision(imported, tmp_path, weights, capsys):
    """--weights fp16/bf16 keep the prior in half precision (the released 5B weights are stored in fp16)."""
    io = torch.load(FIXTURES / "small_prior_w128_d6" / "io.pt", weights_only=True)
    prior, _ = load_prior(imported / "prior_top" / "export.pt", weights)
    assert {p.dtype for p in prior.parameters()} == {torch.float16 if weights == "fp16" else torch.bfloat16}
    with torch.no_grad():
        bits = prior(io["z"][:, :8192]).music_bits.float().item()
    assert bits == pytest.approx(io["eval_loss"].item(), abs=0.05)  # half precision: close, not equal
    out = tmp_path / "half"
    code = main(["sample", "--run", str(imported), "--out", str(out), "--levels", "1", "--seconds", "0.3",
                 "--weights", weights, "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (out / "top" / "sample_0.wav").is_file()
