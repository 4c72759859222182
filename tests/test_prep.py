import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

import jukebox_pl.data.prep as prep_mod
from jukebox_pl.audio import read_audio
from jukebox_pl.cli import main
from jukebox_pl.data.prep import PrepOptions, PrepRefused, assign_splits, prepare_shards, track_key
from jukebox_pl.data.vocab import LabelVocab


def read_shards(folder: Path) -> dict[str, dict]:
    """Every track in a prep folder: key -> {json, audio, shard}."""
    tracks = {}
    manifest = json.loads((folder / "manifest.json").read_text())
    for split in ("train", "val"):
        for name in manifest["shards"][split]:
            for s in wds.WebDataset(str(folder / name), shardshuffle=False):
                assert s["__key__"] not in tracks, "a track was written twice"
                info = json.loads(s["json"])
                audio, sr = read_audio(s["flac"])
                tracks[s["__key__"]] = {"info": info, "audio": audio, "sr": sr, "shard": name, "split": split}
    return tracks


def test_manifest_is_honest(music, shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["tracks"]["train"] + c["tracks"]["val"] == len(music["good"])
    assert c["audio_files_found"] == len(music["good"]) + len(music["bad"]) - 1 + 1  # m4a not audio; truncated is
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    for path, reason in music["bad"].items():
        assert reason in skipped[path], (path, skipped[path])
    assert "cannot decode" in skipped[music["truncated"]]
    assert c["skipped"] == len(skipped) == len(music["bad"]) + 1
    assert c["other_files_ignored"] == 1  # README.txt
    tracks = read_shards(shards)
    seconds = sum(t["audio"].shape[1] / t["sr"] for t in tracks.values())
    assert manifest["hours"]["total"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert c["shards"]["train"] == c["tracks"]["train"]  # --shard-tracks 1
    assert manifest["metadata"]["rows_without_audio"] == ["missing/ghost.wav"]
    assert manifest["metadata"]["unknown_fields"] == ["mood"]
    assert not list(shards.glob("*.tmp"))


def test_shard_contents(music, shards):
    tracks = read_shards(shards)
    vocab = LabelVocab.load(shards / "vocab.json")
    sources = {t["info"]["source"]: t for t in tracks.values()}
    assert set(sources) == set(music["good"])
    for rel, t in sources.items():
        info = t["info"]
        assert t["sr"] == 22050 == info["sample_rate"]
        assert t["audio"].shape == (info["channels"], info["samples"])
        assert info["channels"] == music["channels"][rel]
        assert info["artist_id"] == vocab.artist_id(info["artist"]) > 0
        assert info["genre_ids"] == [vocab.genre_id(g) for g in info["genres"]]
        assert info["lyrics"].startswith("la la song") and info["extra"] == {"mood": "happy"}
        assert info["key"] == track_key(rel) and "." not in info["key"]
    # a 44.1 kHz stereo FLAC and a 48 kHz OGG were resampled, not truncated
    ogg = sources["artist2/song2.ogg"]
    assert ogg["info"]["source_sample_rate"] == 48000 and ogg["audio"].shape[0] == 2
    assert ogg["audio"].shape[1] == pytest.approx(4.0 * 22050, abs=2)


def test_split_is_deterministic_and_stable_under_additions():
    paths = [f"song{i}.wav" for i in range(200)]
    a = assign_splits(paths, 0.1)
    assert a == assign_splits(paths, 0.1)
    b = assign_splits(paths + ["new.wav"], 0.1)
    assert all(a[p] == b[p] for p in paths)
    assert 5 < sum(v == "val" for v in a.values()) < 40
    assert "val" in assign_splits(["a.wav", "b.wav"], 0.01).values()


def _opts(music, out, **kw):
    base = dict(
        src=str(music["root"]),
        out=str(out),
        metadata=str(music["metadata"]),
        sr=22050,
        val_fraction=0.4,
        shard_tracks=2,
        workers=1,
    )
    return PrepOptions(**{**base, **kw})


def test_interrupted_prep_resumes_to_the_same_result(music, tmp_path, monkeypatch):
    fresh = prepare_shards(_opts(music, tmp_path / "fresh"), progress=False)
    calls = {"n": 0}
    real = prep_mod.load_track

    def dies_on_sixth(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(prep_mod, "load_track", dies_on_sixth)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(_opts(music, out), progress=False)
    state = json.loads((out / ".prep_state.json").read_text())
    assert not state["complete"] and 0 < len(state["tracks"]) < len(music["good"])
    assert list(out.glob("*.tar.tmp")), "the shard being written stays under its temporary name"
    monkeypatch.setattr(prep_mod, "load_track", real)
    logs = []
    resumed = prepare_shards(_opts(music, out), progress=False, log=logs.append)
    assert any("resuming" in line for line in logs)
    assert resumed["tracks"] == fresh["tracks"] and resumed["counts"] == fresh["counts"]
    assert sorted(read_shards(out)) == sorted(read_shards(tmp_path / "fresh"))
    again = prepare_shards(_opts(music, out), progress=False, log=logs.append)
    assert "nothing to do" in logs[-1] and again["tracks"] == fresh["tracks"]


def test_refuses_to_mix_runs(music, tmp_path):
    out = tmp_path / "out"
    prepare_shards(_opts(music, out), progress=False)
    with pytest.raises(PrepRefused, match="sr: was 22050, now 44100"):
        prepare_shards(_opts(music, out, sr=44100), progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("x")
    with pytest.raises(PrepRefused, match="not empty"):
        prepare_shards(_opts(music, foreign), progress=False)
    replaced = prepare_shards(_opts(music, out, sr=16000, overwrite=True), progress=False)
    assert replaced["sample_rate"] == 16000


def test_refuses_when_source_changed_during_interrupted_run(music, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf_path = src / "a.wav"
    import soundfile as sf

    sf.write(sf_path, np.random.default_rng(0).uniform(-0.5, 0.5, 44100).astype(np.float32), 22050)
    out = tmp_path / "out"
    prepare_shards(PrepOptions(src=str(src), out=str(out), sr=22050, val_fraction=0.0, workers=1), progress=False)
    sf.write(src / "b.wav", np.random.default_rng(1).uniform(-0.5, 0.5, 44100).astype(np.float32), 22050)
    with pytest.raises(PrepRefused, match="changed"):
        prepare_shards(PrepOptions(src=str(src), out=str(out), sr=22050, val_fraction=0.0, workers=1), progress=False)


def test_no_metadata_means_unknown_labels_and_base_vocab_keeps_ids(music, tmp_path):
    out = prepare_shards(_opts(music, tmp_path / "plain", metadata=None), progress=False)
    assert out["vocab"] == {"file": "vocab.json", "artists": 1, "genres": 1}
    assert all(t["artist"] == "unknown" for t in out["tracks"])
    base = LabelVocab().extend(artists=["Zz Top", "Artist 1"], genres=["blues"])
    base.save(tmp_path / "base.json")
    prepare_shards(_opts(music, tmp_path / "ext", base_vocab=str(tmp_path / "base.json")), progress=False)
    grown = LabelVocab.load(tmp_path / "ext" / "vocab.json")
    assert grown.artist_id("zz top") == base.artist_id("zz top") and grown.artist_id("artist 1") == 1
    assert grown.artist_id("artist 0") == 3 and grown.genre_id("blues") == 1


def test_parallel_workers_give_identical_shards(music, tmp_path):
    prepare_shards(_opts(music, tmp_path / "w1", workers=1), progress=False)
    prepare_shards(_opts(music, tmp_path / "w2", workers=2), progress=False)
    for a in sorted((tmp_path / "w1").glob("*.tar")):
        assert a.read_bytes() == (tmp_path / "w2" / a.name).read_bytes()


def test_cli_prep_and_make_style_flags(music, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "prep",
            "--src",
            str(music["root"]),
            "--out",
            str(out),
            "--metadata",
            str(music["metadata"]),
            "--sr",
            "16000",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped bad/corrupt.mp3" in printed and "16000 Hz" in printed
    assert json.loads((out / "manifest.json").read_text())["sample_rate"] == 16000
    assert main(["prep", "--src", str(tmp_path / "nowhere"), "--out", str(out / "x")]) == 2
    assert "nowhere" in capsys.readouterr().err
