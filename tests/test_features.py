"""Jukebox as a feature extractor: the reference's own activations (fixture), the partial load, and
`jukebox-pl features` over files, shards and codes files (pooling, windows, resume, bad input)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sampling_models import SR, VOCAB, tiny_models

from jukebox_pl.cli import main
from jukebox_pl.errors import DivergedError, UserValueError
from jukebox_pl.features import JukeboxFeatures, load_truncated_prior, parse_layers, parse_pool, pool, prepare_audio
from jukebox_pl.interop.openai_hps import spec_from_hps
from jukebox_pl.interop.reference_files import convert_prior, prior_model
from jukebox_pl.stages.import_openai import write_prior

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "openai_jukebox" / "features_top_w64_d6"
ATOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_thread")


# -- the reference's activations (tests/fixtures/openai_jukebox/features_top_w64_d6) ---------------------------
@pytest.fixture(scope="module")
def ref():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    io = torch.load(FIXTURE / "io.pt", weights_only=True)
    spec = spec_from_hps(meta["hparams"], "prior", "the features fixture")
    state = convert_prior(torch.load(FIXTURE / "state_dict.pt", weights_only=True), spec, "the features fixture")
    prior = prior_model(spec, "cpu")
    prior.load_state_dict(state)
    return spec, state, prior.eval(), io


def fixture_inputs(features: JukeboxFeatures, y: torch.Tensor) -> dict:
    """The reference's label rows [total_length, offset, sample_length, artist, genres...] as our batch keys."""
    genres = [[g for g in row if g >= 0] for row in y[:, 4:].tolist()]
    return features.label_inputs(y[:, 3].tolist(), genres, y[:, 0].tolist(), y[:, 1].tolist())


def test_every_block_output_is_the_reference_layer(ref):
    _, _, prior, io = ref
    features = JukeboxFeatures(prior, range(1, 7))
    acts = features.activations(io["z"], fixture_inputs(features, io["y"]))
    assert sorted(acts) == [1, 2, 3, 4, 5, 6]
    for layer, want in io["layers"].items():
        torch.testing.assert_close(acts[layer], want, atol=ATOL, rtol=0, msg=f"layer {layer}")


def test_prior_output_is_jukemirs_depth_l_prior(ref):
    """JukeMIR's quantity: a prior built with depth 3, `only_encode`: block 3 plus the timing signal added back."""
    _, _, prior, io = ref
    features = JukeboxFeatures(prior, [3], output="prior")
    acts = features.activations(io["z"], fixture_inputs(features, io["y"]))
    torch.testing.assert_close(acts[3], io["jukemir_depth3"], atol=ATOL, rtol=0)
    assert (io["jukemir_depth3"] - io["layers"][3]).abs().max() > 1e-2  # the add-back is there to be found


def test_a_short_clip_matches_jukemirlibs_sampling_path(ref):
    """300 codes (not a whole number of attention rows): jukemirlib's per-layer path on the reference."""
    _, _, prior, io = ref
    features = JukeboxFeatures(prior, range(1, 7))
    acts = features.activations(io["z"][:, :300], fixture_inputs(features, io["y"]))
    for layer, want in io["short_layers"].items():
        assert acts[layer].shape == want.shape == (2, 300, 64)
        torch.testing.assert_close(acts[layer], want, atol=ATOL, rtol=0, msg=f"layer {layer}")


def test_partial_load_of_an_imported_export_reads_only_the_kept_layers(ref, tmp_path):
    """The first 3 blocks from an `import-openai` export: the dropped blocks and the head are never built and
    their bytes never read (a NaN planted in block 5 refuses the full load, not this one)."""
    spec, state, _, io = ref
    planted = dict(state)
    planted["prior.transformer._attn_mods.4.mlp.c_fc.weight"] = torch.full_like(
        state["prior.transformer._attn_mods.4.mlp.c_fc.weight"], float("nan")
    )
    path = write_prior(tmp_path / "run", planted, spec, "fixture", vocab=None)
    prior, hp = load_truncated_prior(path, 3)
    assert len(prior.prior.transformer._attn_mods) == 3 and not hasattr(prior.prior, "x_out")
    assert hp["level"] == prior.level == 1
    full = sum(t.numel() for t in state.values())
    kept = sum(p.numel() for p in prior.parameters())
    block = sum(t.numel() for k, t in state.items() if k.startswith("prior.transformer._attn_mods.0."))
    assert kept == full - 3 * block - state["prior.x_out.weight"].numel()  # blocks 4-6 and the head left out
    features = JukeboxFeatures(prior, [3], output="prior")
    torch.testing.assert_close(
        features.activations(io["z"], fixture_inputs(features, io["y"]))[3], io["jukemir_depth3"], atol=ATOL, rtol=0
    )
    with pytest.raises(DivergedError, match="non-finite"):
        load_truncated_prior(path, 6)


