"""The demo's artist check: a timbre classifier trained on the toy set recognises songs of the asked artists."""

import pytest
import soundfile as sf

from jukebox_pl.audio import read_audio, to_mono
from jukebox_pl.data.toy import make_toy_dataset
from jukebox_pl.stages.demo import artist_classifier, recognition, toy_songs


def as_samples(toy, paths: list[str], samples, seconds: int) -> None:
    """Real toy songs laid out as `jukebox-pl sample` writes its bottom level (the first `seconds` of each)."""
    (samples / "bottom").mkdir(parents=True)
    for i, path in enumerate(paths):
        audio, sr = read_audio(toy / "audio" / path)
        sf.write(samples / "bottom" / f"sample_{i}.wav", to_mono(audio)[0, : seconds * sr], sr)


@pytest.mark.slow
def test_artist_check_recognises_real_songs_and_not_wrong_labels(tmp_path):
    toy = tmp_path / "toy"
    make_toy_dataset(toy, songs_per_pair=1, seconds=(4.0, 5.0), seed=0)
    classifier = artist_classifier(toy, 22050, 2.0)
    # "generated" songs: real songs of an unseen seed, one per artist, laid out as `jukebox-pl sample` writes them
    other = tmp_path / "other"
    make_toy_dataset(other, songs_per_pair=1, seconds=(4.0, 5.0), seed=1)
    picked = {}
    for row in toy_songs(other):
        picked.setdefault(row["artist"], row["path"])
    artists = sorted(picked)
    as_samples(other, [picked[a] for a in artists], tmp_path / "samples", 2)
    right = recognition(tmp_path / "samples", artists, classifier)
    assert right["of"] == 4 and right["recognised"] >= 3, right
    wrong = recognition(tmp_path / "samples", artists[1:] + artists[:1], classifier)
    assert wrong["recognised"] <= 1, wrong


def test_artist_classifier_can_hear_through_the_codec(tmp_path):
    import torch

    from jukebox_pl.config.sections import vqvae_config
    from jukebox_pl.vqvae.model import VQVAELevelModel

    toy = tmp_path / "toy"
    make_toy_dataset(toy, songs_per_pair=1, seconds=(3.0, 3.5), seed=0)
    torch.manual_seed(0)
    codec = VQVAELevelModel(vqvae_config(levels=1, downs_t=[2], strides_t=[2], l_bins=16, width=8, depth=1), 0)
    plain, heard = artist_classifier(toy, 22050, 1.0), artist_classifier(toy, 22050, 1.0, codec=codec.eval())
    assert plain.classes == heard.classes and len(heard.classes) == 4
    assert not torch.allclose(torch.as_tensor(plain.centroids), torch.as_tensor(heard.centroids))


@pytest.mark.slow
def test_genre_check_hears_the_genre_of_real_songs(tmp_path):
    from jukebox_pl.data.toy import rhythm_features
    from jukebox_pl.stages.demo import first_genre, genre_classifier

    toy = tmp_path / "toy"
    make_toy_dataset(toy, songs_per_pair=1, seconds=(6.0, 7.0), seed=0)
    classifier = genre_classifier(toy, 22050, 4.0)
    other = tmp_path / "other"
    make_toy_dataset(other, songs_per_pair=1, seconds=(6.0, 7.0), seed=1)
    rows = toy_songs(other)
    as_samples(other, [r["path"] for r in rows], tmp_path / "samples", 4)
    genres = [first_genre(r) for r in rows]
    right = recognition(tmp_path / "samples", genres, classifier, features=rhythm_features)
    assert right["recognised"] >= 2 * len(rows) // 3, right  # chance is a third (swing and waltz can mix)
    wrong = recognition(tmp_path / "samples", genres[4:] + genres[:4], classifier, features=rhythm_features)
    assert wrong["recognised"] < right["recognised"], wrong


def test_the_demo_asks_every_artist_in_several_genres():
    from jukebox_pl.stages.demo import requested

    songs = [{"artist": a, "genre": g} for a in ("A", "B", "C", "D") for g in ("march", "swing", "waltz;folk")]
    artists, genres = requested(songs, 2)
    assert artists == ["A", "B", "C", "D"] * 2
    assert genres == ["march", "swing", "waltz", "march", "swing", "waltz", "march", "swing"]
    assert all(len({g for a, g in zip(artists, genres) if a == x}) == 2 for x in "ABCD")
