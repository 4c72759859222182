import json

import numpy as np
import pytest

from jukebox_pl.data.metadata import load_metadata, split_genres
from jukebox_pl.data.vocab import LabelVocab, UnknownLabelError
from jukebox_pl.lyrics import LyricsTokenizer, lyric_window
from jukebox_pl.text import fold_to_ascii, normalize_label


def test_vocab_sizes_match_reference():
    assert LyricsTokenizer("v2").n_vocab == 80
    assert LyricsTokenizer("v3").n_vocab == 79
    with pytest.raises(ValueError, match="v9"):
        LyricsTokenizer("v9")


def test_lyrics_cleaning_and_round_trip():
    tok = LyricsTokenizer("v2")
    assert tok.clean("Café “naïve” — ß\\next ✓") == 'Cafe "naive" -- ss\nnext '  # unidecode, as the reference
    ids = tok.encode("Hello, World!\n")
    assert ids.dtype == np.int64 and ids.min() >= 1 and ids.max() < tok.n_vocab
    assert tok.decode(ids) == "Hello, World!\n"
    assert LyricsTokenizer("v3").clean("a+b") == "ab"


def test_lyric_window_pads_short_lyrics_on_the_left():
    window, start = lyric_window(np.arange(1, 6), 8, total_length=100, offset=0, duration=10)
    assert window.tolist() == [0, 0, 0, 1, 2, 3, 4, 5] and start == -3


def test_lyric_window_follows_position_linearly_and_clamps():
    tokens = np.arange(1, 1001)
    mid, start = lyric_window(tokens, 100, total_length=10_000, offset=4_500, duration=1_000)
    assert start == 450 and mid[0] == 451 and len(mid) == 100
    first, s0 = lyric_window(tokens, 100, total_length=10_000, offset=0, duration=100)
    last, s1 = lyric_window(tokens, 100, total_length=10_000, offset=9_900, duration=100)
    assert s0 == 0 and s1 == 900 and last[-1] == 1000
    odd, _ = lyric_window(tokens, 7, total_length=10, offset=0, duration=1)
    assert len(odd) == 7


def test_labels_are_normalised():
    assert normalize_label("  Beyoncé   Knowles ") == "beyonce knowles"
    assert fold_to_ascii("Øystein Æsir") == "Oystein AEsir"


def test_vocab_ids_stable_when_extended(tmp_path):
    vocab = LabelVocab().extend(artists=["Zed", "Abba"], genres=["rock"])
    assert vocab.artists == {"unknown": 0, "abba": 1, "zed": 2}
    path = vocab.save(tmp_path / "vocab.json")
    grown = LabelVocab.load(path).extend(artists=["Aardvark", "Zed"])
    assert grown.artist_id("abba") == 1 and grown.artist_id("ZED") == 2 and grown.artist_id("aardvark") == 3
    assert grown.n_artists == 4 and grown.artist_name(3) == "aardvark"


def test_unknown_artist_lists_close_and_known_names():
    vocab = LabelVocab().extend(artists=["The Beatles", "The Doors", "Nina Simone"])
    with pytest.raises(UnknownLabelError) as err:
        vocab.artist_id("the beatels")
    assert "did you mean: the beatles" in str(err.value).lower() and "nina simone" in str(err.value)
    assert vocab.artist_id("nobody", strict=False) == 0


def test_bad_vocab_file_is_named(tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps({"artists": {"x": 0}, "genres": {"unknown": 0}}))
    with pytest.raises(ValueError, match="vocab.json.*unknown"):
        LabelVocab.load(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        LabelVocab.load(tmp_path / "nope.json")


def test_metadata_csv_with_lyric_files_and_unknown_fields(tmp_path):
    (tmp_path / "lyrics").mkdir()
    (tmp_path / "lyrics" / "a.txt").write_text("from a file\n")
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "path,artist,genre,lyrics,bpm\n"
        "./x/a.wav,Ann,rock;pop,lyrics/a.txt,120\n"
        'x\\b.flac,Bob,jazz,"two\nlines",90\n'
        ",Nobody,none,,\n"
        "x/c.wav,Cid,,missing.txt,\n"
    )
    m = load_metadata(meta, src_dir=tmp_path)
    assert m.get("x/a.wav").lyrics == "from a file\n" and m.get("x/a.wav").genres == ["rock", "pop"]
    assert m.get("x/b.flac").lyrics == "two\nlines" and m.get("x/b.flac").extra == {"bpm": "90"}
    assert m.get("x/c.wav").genres == ["unknown"]
    assert m.unknown_fields == ["bpm"]
    assert any("no 'path'" in p for p in m.problems) and any("missing.txt" in p for p in m.problems)


def test_metadata_jsonl_survives_bad_lines(tmp_path):
    meta = tmp_path / "meta.jsonl"
    meta.write_text(
        json.dumps({"path": "a.wav", "artist": "Ann", "genres": ["Rock", "Folk"], "year": 1999}) + "\n"
        "{not json\n"
        "[1, 2]\n"
    )
    m = load_metadata(meta)
    assert m.get("a.wav").genres == ["Rock", "Folk"] and m.get("a.wav").extra == {"year": 1999}
    assert len(m.problems) == 2 and "meta.jsonl:2" in m.problems[0]


def test_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        load_metadata(tmp_path / "nothere.csv")
    (tmp_path / "m.xml").write_text("<x/>")
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        load_metadata(tmp_path / "m.xml")


def test_split_genres():
    assert split_genres("a; b|c ,d") == ["a", "b", "c", "d"] and split_genres("") == ["unknown"]


def test_lyric_windows_of_interleaved_tracks_use_each_tracks_own_lyrics():
    """Mixed batches interleave tracks: the bounded token cache must never hand one track another's lyrics."""
    import numpy as np

    from jukebox_pl.data.pipeline import LyricWindows

    songs = {f"t{i}": f"song number {i} " * 20 for i in range(5)}
    windows = LyricWindows(16, "v2", keep=3)
    tok = LyricsTokenizer("v2")
    for key in ["t0", "t1", "t2", "t3", "t0", "t4", "t1", "t0"]:
        got = windows(key, songs[key], 10_000, 2_000, 1_000)["lyrics"]
        want = lyric_window(tok.encode(songs[key]), 16, 10_000, 2_000, 1_000)[0]
        assert np.array_equal(got, want), key
    assert len(windows.tokens) == 3
