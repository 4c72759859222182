import io
import json
import tarfile
from collections import Counter

import pytest
import torch

from jukebox_pl.config import ConfigError, load_config
from jukebox_pl.data.datamodule import AudioDataModule
from jukebox_pl.data.pipeline import reference_labels, split_for_consumer, train_offsets, val_offsets
from jukebox_pl.data.vocab import LabelVocab, UnknownLabelError
from jukebox_pl.lyrics import LyricsTokenizer

LENGTH = 8192


def make_dm(shards, **kw):
    cfg = load_config("tiny").data
    base = dict(
        shards=str(shards),
        sample_length=LENGTH,
        batch_size=3,
        n_lyric_tokens=32,
        shuffle_buffer=8,
        epoch_length=24,
        max_genres=3,
    )
    dm = AudioDataModule(cfg, **{**base, **kw})
    dm.setup("fit")
    return dm


def test_training_batches(shards):
    dm = make_dm(shards)
    loader = dm.train_dataloader()
    assert len(loader) == dm.batches_per_epoch == 8
    batches = list(loader)
    assert len(batches) == 8
    vocab = LabelVocab.load(shards / "vocab.json")
    tok = LyricsTokenizer("v2")
    for b in batches:
        assert b["audio"].shape == (3, 1, LENGTH) and b["audio"].dtype == torch.float32
        assert b["audio"].abs().max() <= 1.0 and b["audio"].abs().mean() > 1e-3
        assert b["artist"].dtype == torch.long and (b["artist"] > 0).all() and (b["artist"] < vocab.n_artists).all()
        g = b["genres"]
        assert g.shape == (3, 3) and ((g == -1) | ((g > 0) & (g < vocab.n_genres))).all() and (g[:, 0] > 0).all()
        assert (b["offset"] >= 0).all() and (b["offset"] + b["length"] <= b["total_length"]).all()
        assert b["lyrics"].shape == (3, 32) and b["lyrics"].dtype == torch.long
        for row in b["lyrics"]:
            assert tok.decode(row).startswith("la la song")  # whole lyric fits: left-padded window
        assert b["skipped"].item() == 0
    labels = reference_labels(batches[0], LENGTH)
    assert labels.shape == (3, 3 + 1 + 3 + 32) and (labels[:, 2] == LENGTH).all()
    assert torch.equal(labels[:, 3], batches[0]["artist"])


def test_training_crops_are_random_and_shuffled(shards):
    dm = make_dm(shards, epoch_length=150)
    loader = dm.train_dataloader()
    keys = [k for b in loader for k in b["key"]]
    manifest = json.loads((shards / "manifest.json").read_text())
    train_tracks = {t["key"] for t in manifest["tracks"] if t["split"] == "train"}
    assert len(train_tracks) >= 3 and {k.split("/")[0] for k in keys} == train_tracks
    second_epoch = [k for b in loader for k in b["key"]]
    assert len(set(keys)) > 20 and second_epoch != keys
    same_seed = [k for b in make_dm(shards, epoch_length=150).train_dataloader() for k in b["key"]]
    other_seed = [k for b in make_dm(shards, epoch_length=150, seed=1).train_dataloader() for k in b["key"]]
    assert same_seed == keys and other_seed != keys


def test_validation_is_deterministic_and_covers_every_track_once(shards):
    dm = make_dm(shards, val_crops_per_track=2, aug_blend=True)
    first = [(k, a) for b in dm.val_dataloader() for k, a in zip(b["key"], b["audio"])]
    second = [(k, a) for b in dm.val_dataloader() for k, a in zip(b["key"], b["audio"])]
    assert [k for k, _ in first] == [k for k, _ in second]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, second))
    manifest = json.loads((shards / "manifest.json").read_text())
    val_tracks = {t["key"] for t in manifest["tracks"] if t["split"] == "val"}
    per_track = Counter(k.split("/")[0] for k, _ in first)
    assert set(per_track) == val_tracks and set(per_track.values()) == {2}


@pytest.mark.parametrize("workers", [0, 2])
def test_validation_split_over_ranks_and_workers_is_disjoint_and_complete(shards, workers):
    everything = {k for b in make_dm(shards).val_dataloader() for k in b["key"]}
    seen = []
    for rank in range(2):
        dm = make_dm(shards, num_workers=workers)
        dm.rank, dm.world = rank, 2
        seen += [k for b in dm.val_dataloader() for k in b["key"]]
    assert len(seen) == len(set(seen)) and set(seen) == everything


@pytest.mark.parametrize("n_shards", range(1, 8))
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_split_for_consumer_assigns_each_track_once(n_shards, world, workers):
    tracks = {f"s{s}": [f"s{s}t{t}" for t in range(3)] for s in range(n_shards)}
    got = []
    for rank in range(world):
        for worker in range(workers):
            urls, mod, rem = split_for_consumer(list(tracks), rank, world, worker, workers)
            stream = [t for u in urls for t in tracks[u]]
            got += [t for i, t in enumerate(stream) if i % mod == rem]
    assert sorted(got) == sorted(t for ts in tracks.values() for t in ts)


