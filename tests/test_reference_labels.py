"""Artist and genre ids as the reference computes them (`jukebox/data/artist_genre_processor.py`), from id
tables in its `name;id` format. The tables here are small ones written for the tests (the reference's own are
not part of the project); their names follow the reference's conventions (v2: `norm`-ed, v3: lower case)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from jukebox_pl.data.pipeline import label_ids
from jukebox_pl.data.vocab import LabelVocab, UnknownLabelError
from jukebox_pl.errors import MissingInputError, UserValueError
from jukebox_pl.interop.ids import read_reference_ids
from jukebox_pl.sampling.models import vocab_of
from jukebox_pl.sampling.song_sampler import genre_slots
from jukebox_pl.stages.sample import SampleRequest, resolve_labels
from jukebox_pl.text import reference_norm

V2_ARTISTS = "unknown;0\nvarious;0\n;0\nandr_s_schiff;1\nalan_jackson;2\nthe_beatles;3\nac_dc;4\n"
V2_GENRES = "unknown;0\nrock;1\nalternative;2\nhip;3\nhop;4\ncountry;5\n"
V3_ARTISTS = "alan jackson;1\nthe beatles;2\ncéline dion;3\nac/dc;4\nBeyoncé;5\nunknown;0\n"
V3_GENRES = "alternative rock;1\ncountry rock;2\nhip hop;3\nunknown;0\n"


@pytest.fixture
def ids(tmp_path):
    for name, text in (("v2_artist_ids.txt", V2_ARTISTS), ("v2_genre_ids.txt", V2_GENRES),
                       ("v3_artist_ids.txt", V3_ARTISTS), ("v3_genre_ids.txt", V3_GENRES)):  # fmt: skip
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_reference_norm():
    # lower case; anything but ASCII letters and digits -> '_'; runs collapse; ends stripped; no transliteration
    assert reference_norm("  Beyoncé -- Knowles!! ") == "beyonc_knowles"
    assert reference_norm("AC/DC") == "ac_dc"
    assert reference_norm("András Schiff") == "andr_s_schiff"
    assert reference_norm("Hip-Hop") == "hip_hop"
    assert reference_norm("!!!") == ""


def test_v2_artists_are_normed_and_share_id_zero(ids):
    v2 = read_reference_ids(ids, "v2")
    assert v2.style == "openai-v2" and v2.max_genres == 5
    assert v2.artist_id("Alan Jackson") == 2 and v2.artist_id("  The   Beatles!! ") == 3
    assert v2.artist_id("AC/DC") == 4 and v2.artist_id("András Schiff") == 1
    assert v2.artist_id("Various") == v2.artist_id("") == v2.artist_id("unknown") == 0  # names of id 0
    assert v2.artist_name(0) == "unknown" and v2.artist_name(3) == "the_beatles"
    assert v2.n_artists == 5  # max id + 1, though the table has 7 lines
    with pytest.raises(UnknownLabelError, match=r"'Alan Jacksen' \(looked up as 'alan_jacksen'\).*alan_jackson"):
        v2.artist_id("Alan Jacksen")
    assert v2.artist_id("Alan Jacksen", strict=False) == 0


def test_v2_genres_are_a_bag_of_words(ids):
    v2 = read_reference_ids(ids, "v2")
    assert v2.genre_ids("Alternative Rock") == [2, 1]
    assert v2.genre_ids("hip-hop") == [3, 4] and v2.genre_ids("Rock") == [1] and v2.genre_id("rock") == 1
    assert v2.n_genres == 6 and v2.genre_name(4) == "hop"
    with pytest.raises(ValueError, match="genre_ids"):
        v2.genre_id("alternative rock")
    with pytest.raises(UnknownLabelError, match="genre word 'and' \\(a word of 'rock and roll'\\)"):
        v2.genre_ids("rock and roll")
    assert v2.genre_ids("rock and roll", strict=False) == [1, 0, 0]  # the reference maps unknown words to 0
    with pytest.raises(UserValueError, match="6 words.*at most 5"):
        v2.genre_ids("rock rock rock rock rock rock")


def test_v3_names_are_only_lower_cased(ids):
    v3 = read_reference_ids(ids, "v3")
    assert v3.style == "openai-v3" and v3.max_genres == 1
    assert v3.artist_id("Alan Jackson") == 1 and v3.artist_id("Céline Dion") == 3 and v3.artist_id("AC/DC") == 4
    assert v3.artist_id("BEYONCÉ") == 5  # the table's own 'Beyoncé' is lower-cased when read
    with pytest.raises(UnknownLabelError):
        v3.artist_id(" alan jackson")  # not stripped, as the reference
    assert v3.genre_ids("Country Rock") == [2] and v3.genre_id("hip hop") == 3
    with pytest.raises(UnknownLabelError, match="country.*country rock"):
        v3.genre_ids("country")
    assert v3.n_artists == 6 and v3.n_genres == 4


def test_jukebox_pl_style_is_unchanged():
    vocab = LabelVocab().extend(artists=["Zed"], genres=["Alt Rock", "pop"])
    assert vocab.style == "jukebox-pl" and vocab.max_genres is None
    assert vocab.genres == {"unknown": 0, "alt rock": 1, "pop": 2}
    assert vocab.genre_ids("Alt  Rock") == [vocab.genre_id("alt rock")] == [1]


def test_styles_and_shared_ids_survive_save_and_load(ids, tmp_path):
    v2 = read_reference_ids(ids, "v2")
    back = LabelVocab.load(v2.save(tmp_path / "vocab.json"))
    assert back == v2 and back.artist_id("various") == 0 and back.genre_ids("alternative rock") == [2, 1]
    assert json.loads((tmp_path / "vocab.json").read_text())["style"] == "openai-v2"
    old = tmp_path / "old.json"  # written before styles existed
    old.write_text(json.dumps({"artists": {"unknown": 0, "x": 1}, "genres": {"unknown": 0}}))
    assert LabelVocab.load(old).style == "jukebox-pl"
    shared = {"artists": {"unknown": 0, "various": 0}, "genres": {"unknown": 0}}
    (tmp_path / "shared.json").write_text(json.dumps(shared))
    with pytest.raises(ValueError, match="same id"):
        LabelVocab.load(tmp_path / "shared.json")  # jukebox-pl: one name per id
    (tmp_path / "bad.json").write_text(json.dumps({**shared, "style": "openai-v9"}))
    with pytest.raises(ValueError, match="openai-v9"):
        LabelVocab.load(tmp_path / "bad.json")
    assert vocab_of({"vocab": v2.to_dict()}) == v2  # a checkpoint's saved vocabulary keeps its style


def test_extending_a_reference_vocabulary_appends_ids(ids):
    v2 = read_reference_ids(ids, "v2").extend(artists=["New Artist", "AC/DC"], genres=["Space Rock"])
    assert v2.artist_id("new artist") == 5 and v2.artist_id("ac dc") == 4
    assert v2.genre_ids("space rock") == [6, 1]


def test_reading_tables_names_the_file_and_line(ids, tmp_path):
    with pytest.raises(ValueError, match="v4"):
        read_reference_ids(ids, "v4")
    with pytest.raises(MissingInputError, match="nowhere"):
        read_reference_ids(tmp_path / "nowhere")
    (ids / "v3_genre_ids.txt").unlink()
    with pytest.raises(MissingInputError, match="v3_genre_ids.txt"):
        read_reference_ids(ids, "v3")
    (ids / "v2_genre_ids.txt").write_text("unknown;0\n\n  rock;1  \nbroken line\n")
    with pytest.raises(UserValueError, match=r"v2_genre_ids.txt:4: .*'broken line'"):
        read_reference_ids(ids, "v2")
    (ids / "v2_genre_ids.txt").write_text("unknown;0\nrock;-1\n")
    with pytest.raises(UserValueError, match=r"v2_genre_ids.txt:2"):
        read_reference_ids(ids, "v2")
    (ids / "v2_genre_ids.txt").write_text("unknown;0\n\n  rock;1  \n")  # blank lines skipped, lines stripped
    assert read_reference_ids(ids, "v2").genres == {"unknown": 0, "rock": 1}


def test_sampling_resolves_each_genre_to_its_ids(ids, tmp_path):
    models = SimpleNamespace(vocab=read_reference_ids(ids, "v2"))
    req = SampleRequest(out=str(tmp_path), artists=["Alan Jackson"], genres=["Alternative Rock", "country"])
    artists, genres, names = resolve_labels(models, SampleRequest(**{**vars(req), "n_samples": 2}))
    assert artists == [2, 2] and genres == [[2, 1, 5], [2, 1, 5]] and names == ["Alan Jackson"] * 2
    with pytest.raises(UserValueError, match="at most 5"):
        resolve_labels(models, SampleRequest(**{**vars(req), "genres": ["hip hop", "alternative rock", "rock hop"]}))
    v3 = SimpleNamespace(vocab=read_reference_ids(ids, "v3"))
    assert resolve_labels(v3, SampleRequest(**{**vars(req), "genres": ["Alternative Rock"]}))[1] == [[1]]
    with pytest.raises(UserValueError, match="at most 1"):
        resolve_labels(v3, SampleRequest(**{**vars(req), "genres": ["alternative rock", "hip hop"]}))


def test_genre_slots_are_padded_as_the_prior_reads_them():
    assert genre_slots([[2, 1, 5], [3]], 5).tolist() == [[2, 1, 5, -1, -1], [3, -1, -1, -1, -1]]
    assert genre_slots([[], []], 1).tolist() == [[-1], [-1]]
    assert genre_slots([[2, 1], [3]], 0).tolist() == [[2, 1], [3, -1]]  # no limit known: the longest list
    with pytest.raises(UserValueError, match="3 genre ids.*at most 1"):
        genre_slots([[2, 1, 5]], 1)


def test_training_labels_flatten_word_bags(ids):
    v2 = read_reference_ids(ids, "v2")
    info = {"artist": "Alan Jackson", "genres": ["Alternative Rock", "Country"]}
    assert label_ids(info, v2, 5) == {"artist": 2, "genres": [2, 1, 5, -1, -1]}
    assert label_ids(info, v2, 2)["genres"] == [2, 1]
