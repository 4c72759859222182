"""`jukebox-pl sample` end to end on a small trained run: every mode, resume, the gallery in a real browser."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from prior_settings import COMMON, PRIOR, VQVAE

from jukebox_pl.cli import main
from jukebox_pl.sampling import song_sampler
from jukebox_pl.stages.train_prior import train_prior
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.vqvae.vqvae import VQVAE as Container

SR, HOP_TOP = 22050, 128


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory) -> Path:
    """Top and middle VQ-VAE levels and priors, trained for a step or two."""
    run = tmp_path_factory.mktemp("sample_run") / "run"
    for level in ("top", "middle"):
        train_vqvae(run, level, "tiny", str(shards), VQVAE + COMMON)
        train_prior(run, level, "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    return run


def sample(run, out, *args) -> int:
    return main(["sample", "--run", str(run), "--out", str(out), "--levels", "2", "--no-progress", *args])


def page_in_browser(index: Path) -> tuple[str, str]:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is needed for the gallery test (`make browser` installs it)"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", index.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.stdout, proc.stderr


@pytest.mark.slow
def test_end_to_end_writes_wavs_codes_and_a_working_page(run, tmp_path, capsys):
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("la la la, sing along\nthe organ plays on")
    out = tmp_path / "out"
    code = sample(run, out, "--artist", "Artist 1", "--artist", "Artist 2", "--genre", "rock", "--lyrics",
                  str(lyrics), "--seconds", "0.5", "--seed", "7")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    want = -(-int(0.5 * SR) // HOP_TOP) * HOP_TOP
    for level in ("top", "middle"):
        for i in (0, 1):
            audio, sr = sf.read(out / level / f"sample_{i}.wav")
            assert sr == SR and len(audio) == want
    saved = torch.load(out / "codes.pt", weights_only=False)
    assert saved["codes"]["top"].shape == (2, want // HOP_TOP) and saved["codes"]["middle"].shape == (2, want // 32)
    assert saved["labels"]["artists"] == ["Artist 1", "Artist 2"] and saved["settings"]["seed"] == 7
    dom, log = page_in_browser(out / "index.html")
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="yes"' in body and 'data-players="4"' in body and 'data-playable="4"' in body, body
    assert "broken" not in body and "CONSOLE" not in log, log[-2000:]
    assert dom.count("<span>") == 2 * len("la la la, sing along\nthe organ plays on")  # per character and sample
    align = json.loads(re.search(r'data-alignment="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(align["times"]) == len(align["chars"]) > 0


@pytest.mark.slow
def test_the_fixed_shape_decoder_samples_the_same_song(run, tmp_path, capsys):
    """`--decode static` (the step a CUDA graph records, run eagerly) draws the codes `--decode dynamic` draws;
    `--decode graph` without a GPU is refused by name."""
    codes = {}
    for decode in ("dynamic", "static"):
        out = tmp_path / decode
        assert sample(run, out, "--artist", "Artist 1", "--seconds", "0.3", "--seed", "3", "--decode", decode) == 0
        codes[decode] = torch.load(out / "codes.pt", weights_only=False)["codes"]
    assert all(torch.equal(codes["dynamic"][k], codes["static"][k]) for k in ("top", "middle"))
    capsys.readouterr()
    assert sample(run, tmp_path / "graph", "--artist", "Artist 1", "--seconds", "0.3", "--decode", "graph") != 0
    assert "decode=graph records a CUDA graph: the prior is on cpu" in capsys.readouterr().err


@pytest.mark.slow
def test_a_prior_trained_with_label_dropout_samples_with_guidance(run, shards, tmp_path, capsys, monkeypatch):
    """`prior.top.cfg_drop.*` makes training see the null labels and lyrics; `sample --cfg-scale 3` then guides
    the top level and says the middle one (trained without) is sampled plainly; per-level scales refuse it."""
    import jukebox_pl.prior.lightning as prior_lightning

    guided = tmp_path / "run"
    shutil.copytree(run, guided)
    shutil.rmtree(guided / "prior_top")
    seen = []
    real = prior_lightning.drop_conditions
    monkeypatch.setattr(prior_lightning, "drop_conditions", lambda b, p: seen.append(p) or real(b, p))
    drop = ["prior.top.cfg_drop.artist=0.5", "prior.top.cfg_drop.genre=0.3", "prior.top.cfg_drop.lyrics=0.3"]
    train_prior(guided, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=2", *drop])
    assert seen and seen[0] == {"artist": 0.5, "genre": 0.3, "lyrics": 0.3} and len(seen) == 2  # training only
    capsys.readouterr()
    out = tmp_path / "out"
    assert sample(guided, out, "--artist", "Artist 1", "--seconds", "0.3", "--cfg-scale", "3") == 0
    assert "the middle prior samples without guidance" in capsys.readouterr().out
    saved = torch.load(out / "codes.pt", weights_only=False)
    assert saved["settings"]["cfg_scale"] == [3.0] and saved["codes"]["top"].shape[0] == 1
    assert sample(guided, tmp_path / "o2", "--artist", "Artist 1", "--seconds", "0.3", "--cfg-scale", "3,2") != 0
    assert "--cfg-scale 2.0 for the middle prior, which did not learn" in capsys.readouterr().err
    assert sample(guided, tmp_path / "o3", "--artist", "Artist 1", "--cfg-scale", "-1") != 0
    assert "--cfg-scale '-1': expected numbers >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_each_sample_can_ask_for_its_own_genres(run, tmp_path, capsys):
    out = tmp_path / "out"
    code = sample(run, out, "--artist", "Artist 1", "--artist", "Artist 2", "--genre-each", "jazz",
                  "--genre-each", "rock,pop", "--seconds", "0.3")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    saved = torch.load(out / "codes.pt", weights_only=False)
    assert saved["labels"]["genres"] == [["jazz"], ["rock", "pop"]]
    genres = saved["spec"]["genres"]  # the ids sampled with: one list per sample
    assert len(genres) == 2 and genres[0] != genres[1] and len(genres[1]) == 2, genres
    page = (out / "index.html").read_text()
    assert "genres: jazz" in page and "genres: rock, pop" in page


@pytest.mark.slow
def test_unknown_artist_is_named_with_close_matches(run, tmp_path, capsys):
    assert sample(run, tmp_path / "x", "--artist", "Artist 11", "--seconds", "0.5") == 2
    err = capsys.readouterr().err
    assert "unknown artist 'Artist 11'" in err and "Did you mean" in err and "artist 1" in err.lower()
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_resume_after_an_interruption_equals_an_uninterrupted_run(run, tmp_path, monkeypatch):
    args = ("--artist", "Artist 0", "--seconds", "1.5", "--seed", "3", "--hop-fraction", "0.5,0.5")
    assert sample(run, tmp_path / "full", *args) == 0
    original, calls = song_sampler.SongSampler._window, {"n": 0}

    def interrupted(self, *a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *a)

    monkeypatch.setattr(song_sampler.SongSampler, "_window", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample(run, tmp_path / "cut", *args)
    monkeypatch.setattr(song_sampler.SongSampler, "_window", original)
    assert sample(run, tmp_path / "cut", *args) == 2  # refuses to overwrite without --resume
    assert sample(run, tmp_path / "cut", *args, "--resume") == 0
    full = torch.load(tmp_path / "full" / "codes.pt", weights_only=False)["codes"]
    cut = torch.load(tmp_path / "cut" / "codes.pt", weights_only=False)["codes"]
    for level in ("top", "middle"):
        assert torch.equal(full[level], cut[level])


@pytest.mark.slow
def test_continue_upsample_and_primed_modes(run, tmp_path):
    first = tmp_path / "first"
    assert sample(run, first, "--artist", "Artist 0", "--seconds", "0.5") == 0
    codes = torch.load(first / "codes.pt", weights_only=False)["codes"]

    assert sample(run, tmp_path / "cont", "--mode", "continue", "--codes", str(first / "codes.pt"), "--seconds",
                  "1.0", "--artist", "Artist 0") == 0  # fmt: skip
    longer = torch.load(tmp_path / "cont" / "codes.pt", weights_only=False)["codes"]
    for level in ("top", "middle"):
        n = codes[level].shape[1]
        hop = HOP_TOP if level == "top" else 32
        assert torch.equal(longer[level][:, :n], codes[level])
        assert longer[level].shape[1] == -(-SR // HOP_TOP) * HOP_TOP // hop  # 1.0 s rounded up to the top hop

    assert sample(run, tmp_path / "up", "--mode", "upsample", "--codes", str(first / "codes.pt"),
                  "--artist", "Artist 0", "--seed", "5") == 0  # fmt: skip
    up = torch.load(tmp_path / "up" / "codes.pt", weights_only=False)["codes"]
    assert torch.equal(up["top"], codes["top"]) and up["middle"].shape == codes["middle"].shape
    assert (tmp_path / "up" / "middle" / "sample_0.wav").is_file()

    t = np.arange(int(0.6 * SR)) / SR
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, 0.3 * np.sin(2 * np.pi * 220 * t), SR)
    assert sample(run, tmp_path / "primed", "--mode", "primed", "--prompt", str(prompt), "--prompt-seconds", "0.3",
                  "--seconds", "0.8", "--artist", "Artist 0") == 0  # fmt: skip
    primed = torch.load(tmp_path / "primed" / "codes.pt", weights_only=False)["codes"]
    vqvae = Container.from_run(run)
    keep = int(0.3 * SR) // HOP_TOP * HOP_TOP
    x = torch.from_numpy(sf.read(prompt, dtype="float32")[0][:keep]).reshape(1, 1, -1)
    for name, idx in (("top", 2), ("middle", 1)):
        want = vqvae.encode(x, levels=[idx])[idx]
        assert torch.equal(primed[name][:, : want.shape[1]], want)


class Payload:
    """Unpickling this creates `marker`: the marker shows whether a crafted file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_crafted_files_are_refused_by_sampling_fine_tuning_and_encoding(run, shards, tmp_path, capsys):
    """The commands that read a file beside good ones: continue/upsample codes, a tampered sampling state,
    `train prior --init / --vqvae`, `encode-shards --vqvae`; each refuses it by name and nothing runs."""
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"codes": {"top": torch.zeros(1, 4, dtype=torch.long)}, "x": Payload(marker)}, evil)
    cut = tmp_path / "cut"
    assert sample(run, cut, "--artist", "Artist 0", "--seconds", "0.5") == 0
    shutil.copy(evil, cut / "state.pt")
    top = str(run / "vqvae_top" / "checkpoints" / "last.ckpt")
    commands = [
        ["sample", "--run", str(run), "--out", str(tmp_path / "c"), "--levels", "2", "--no-progress", "--mode",
         "continue", "--codes", str(evil), "--seconds", "1.0"],
        ["sample", "--run", str(run), "--out", str(cut), "--levels", "2", "--no-progress", "--artist", "Artist 0",
         "--seconds", "0.5", "--resume"],
        ["train", "prior", "--level", "top", "--preset", "tiny", "--run", str(tmp_path / "ft"), "--data",
         str(shards), "--vqvae", top, "--init", str(evil), *PRIOR, *COMMON, "trainer.max_steps=1"],
        ["train", "prior", "--level", "top", "--preset", "tiny", "--run", str(tmp_path / "ft2"), "--data",
         str(shards), "--vqvae", str(evil), *PRIOR, *COMMON, "trainer.max_steps=1"],
        ["encode-shards", "--shards", str(shards), "--out", str(tmp_path / "codes"), "--vqvae", top, str(evil),
         "--no-progress"],
    ]  # fmt: skip
    for args in commands:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert re.search(r"(evil|state)\.pt is refused: it holds Python objects", err), (args, err)
    assert not marker.exists()