def test_a_lora_fine_tuned_prior_gives_the_features_of_its_merged_weights(ref, tmp_path):
    """A LoRA run's checkpoint (base weights + adapters): the kept blocks' adapters are merged after the partial
    load, as sampling merges them."""
    import copy

    from jukebox_pl.prior.lora import add_lora, merge_lora

    spec, _, prior, io = ref
    tuned = copy.deepcopy(prior)
    add_lora(tuned, 4)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name.endswith(".lora_b"):
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    path = write_prior(tmp_path / "run", tuned.state_dict(), spec, "fixture", vocab=None)
    cut, _ = load_truncated_prior(path, 3)
    merged = merge_lora(copy.deepcopy(tuned)).eval()
    want = JukeboxFeatures(merged, [3])
    got = JukeboxFeatures(cut, [3])
    inputs = fixture_inputs(want, io["y"])
    expected = want.activations(io["z"], inputs)[3]
    torch.testing.assert_close(got.activations(io["z"], inputs)[3], expected, atol=1e-5, rtol=0)
    assert (expected - io["layers"][3]).abs().max() > 1e-3  # the adapters changed the layer


def test_partial_load_of_a_hub_folder(ref, tmp_path):
    _, _, prior, io = ref
    prior.save_pretrained(tmp_path / "prior")
    cut, _ = load_truncated_prior(tmp_path / "prior", 2)
    assert [k for k in cut.state_dict() if "_attn_mods.2." in k] == []
    features = JukeboxFeatures(cut, [1, 2])
    acts = features.activations(io["z"], fixture_inputs(features, io["y"]))
    torch.testing.assert_close(acts[2], io["layers"][2], atol=ATOL, rtol=0)
    with pytest.raises(UserValueError, match="layer 7 does not exist"):
        load_truncated_prior(tmp_path / "prior", 7)


# -- small pieces ---------------------------------------------------------------------------------------------
def test_layers_pools_and_the_recipes_audio():
    assert parse_layers("36") == [36] and parse_layers(["12,36", "12"]) == [12, 36]
    for bad in ("0", "x", ""):
        with pytest.raises(UserValueError):
            parse_layers(bad)
    assert parse_pool("mean") == "mean" and parse_pool("2.5") == 2.5
    with pytest.raises(UserValueError, match="--pool"):
        parse_pool("max")
    acts = torch.arange(10.0).reshape(5, 2)
    assert pool(acts, "mean", 2.0).tolist() == [4.0, 5.0]
    assert pool(acts, 1.0, 2.0).tolist() == [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]  # 2 codes a window, the rest last
    stereo = np.stack([np.full(44100, 0.2), np.full(44100, 0.4)]).astype(np.float32)
    mono = prepare_audio(stereo, 44100, 22050, seconds=0.5)
    assert mono.shape == (11025,) and np.allclose(np.abs(mono).max(), 1.0)  # mean of the channels, peak 1
    assert np.allclose(prepare_audio(stereo, 44100, 44100, None, normalize=False), 0.3)


def test_the_command_line_offers_what_the_stage_takes():
    """cli.py builds the parser without importing the stage (no torch for `--help`): its choices and defaults
    must be the stage's own."""
    from jukebox_pl.cli import build_parser
    from jukebox_pl.features.extractor import OUTPUTS
    from jukebox_pl.features.recipe import RECIPE_TOTAL_SECONDS
    from jukebox_pl.stages.features import WEIGHTS, FeaturesOptions

    args = build_parser().parse_args(["features", "--run", "R", "--out", "O", "--layers", "36"])
    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["features"]._actions}
    assert tuple(actions["output"].choices) == OUTPUTS and tuple(actions["weights"].choices) == WEIGHTS
    assert args.total_seconds == RECIPE_TOTAL_SECONDS == FeaturesOptions.total_seconds
    assert (args.pool, args.min_seconds, args.artist) == ("mean", 1.0, "unknown")


