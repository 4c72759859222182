"""bench/song.py samples a three-level song level by level on our side and, given a checkout, through the
reference's own sampler; these tests check what can be checked without the checkout: the reference's hparams
are our config's, its labels have its layout, our side samples every level's windows, and the README table
renders from the result file."""

import importlib
import json
import sys
import types
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
song = importlib.import_module("song")
reference_song = importlib.import_module("reference_song")
report = importlib.import_module("report")

from jukebox_pl.config.levels import Levels  # noqa: E402
from jukebox_pl.config.typed import plain  # noqa: E402
from jukebox_pl.interop.openai_hps import prior_from_hps  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = (
    "prior.top.width=32", "prior.top.depth=4", "prior.top.n_ctx=64", "prior.top.blocks=4", "prior.top.heads=1",
    "prior.top.attn_order=6", "prior.top.prime_width=16", "prior.top.prime_depth=1", "prior.top.prime_heads=1",
    "prior.top.n_tokens=32", "prior.top.prime_blocks=4", "prior.top.alignment_layer=3", "prior.top.alignment_head=0",
    "prior.top.min_duration=0.1", "vqvae.width=8", "vqvae.depth=1",
    *(f"prior.{name}.{key}" for name in ("middle", "bottom")
      for key in ("width=32", "depth=2", "n_ctx=64", "blocks=4", "cond_width=16", "cond_depth=2")),
)  # fmt: skip


@pytest.mark.parametrize("level", ["top", "middle", "bottom"])
def test_reference_hparams_are_our_config(level):
    # the reference's model is built from what reference_hparams says: read back with the importer's own
    # translation (reference hparams -> our config), every size and conditioning choice must be ours
    cfg = song.config()
    levels = Levels.from_config(cfg)
    ours = plain(cfg.prior[level])
    index = levels.index(level)
    hps = reference_song.reference_hparams(ours, index, cfg.data.max_genres)
    back, name = prior_from_hps({**hps, "levels": 3}, "bench")
    assert name == level and hps["level"] == index
    for key in ("n_ctx", "width", "depth", "heads", "attn_order", "blocks", "labels", "lyrics", "n_tokens",
                "cond_width", "cond_depth", "prime_width", "prime_depth", "min_duration", "y_bins"):  # fmt: skip
        assert back[key] == ours[key], key
    assert hps["restore_prior"] == "" and hps["c_res"] == 0  # never a download; no checkpointing when sampling
    assert hps["max_bow_genre_size"] == cfg.data.max_genres


def test_scaled_config_keeps_the_released_shape():
    cfg = song.config()
    top, bottom = cfg.prior.top, cfg.prior.bottom
    assert (top.arch, top.lyrics, top.attn_order) == ("prior_5b_lyrics", "encoder", 10)
    # attn_order 10 cross-attends to the lyrics at layer 18 of every 79: the top keeps that layer
    assert top.depth > 18 and top.alignment_layer == 18
    assert (bottom.arch, bottom.n_ctx // bottom.blocks, top.n_ctx // top.blocks) == ("upsampler_level_0", 64, 64)
    assert list(cfg.vqvae.downs_t) == [3, 2, 2]


def test_reference_labels_have_its_layout():
    top = types.SimpleNamespace(y_cond=True, y_emb=types.SimpleNamespace(max_bow_genre_size=5), n_tokens=8,
                                sample_length=65536)  # fmt: skip
    up = types.SimpleNamespace(y_cond=True, y_emb=types.SimpleNamespace(max_bow_genre_size=5), n_tokens=0,
                               sample_length=8192)  # fmt: skip
    labs = reference_song.labels([up, top], 2, 88064, artist=3, genre=4, lyrics=[5, 6, 7])
    assert labs[1]["y"].tolist() == [[88064, 0, 65536, 3, 4, -1, -1, -1, -1] + [0] * 8] * 2
    assert labs[0]["y"].shape == (2, 4 + 5) and labs[0]["y"][0, 2] == 8192
    assert [i["full_tokens"] for i in labs[1]["info"]] == [[5, 6, 7]] * 2


def test_our_song_samples_every_level_over_its_windows():
    models = song.build("fp32", TINY)
    top = models.priors[2]
    total = 3 * top.n_ctx * top.hop_length // 2  # one and a half top windows: every level re-primes
    run = song.our_song(models, 2, total)
    assert [run[lv]["tokens"] for lv in (2, 1, 0)] == [total // models.vqvae.hop_length(lv) for lv in (2, 1, 0)]
    assert all(run[lv]["sample_s"] > 0 and run[lv]["decode_s"] > 0 for lv in (0, 1, 2))
    fig = song.per_audio_second(run, batch=2, seconds=2.0)
    assert fig["sample_0"] == pytest.approx(run[0]["sample_s"] / 4)
    assert fig["song"] == pytest.approx(sum(run[lv][f"{p}_s"] for lv in (0, 1, 2) for p in ("sample", "decode")) / 4)


def test_song_table_renders_from_the_result_file(tmp_path):
    def stats(x):
        return {"median": x, "min": x, "max": x, "n": 3, "spread": 1.0, "noisy": False}

    def row(side, scale, ratio):
        st = {f"{p}_{lv}": stats(scale * (lv + 1)) for lv in (0, 1, 2) for p in ("sample", "decode")}
        st["song"] = stats(sum(s["median"] for s in st.values()))
        return {"batch": 1, "side": side, "seconds": 2.0, "stats": st, "ratio": ratio,
                "tokens": {"top": 689, "middle": 2756, "bottom": 11025}}  # fmt: skip

    result = {"meta": {"date": "2026-12-06", "threads": 2}, "seconds": 2.0,
              "rows": [row("jukebox-pl int4+compile", 1.0, 3.0), row("reference", 3.0, 1.0)]}  # fmt: skip
    (tmp_path / "song_reference.json").write_text(json.dumps(result))
    table = report.render("song", tmp_path)
    assert (
        "| 1 | jukebox-pl, int4, `--decode` compile | 3.00 s | 2.00 s | 1.00 s | 6.00 s | 12.00 s | **3.00x** |"
        in table
    )
    assert "| 1 | reference |" in table and "top 689, middle 2756, bottom 11025" in table


def test_song_bench_refuses_fewer_than_three_repeats(capsys):
    with pytest.raises(SystemExit):
        song.main(["--repeats", "2", "--json", "-"])
    assert "at least 3" in capsys.readouterr().err
