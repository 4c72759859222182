"""Adding a conditioner touches one new file plus config: tests/toy_conditioner.py + `prior.top.conditioners`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from audio_fixtures import make_music_folder
from tests_support import TEMPO, tiny_models_with_tempo

from jukebox_pl.config import conditioner_targets, load_config
from jukebox_pl.data.prep import PrepOptions, prepare_shards
from jukebox_pl.errors import UnsafeFileError, UserValueError
from jukebox_pl.prior import conditioning
from jukebox_pl.prior.model import JukeboxPrior
from jukebox_pl.sampling.song_sampler import SongSampler, SongSpec
from jukebox_pl.stages.datamodules import prior_datamodule

SR = 22050


def tempo_prior(**changes) -> JukeboxPrior:
    cfg = load_config("tiny", [f"prior.top.conditioners={TEMPO}"]).prior.top
    cfg.merge_with({"n_ctx": 64, "blocks": 8, "n_tokens": 16, "prime_blocks": 4, "width": 32, **changes})
    torch.manual_seed(0)
    return JukeboxPrior(cfg, 2, 3, 32, 128, SR, y_bins=(4, 6))


def batch(tempo=(60.0, 200.0)) -> dict:
    return {
        "artist": torch.tensor([1, 2]), "genres": torch.tensor([[1, -1], [2, 3]]),
        "total_length": torch.tensor([SR * 30, SR * 50]), "offset": torch.tensor([0, SR * 10]),
        "lyrics": torch.randint(1, 80, (2, 16)), "tempo": torch.tensor(tempo),
    }  # fmt: skip


def test_the_prior_reads_the_new_key_and_its_weights_are_saved():
    prior = tempo_prior()
    assert prior.batch_keys[-1] == "tempo" and prior.track_fields == {
        "tempo": {"path": "extra.bpm", "default": None, "dtype": "float"}
    }
    assert any(k.startswith("extra_conditioners.tempo.emb.") for k in prior.state_dict())
    codes = torch.randint(0, 32, (2, 64))
    slow, fast = prior(codes, **batch((60.0, 60.0))).loss, prior(codes, **batch((220.0, 220.0))).loss
    assert not torch.isclose(slow, fast), "the tempo must change the prediction"
    prior(codes, **batch()).loss.backward()
    assert prior.extra_conditioners["tempo"].emb.weight.grad.abs().sum() > 0
    with pytest.raises(UserValueError, match=r"conditioned on the tempo in beats per minute: pass tempo"):
        prior(codes, **{k: v for k, v in batch().items() if k != "tempo"})


def test_an_unknown_target_is_named(monkeypatch):
    """A target no one allowed is refused before any import; an allowed one that does not exist is named."""
    monkeypatch.setattr(conditioner_targets, "_ALLOWED", set())
    with pytest.raises(UnsafeFileError, match=r"'nowhere.Tempo' .* is refused: .*--allow-conditioner nowhere.Tempo"):
        tempo_prior(conditioners={"tempo": {"target": "nowhere.Tempo"}})
    conditioning.allow_conditioners("nowhere.Tempo")
    with pytest.raises(UserValueError, match="conditioner target 'nowhere.Tempo' cannot be imported"):
        tempo_prior(conditioners={"tempo": {"target": "nowhere.Tempo"}})


@pytest.fixture(scope="module")
def bpm_shards(tmp_path_factory) -> Path:
    music = make_music_folder(tmp_path_factory.mktemp("bpm") / "library", n_good=6, seconds=3.0)
    rows = list(csv.DictReader(music["metadata"].open()))
    for i, row in enumerate(rows):
        row["bpm"] = "" if i == 0 else str(60 + 20 * i)  # the first track has no tempo: skipped and counted
    with music["metadata"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0]])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path_factory.mktemp("bpm_shards") / "out"
    prepare_shards(
        PrepOptions(src=str(music["root"]), out=str(out), metadata=str(music["metadata"]), sr=SR, val_fraction=0.0,
                    workers=1),
        progress=False,
    )  # fmt: skip
    return out


def test_the_prior_stage_datamodule_copies_the_field_into_batches(bpm_shards):
    cfg = load_config("tiny", [f"data.shards={bpm_shards}", f"prior.top.conditioners={TEMPO}", "prior.top.n_ctx=16"])
    dm = prior_datamodule(cfg, "top")
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    tempos = {t for b in batches for t in b["tempo"].tolist()}
    assert batches[0]["tempo"].dtype == torch.float32 and tempos <= {80.0, 100.0, 120.0, 140.0, 160.0}
    assert len(tempos) >= 3
    assert batches[-1]["skipped"].item() >= 1  # the track without a bpm value is skipped and counted, not fatal


def test_the_sampler_fills_the_key_from_the_request():
    models = tiny_models_with_tempo()
    spec = SongSpec(artists=[1, 2], genres=[[1], [2]], lyrics=[[3, 4]] * 2, total_samples=32 * 128, seed=1,
                    labels={"tempo": [90.0]})  # fmt: skip
    codes = SongSampler(models, spec, [2]).run()
    assert codes[2].shape == (2, 32)
    spec.labels = {}
    with pytest.raises(UserValueError, match=r"--label tempo=VALUE"):
        SongSampler(models, spec, [2]).run()