def test_only_a_top_prior_gives_features():
    models = tiny_models()
    with pytest.raises(UserValueError, match="top prior"):
        JukeboxFeatures(models.priors[1], [1])
    with pytest.raises(UserValueError, match="layer 5 does not exist"):
        JukeboxFeatures(models.priors[2], [5])


# -- `jukebox-pl features` on a tiny run ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A random-weight tiny run (top prior: 4 blocks, the 4th a cross-attention to the lyrics encoder; n_ctx 32
    codes of hop 128 = 0.19 s) and a few audio files, good and bad."""
    root = tmp_path_factory.mktemp("features")
    models = tiny_models()
    with torch.no_grad():  # a codebook spread over the encoder's outputs, so that audio gives varied codes
        for level in models.vqvae.levels.values():
            z = level.encoder(0.3 * torch.randn(1, 1, 8192))
            level.bottleneck.init_codebook(z.permute(0, 2, 1).reshape(-1, level.cfg.emb_width))
    models.vocabs = {2: VOCAB}  # saved with the top prior: --artist names are looked up in it
    models.save_pretrained(root / "run")
    files = []
    for i, seconds in enumerate((1.3, 0.7, 2.1)):
        t = np.arange(int(seconds * SR)) / SR
        audio = 0.3 * np.sin(2 * np.pi * 180 * (i + 1) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        files.append(root / f"song{i}.wav")
        sf.write(files[-1], np.stack([audio, 0.5 * audio], 1).astype(np.float32), SR)
    (root / "broken.wav").write_bytes(b"RIFF not really audio")
    sf.write(root / "blip.wav", np.zeros(200, np.float32), SR)
    return {"root": root, "run": root / "run", "files": files, "bad": [root / "broken.wav", root / "blip.wav"]}


def features(tiny, out, *args) -> int:
    return main(["features", "--run", str(tiny["run"]), "--out", str(out), "--no-progress", *args])


def arrays(out: Path, layer: int) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted((out / f"layer{layer}").glob("*.npy"))}


def test_audio_files_bad_ones_reported_and_a_resume_that_skips_what_is_written(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    files = [str(f) for f in tiny["files"] + tiny["bad"]]
    assert features(tiny, out, "--audio", *files, "--layers", "2", "4", "--seconds", "1", "--min-seconds", "0.5",
                    "--batch-size", "2") == 0  # fmt: skip
    index = json.loads((out / "features.json").read_text())
    assert sorted(index["tracks"]) == ["song0", "song1", "song2"]
    assert sorted(index["skipped"]) == ["blip", "broken"]
    assert "shorter than --min-seconds 0.5" in index["skipped"]["blip"]["error"]
    song1 = index["tracks"]["song1"]
    assert song1["codes"] == -(-int(0.7 * SR) // 128) and song1["files"] == {"2": "layer2/song1.npy",
                                                                              "4": "layer4/song1.npy"}  # fmt: skip
    assert (song1["artist"], song1["artist_id"], song1["offset_seconds"]) == ("unknown", 0, 0.0)
    assert song1["total_seconds"] == pytest.approx(62.0, abs=128 / SR)
    for layer in (2, 4):
        got = arrays(out, layer)
        assert sorted(got) == ["song0", "song1", "song2"] and all(a.shape == (32,) for a in got.values())
    assert not np.allclose(arrays(out, 2)["song0"], arrays(out, 4)["song0"])
    said = capsys.readouterr().out
    assert "3 written now" in said and "skipped" in said and "broken.wav" in said
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert features(tiny, out, "--audio", *files, "--layers", "2", "4", "--seconds", "1", "--min-seconds", "0.5",
                    "--batch-size", "2") == 0  # fmt: skip
    assert "0 written now, 3 already there" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before
    assert features(tiny, out, "--audio", *files, "--layers", "3", "--seconds", "1") == 2
    assert "other settings (layers: was [2, 4], now [3]" in capsys.readouterr().err


def test_batching_windows_and_pooling_agree_with_one_track_at_a_time(tiny, tmp_path):
    """Rows padded in a batch, several windows of n_ctx codes, and the pools all describe the same activations."""
    files = [str(f) for f in tiny["files"]]
    runs = {}
    for name, extra in (("batched", ["--batch-size", "3"]), ("single", ["--batch-size", "1"])):
        out = tmp_path / name
        assert features(tiny, out, "--audio", *files, "--layers", "3", "--seconds", "2", "--min-seconds", "0.5",
                        "--pool", "none", *extra) == 0  # fmt: skip
        runs[name] = arrays(out, 3)
    for key, array in runs["single"].items():
        np.testing.assert_allclose(runs["batched"][key], array, atol=1e-5)
    song2 = runs["single"]["song2"]
    assert song2.shape == (-(-2 * SR // 128), 32)  # 2 s: 345 codes, 11 windows of 32
    one_window = tmp_path / "window"
    assert features(tiny, one_window, "--audio", files[2], "--layers", "3", "--pool", "none") == 0
    first = arrays(one_window, 3)["song2"]
    assert first.shape == (32, 32)  # the default: one context window
    # the same first window, but for its last codes: a clip cut at 0.19 s ends inside the encoder's reach there
    np.testing.assert_allclose(song2[:28], first[:28], atol=1e-5)
    assert not np.allclose(song2[32:64], first)  # the second window has its own context and offset
    pooled = tmp_path / "pooled"
    assert features(tiny, pooled, "--audio", files[2], "--layers", "3", "--seconds", "2", "--pool", "0.5") == 0
    windows = arrays(pooled, 3)["song2"]
    size = round(0.5 * SR / 128)
    assert windows.shape == (-(-len(song2) // size), 32)
    np.testing.assert_allclose(windows[0], song2[:size].mean(0), atol=1e-5)


def test_codes_files_skip_the_vqvae(tiny, tmp_path, capsys):
    """`encode`'s codes give the features of the audio it encoded (read without peak normalisation)."""
    audio = str(tiny["files"][0])
    codes = tmp_path / "song0.pt"
    assert main(["encode", "--audio", audio, "--run", str(tiny["run"]), "--out", str(codes), "--levels", "top"]) == 0
    # the whole 1.3 s track on both sides: a clip cut shorter would end its audio inside the encoder's reach
    assert features(tiny, tmp_path / "a", "--audio", audio, "--layers", "2", "--no-normalize", "--seconds", "2") == 0
    assert features(tiny, tmp_path / "c", "--codes", str(codes), "--layers", "2", "--seconds", "2") == 0
    np.testing.assert_allclose(arrays(tmp_path / "c", 2)["song0"], arrays(tmp_path / "a", 2)["song0"], atol=1e-5)
    assert features(tiny, tmp_path / "x", "--codes", str(codes), "--audio", audio, "--layers", "2") == 2
    assert "exactly one of --audio, --data, --codes" in capsys.readouterr().err