def test_offsets():
    import random

    rng = random.Random(0)
    for total in (100, 1000, 12345):
        offs = train_offsets(total, 300, rng, shift=True)
        assert all(0 <= o <= max(0, total - 300) for o in offs) and len(offs) == max(1, round(total / 300))
    assert train_offsets(900, 300, rng, shift=False) == [0, 300, 600]
    assert val_offsets(1000, 300, 3) == [0, 350, 700] and val_offsets(100, 300, 4) == [0]


def test_stereo_mode_and_short_tracks_are_padded(shards):
    dm = make_dm(shards, channels=2, sample_length=22050 * 8, batch_size=2, aug_blend=False)
    b = next(iter(dm.val_dataloader()))
    assert b["audio"].shape == (2, 2, 22050 * 8)
    for audio, length in zip(b["audio"], b["length"]):
        assert length < 22050 * 8 and audio[:, length:].abs().max() == 0


def test_min_track_seconds_drops_short_tracks(shards):
    dm = make_dm(shards, min_track_seconds=4.0)
    manifest = json.loads((shards / "manifest.json").read_text())
    long_enough = {t["key"] for t in manifest["tracks"] if t["split"] == "val" and t["seconds"] >= 4.0}
    assert {k.split("/")[0] for b in dm.val_dataloader() for k in b["key"]} == long_enough


def test_pipe_urls_and_brace_patterns(shards):
    names = json.loads((shards / "manifest.json").read_text())["shards"]["train"]
    first, last = names[0].split("-")[1][:6], names[-1].split("-")[1][:6]
    urls = f"pipe:cat {shards}/train-{{{first}..{last}}}.tar"
    dm = make_dm("", train_urls=urls, val_urls=f"{shards}/{names[0]}", allow_urls=(urls,))  # a pipe: only if allowed
    assert len(dm.train_urls) == len(names) and dm.train_urls[0].startswith("pipe:cat ")
    b = next(iter(dm.train_dataloader()))
    assert b["audio"].shape == (3, 1, LENGTH) and (b["artist"] == 0).all()  # no vocab given: unknown ids


def test_bad_members_inside_shards_are_skipped_and_counted(shards, tmp_path):
    good = json.loads((shards / "manifest.json").read_text())["shards"]["val"][0]
    bad = tmp_path / "bad-000000.tar"
    with tarfile.open(bad, "w") as tar:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("broken1.flac", b"not flac at all" * 50)
        add("broken1.json", json.dumps({"samples": 100000, "sample_rate": 22050}).encode())
        add("noaudio.json", json.dumps({"samples": 5}).encode())
        add("badjson.flac", b"x")
        add("badjson.json", b"{oops")
        with tarfile.open(shards / good) as src:
            for m in src.getmembers():
                add(m.name, src.extractfile(m).read())
    dm = make_dm("", train_urls=str(bad), val_urls=str(bad), vocab=str(shards / "vocab.json"))
    batches = list(dm.val_dataloader())
    assert sum(len(b["key"]) for b in batches) == 2  # the one good track, two crops
    assert batches[-1]["skipped"].item() == 4  # 3 bad members; broken1's second crop is not decoded, but counted


def test_config_errors_are_named(shards):
    with pytest.raises(ConfigError, match="sample_lenght"):
        AudioDataModule(sample_lenght=4)
    with pytest.raises(ConfigError, match="batch_size"):
        AudioDataModule(batch_size="lots")
    dm = make_dm(shards, sample_rate=44100)
    with pytest.raises(ConfigError, match="22050 Hz.*--sr 44100"):
        dm.train_dataloader()
    with pytest.raises(FileNotFoundError, match="jukebox-pl prep"):
        make_dm(shards / "nothing-here")


def test_pretrained_vocab_missing_artists_fails_before_training(shards, tmp_path):
    LabelVocab().extend(artists=["Someone Else"]).save(tmp_path / "pre.json")
    with pytest.raises(UnknownLabelError, match="(?i)artist 0.*--base-vocab"):
        make_dm(shards, vocab=str(tmp_path / "pre.json"))


def test_too_few_validation_tracks_for_ranks_are_validated_by_every_rank(shards):
    """Fewer validation tracks than ranks: no refusal; every rank reads them all (a rank without any would leave
    the others waiting for its figures). With enough tracks each rank reads its own share."""
    dm = AudioDataModule(shards=str(shards), sample_length=LENGTH)
    dm._distributed = lambda: (5, 64)
    dm.setup("fit")
    assert dm.val_everywhere and dm.val_split == (0, 1)
    keys = {k.split("/")[0] for batch in dm.val_dataloader() for k in batch["key"]}
    val = {t["key"] for t in dm.manifest["tracks"] if t["split"] == "val"}
    assert keys == val
    dm = AudioDataModule(shards=str(shards), sample_length=LENGTH)
    dm._distributed = lambda: (1, 2)
    dm.setup("fit")
    assert not dm.val_everywhere and dm.val_split == (1, 2)
