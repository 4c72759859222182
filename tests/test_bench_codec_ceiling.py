"""bench/codec_ceiling.py measures what it says: a transparent codec keeps every real song recognisable and its
high bands level; a low-pass codec shows up as lost high bands."""

import importlib.util
from pathlib import Path

import pytest
import torch

from jukebox_pl.data.toy import make_toy_dataset
from jukebox_pl.stages.demo import artist_classifier

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "codec_ceiling.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("codec_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Transparent:
    def encode(self, x):
        return x

    def decode(self, x):
        return x


class LowPass(Transparent):
    """Averages blocks of 8 samples: what is left above ~1.4 kHz at 22050 Hz is the blocks' staircase."""

    def decode(self, x):
        blocks = torch.nn.functional.avg_pool1d(x, 8, ceil_mode=True)
        return torch.nn.functional.interpolate(blocks, scale_factor=8, mode="linear")  # resynthesised trims it


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    make_toy_dataset(out, songs_per_pair=1, seconds=(3.0, 3.0), seed=0)
    return out


def test_a_transparent_codec_keeps_every_song_recognisable(toy):
    bench = load_bench()
    plain = artist_classifier(toy, 22050, 3.0)
    row = bench.measure(Transparent(), toy, 22050, 3.0, plain)
    assert row["of"] == 12 and row["artists"] == 4
    assert row["plain"] == row["codec"] == 12
    assert abs(row["high_band_db"]) < 1e-6
    assert row["snr_db"] > 100


def test_a_low_pass_codec_loses_the_high_bands(toy):
    bench = load_bench()
    plain = artist_classifier(toy, 22050, 3.0)
    row = bench.measure(LowPass(), toy, 22050, 3.0, plain)
    assert row["high_band_db"] < -10
    assert row["snr_db"] < 30
    assert row["codec"] >= row["plain"]


def test_unknown_variants_are_refused_by_name(capsys):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--variants", "demo,wider"])
    assert "wider" in capsys.readouterr().err