def test_shards_with_each_tracks_labels(tiny, shards, tmp_path):
    out = tmp_path / "out"
    assert features(tiny, out, "--data", str(shards), "--layers", "1", "--artist", "track", "--genre", "track",
                    "--total-seconds", "track", "--seconds", "1") == 0  # fmt: skip
    index = json.loads((out / "features.json").read_text())
    manifest = json.loads((shards / "manifest.json").read_text())
    assert len(index["tracks"]) == sum(manifest["counts"]["tracks"].values())
    record = next(iter(index["tracks"].values()))
    assert record["track_artist"].startswith("Artist ") and record["artist"] == record["track_artist"]
    assert record["artist_id"] == 0  # a name the tiny run's vocabulary lacks: unknown, as the reference does
    assert 2.9 <= record["total_seconds"] <= 7.0  # the track's own length (whole codes)


def test_a_damaged_shard_is_reported_and_the_others_are_read(tiny, shards, tmp_path):
    import shutil

    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    manifest = json.loads((data / "manifest.json").read_text())
    damaged = data / manifest["shards"]["train"][0]
    damaged.write_bytes(damaged.read_bytes()[:700])  # the first header and a bit of its track
    out = tmp_path / "out"
    assert features(tiny, out, "--data", str(data), "--layers", "1", "--seconds", "1") == 0
    index = json.loads((out / "features.json").read_text())
    assert len(index["skipped"]) == 1 and len(index["tracks"]) == sum(manifest["counts"]["tracks"].values()) - 1
    (reason,) = [r["error"] for r in index["skipped"].values()]
    assert damaged.name in reason and ("cut short" in reason or "cannot be read" in reason), reason


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_weights_in_lower_precision_stay_close(tiny, tmp_path, weights):
    files = [str(f) for f in tiny["files"]]
    assert features(tiny, tmp_path / "fp32", "--audio", *files, "--layers", "3") == 0
    assert features(tiny, tmp_path / weights, "--audio", *files, "--layers", "3", "--weights", weights) == 0
    for key, want in arrays(tmp_path / "fp32", 3).items():
        got = arrays(tmp_path / weights, 3)[key]
        cosine = float(np.dot(got, want) / np.linalg.norm(got) / np.linalg.norm(want))
        assert cosine > 0.99, (key, cosine)


