"""The real-music set's catalogue (composers from the packages' own credit files, whole songs held out) and the
metadata `split` column that pins them; on a fake package tree of generated audio (no third-party audio)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import soundfile as sf
from audio_fixtures import tone

from jukebox_pl.data.debian_music import (
    HELD_OUT,
    SOURCES,
    etr_credits,
    find_songs,
    hedgewars_credits,
    lincity_credit,
    package_licence,
    summary,
    write_set,
)
from jukebox_pl.data.metadata import load_metadata
from jukebox_pl.data.prep import PrepOptions, prepare_shards


def _song(path: Path, seconds: float = 2.0, freq: float = 220.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, 22050, freq), 22050, format="OGG")


def fake_packages(root: Path) -> Path:
    """The four packages' music folders as Debian installs them, with their credit files."""
    etr, hw, lc, fd = (root / s.music_dir.lstrip("/") for s in SOURCES)
    for name in ("race1-jt.ogg", "start1-jt.ogg", "calmrace-ks.ogg", "spunkyrace-ks.ogg"):
        _song(etr / name)
    (etr / "readme").write_text(
        "Music Authors List\n------------------\n\nJoseph Toscano <jt@example.org> composed:\n\trace1-jt.ogg\n"
        "\tstart1-jt.ogg\n\nK. Schroeder <ks@example.org> composed:\n\tcalmrace-ks.ogg\n\tspunkyrace-ks.ogg\n"
    )
    for name in ("snow.ogg", "Pirate.ogg", "City.ogg", "Art.ogg"):
        _song(hw / name)
    (hw / "credits.txt").write_text(
        "City.ogg=HSR <http://example.org>\npirate.ogg=Jonatan Nilsson\nsnow.ogg=Jonatan Nilsson\n"
        'sdmusic.ogg=Kevin MacLeod - "Hitman" [edit]\n'
    )
    _song(lc / "01 - pronobozo - lincity.ogg")
    _song(lc / "02 - Robert van Herk - City Blues.ogg")
    _song(fd / "menu.ogg")
    doc = root / "usr/share/doc/hedgewars-data"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: x\n\nFiles: *\nCopyright: someone\nLicense: GPL-2\n\nFiles: a/*\nLicense: MIT\n"
    )
    return root


def test_composers_come_from_each_packages_own_credit_file(tmp_path):
    root = fake_packages(tmp_path)
    etr = etr_credits(root / SOURCES[0].music_dir.lstrip("/"))
    assert etr == {
        "race1-jt.ogg": "Joseph Toscano",
        "start1-jt.ogg": "Joseph Toscano",
        "calmrace-ks.ogg": "K. Schroeder",
        "spunkyrace-ks.ogg": "K. Schroeder",
    }
    hw = hedgewars_credits(root / SOURCES[1].music_dir.lstrip("/"))
    assert hw["pirate.ogg"] == "Jonatan Nilsson" and hw["city.ogg"] == "HSR" and hw["sdmusic.ogg"] == "Kevin MacLeod"
    assert lincity_credit("02 - Robert van Herk - City Blues.ogg") == "Robert van Herk"
    assert lincity_credit("menu.ogg") is None
    assert package_licence("hedgewars-data", root) == "GPL-2"
    assert package_licence("lincity-ng-data", root).startswith("unknown")


def test_songs_without_a_named_composer_join_only_when_asked(tmp_path):
    root = fake_packages(tmp_path)
    songs = {s.path.name: s for s in find_songs(root=root)}
    assert "Art.ogg" not in songs and "menu.ogg" not in songs  # no credit names them
    assert songs["Pirate.ogg"].artist == "Jonatan Nilsson"  # credits matched without case
    assert songs["02 - Robert van Herk - City Blues.ogg"].genre == "blues"
    assert songs["snow.ogg"].genre == "unknown"
    assert {n for n, s in songs.items() if s.split == "val"} == {"race1-jt.ogg", "spunkyrace-ks.ogg", "snow.ogg"}
    assert {n for n in songs if n in HELD_OUT} == {n for n, s in songs.items() if s.split == "val"}
    every = {s.path.name: s for s in find_songs(root=root, uncredited=True)}
    assert every["menu.ogg"].artist == "unknown" and every["Art.ogg"].artist == "unknown"
    assert summary(list(songs.values()))[0].startswith("9 songs")


def test_held_out_songs_stay_whole_in_validation_through_prep(tmp_path):
    songs = find_songs(root=fake_packages(tmp_path / "root"))
    meta = write_set(songs, tmp_path / "set")
    rows = list(csv.DictReader(meta.open()))
    assert {r["split"] for r in rows} == {"train", "val"} and all(r["licence"] for r in rows)
    assert (tmp_path / "set/audio/hedgewars-data/Pirate.ogg").is_file()
    # val_fraction 0.9 would send most tracks to validation by hash; the split column decides instead
    opts = PrepOptions(src=str(tmp_path / "set/audio"), out=str(tmp_path / "shards"), metadata=str(meta), sr=22050)
    opts.val_fraction = 0.9
    manifest = prepare_shards(opts, progress=False)
    split = {Path(t["path"]).name: t["split"] for t in manifest["tracks"]}
    assert split == {s.path.name: s.split for s in songs}
    assert json.loads((tmp_path / "shards/manifest.json").read_text())["counts"]["tracks"]["val"] == 3


def test_a_bad_split_cell_is_reported_and_left_to_the_hash(tmp_path):
    meta = tmp_path / "m.csv"
    meta.write_text("path,artist,split\na.wav,x,val\nb.wav,y,holdout\nc.wav,z,\n")
    parsed = load_metadata(meta)
    assert parsed.rows["a.wav"].split == "val"
    assert parsed.rows["b.wav"].split is None and parsed.rows["c.wav"].split is None
    assert any("column 'split'" in p and "'holdout'" in p and "row 3" in p for p in parsed.problems), parsed.problems