def test_the_lyrics_encoder_is_kept_only_for_cross_attention_layers(tiny):
    below = JukeboxFeatures.from_run(tiny["run"], [3])
    assert not any(k.startswith("prime_prior.") for k in below.prior.state_dict())
    at = JukeboxFeatures.from_run(tiny["run"], [4])
    assert any(k.startswith("prime_prior.") for k in at.prior.state_dict())
    audio = torch.from_numpy(prepare_audio(sf.read(tiny["files"][0], always_2d=True)[0].T, SR, SR, 1.0))[None]
    assert at(audio)[4].shape == (1, -(-audio.shape[1] // 128), 32)


def test_unknown_labels_and_layers_are_one_line(tiny, tmp_path, capsys):
    audio = str(tiny["files"][0])
    assert features(tiny, tmp_path / "a", "--audio", audio, "--layers", "9") == 2
    assert "layer 9 does not exist: this prior has layers 1..4" in capsys.readouterr().err
    assert features(tiny, tmp_path / "b", "--audio", audio, "--layers", "1", "--artist", "Nobody Atall") == 2
    assert "unknown artist 'Nobody Atall'" in capsys.readouterr().err
    assert features(tiny, tmp_path / "d", "--audio", audio, "--layers", "1", "--artist", "Reed Rasmus") == 0
    record = json.loads((tmp_path / "d" / "features.json").read_text())["tracks"]["song0"]
    assert (record["artist"], record["artist_id"]) == ("Reed Rasmus", VOCAB.artist_id("Reed Rasmus"))
    assert features(tiny, tmp_path / "e", "--audio", audio, "--layers", "1") == 0
    assert not np.allclose(arrays(tmp_path / "d", 1)["song0"], arrays(tmp_path / "e", 1)["song0"])
    assert features(tiny, tmp_path / "c", "--audio", str(tmp_path / "missing.wav"), "--layers", "1") != 0


def ddp_command(tiny, out, *args) -> list[str]:
    files = [str(f) for f in tiny["files"]]
    return [sys.executable, "-m", "jukebox_pl", "features", "--run", str(tiny["run"]), "--out", str(out), "--audio",
            *files, "--layers", "2", "--accelerator", "cpu", "--batch-size", "1", "--no-progress", *args]  # fmt: skip


def one_index(out: Path) -> dict:
    index = json.loads((out / "features.json").read_text())
    assert sorted(index["tracks"]) == ["song0", "song1", "song2"] and not index["skipped"]
    assert not list((out / ".parts").glob("*.jsonl"))  # every process's records merged into the one index
    return index


@pytest.mark.slow
@pytest.mark.ddp
def test_two_processes_on_one_node_share_the_tracks(tiny, tmp_path):
    """DDP on the CPU (gloo), Lightning launching the second process: every track written once, one index."""
    from test_multinode import clean_env, free_port

    env = {**clean_env(), "MASTER_PORT": str(free_port())}
    proc = subprocess.run(ddp_command(tiny, tmp_path / "ddp", "--devices", "2"), capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_index(tmp_path / "ddp")


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_share_the_tracks_and_match_one_process(tiny, tmp_path):
    """Two "nodes" started by hand (NODE_RANK 0 and 1, --num-nodes 2): the arrays equal a one-process run's."""
    from test_multinode import by_hand_env, launch

    out = tmp_path / "nodes"
    results = launch([ddp_command(tiny, out, "--num-nodes", "2", "--devices", "1")] * 2, by_hand_env())
    for rc, log in results:
        assert rc == 0, log[-3000:]
    one_index(out)
    assert main(["features", "--run", str(tiny["run"]), "--out", str(tmp_path / "one"), "--audio",
                 *map(str, tiny["files"]), "--layers", "2", "--no-progress"]) == 0  # fmt: skip
    for key, want in arrays(tmp_path / "one", 2).items():
        np.testing.assert_allclose(arrays(out, 2)[key], want, atol=1e-5)
