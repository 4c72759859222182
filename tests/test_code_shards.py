"""Code shards: `encode-shards` output equals VQVAE.encode, resumes byte-identically, refuses to mix VQ-VAEs;
CodeDataModule batches are shaped as documented, aligned with the upper level, and cover validation once."""

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from jukebox_pl.audio import read_audio
from jukebox_pl.cli import main as cli_main
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.data.code_datamodule import CodeDataModule
from jukebox_pl.data.code_shards import is_code_shards
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.lyrics import LyricsTokenizer, lyric_window
from jukebox_pl.stages.encode_shards import EncodeRefused, encode_shards
from jukebox_pl.training.checkpoints.read_write import EXPORT_FORMAT
from jukebox_pl.vqvae.model import VQVAELevelModel
from jukebox_pl.vqvae.vqvae import VQVAE

SR = 22050
HOPS = {0: 4, 1: 16}
TINY = dict(levels=2, downs_t=[2, 2], strides_t=[2, 2], width=8, depth=1, emb_width=8, l_bins=16)


def tiny_vqvae(seed: int = 0) -> VQVAE:
    """Two random-weight levels (hops 4 and 16); encoding only needs a deterministic encoder and a codebook."""
    torch.manual_seed(seed)
    cfg = vqvae_config(**TINY)
    levels = {}
    for lv in (0, 1):
        model = VQVAELevelModel(cfg, lv).eval()
        with torch.no_grad():
            z = model.encoder(0.3 * torch.randn(1, 1, 4096))
            model.bottleneck.init_codebook(z.permute(0, 2, 1).reshape(-1, cfg.emb_width))
        levels[lv] = model
    return VQVAE(levels, SR)


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} of one shard."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar:
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def codes_dir(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("codes") / "out"
    encode_shards(shards, out, tiny_vqvae(0))
    return out


def test_codes_equal_vqvae_encode_of_each_track(shards, codes_dir):
    audio_manifest, manifest = manifest_of(shards), manifest_of(codes_dir)
    assert is_code_shards(codes_dir) and not is_code_shards(shards)
    assert manifest["kind"] == "codes" and manifest["sample_rate"] == SR
    assert manifest["levels"] == {"0": 4, "1": 16} and manifest["l_bins"] == {"0": 16, "1": 16}
    assert manifest["level_names"] == {"0": "bottom", "1": "top"}
    assert manifest["shards"] == audio_manifest["shards"] and manifest["skipped"] == []
    assert manifest["counts"]["tracks"] == audio_manifest["counts"]["tracks"]
    assert (codes_dir / "vocab.json").read_bytes() == (shards / "vocab.json").read_bytes()
    vq = tiny_vqvae(0)
    n_tracks = 0
    for name in manifest["shards"]["train"] + manifest["shards"]["val"]:
        source, coded = read_tar(shards / name), read_tar(codes_dir / name)
        assert list(coded) == list(source)
        for key, members in coded.items():
            assert set(members) == {"json", "codes0.npy", "codes1.npy"}
            assert members["json"] == source[key]["json"]  # track info unchanged
            audio, _ = read_audio(source[key]["flac"])
            expected = vq.encode(torch.from_numpy(audio.mean(0, dtype=np.float32))[None, None])
            for level, hop in HOPS.items():
                codes = npy(members[f"codes{level}.npy"])
                assert codes.dtype == np.int16 and codes.shape == (-(-audio.shape[1] // hop),)
                assert np.array_equal(codes, expected[level][0].numpy())
            n_tracks += 1
    assert n_tracks == len(manifest["tracks"]) == sum(manifest["counts"]["tracks"].values())
    assert len(np.unique(codes)) > 1, "random codebook still gives varied codes"
    track = manifest["tracks"][0]
    assert {"path", "key", "split", "shard", "samples", "seconds", "artist", "genres", "tokens"} <= set(track)


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def _without_time(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "created"}


def test_resume_skips_done_shards_and_gives_identical_files(shards, codes_dir, tmp_path, monkeypatch):
    out, calls, fail_at = tmp_path / "codes", [], [3]
    vq = tiny_vqvae(0)
    real_encode = vq.encode

    def flaky(x, levels=None):
        calls.append(x.shape[-1])
        if len(calls) in fail_at:
            raise RuntimeError("boom")
        return real_encode(x, levels)

    monkeypatch.setattr(vq, "encode", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        encode_shards(shards, out, vq)
    assert len(list(out.glob("*.tar"))) == 2 and list(out.glob("*.tar.tmp")), "two done, the third half-written"
    n_tracks = len(manifest_of(codes_dir)["tracks"])
    calls.clear()
    fail_at.clear()
    manifest = encode_shards(shards, out, vq)
    assert len(calls) == n_tracks - 2, "done shards are not encoded again"
    assert not list(out.glob("*.tmp"))
    assert _shard_bytes(out) == _shard_bytes(codes_dir)
    assert _without_time(manifest) == _without_time(manifest_of(codes_dir))
    victim = sorted(out.glob("val-*.tar"))[0]
    victim.unlink()
    calls.clear()
    encode_shards(shards, out, vq)
    assert len(calls) == 1 and _shard_bytes(out) == _shard_bytes(codes_dir)
    calls.clear()
    encode_shards(shards, out, vq)
    assert calls == []


def test_refuses_codes_of_another_vqvae_or_levels(shards, codes_dir, tmp_path):
    before = _shard_bytes(codes_dir)
    with pytest.raises(EncodeRefused, match="different source or VQ-VAE.*encoder_bottom: was '[0-9a-f]+', now"):
        encode_shards(shards, codes_dir, tiny_vqvae(1))
    with pytest.raises(EncodeRefused, match=r"levels: was \['bottom', 'top'\], now \['top'\]"):
        encode_shards(shards, codes_dir, tiny_vqvae(0), levels=["top"])
    assert _shard_bytes(codes_dir) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(EncodeRefused, match="not empty"):
        encode_shards(shards, tmp_path / "other", tiny_vqvae(0))
    with pytest.raises(ValueError, match="already holds code shards"):
        encode_shards(codes_dir, tmp_path / "again", tiny_vqvae(0))


def _rewrite_member(shard: Path, ext: str, data: bytes) -> str:
    """Replace the `ext` member of the shard's (first) track; returns that track's key."""
    members = read_tar(shard)
    key = next(iter(members))
    members[key][ext] = data
    with tarfile.open(shard, "w") as tar:
        for k, group in members.items():
            for e, payload in group.items():
                info = tarfile.TarInfo(f"{k}.{e}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return key


def test_corrupt_members_are_skipped_and_reported(shards, tmp_path):
    src = tmp_path / "audio"
    shutil.copytree(shards, src)
    train = manifest_of(src)["shards"]["train"]
    bad_audio = _rewrite_member(src / train[0], "flac", b"not flac at all" * 40)
    bad_json = _rewrite_member(src / train[1], "json", b"{oops")
    manifest = encode_shards(src, tmp_path / "codes", tiny_vqvae(0))
    reasons = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {bad_audio, bad_json}, manifest["skipped"]
    assert "cannot decode the flac audio" in reasons[bad_audio] and "malformed json" in reasons[bad_json]
    assert manifest["counts"]["skipped"] == 2
    assert manifest["counts"]["tracks"]["train"] == manifest_of(shards)["counts"]["tracks"]["train"] - 2
    assert train[0] not in manifest["shards"]["train"] and not (tmp_path / "codes" / train[0]).exists()
    assert bad_audio not in {t["key"] for t in manifest["tracks"]}


def _export(model: VQVAELevelModel, path: Path) -> str:
    hp = {"vqvae": plain(model.cfg), "level": model.level, "sample_rate": SR}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"format": EXPORT_FORMAT, "kind": "vqvae-level", "hparams": hp, "state_dict": state, "meta": {}}, path)
    return str(path)


def test_cli_encodes_chosen_levels_from_checkpoints(shards, codes_dir, tmp_path, capsys):
    vq = tiny_vqvae(0)
    ckpts = [_export(vq.level(i), tmp_path / f"level{i}.pt") for i in (0, 1)]
    out = tmp_path / "top_codes"
    assert cli_main(["encode-shards", "--shards", str(shards), "--out", str(out), "--vqvae", *ckpts,
                     "--levels", "top", "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "top (hop 16)" in printed and str(out) in printed
    manifest = manifest_of(out)
    assert manifest["levels"] == {"1": 16} and manifest["vqvae"]["checkpoints"] == [
        str(Path(c).resolve()) for c in ckpts
    ]
    name = manifest["shards"]["val"][0]
    ours, full = read_tar(out / name), read_tar(codes_dir / name)
    for key, members in ours.items():
        assert set(members) == {"json", "codes1.npy"} and members["codes1.npy"] == full[key]["codes1.npy"]
    run = tmp_path / "run"  # the layout `jukebox-pl train vqvae` leaves: RUN/vqvae_<level>/export.pt
    for name, ckpt in zip(("bottom", "top"), ckpts):
        (run / f"vqvae_{name}").mkdir(parents=True)
        shutil.copy(ckpt, run / f"vqvae_{name}" / "export.pt")
    again = tmp_path / "again"
    shutil.copytree(codes_dir, again)
    args = ["encode-shards", "--shards", str(shards), "--out", str(again), "--run", str(run), "--no-progress"]
    assert cli_main(args) == 0, "same weights loaded from files: resumes, nothing left to encode"
    assert "0 shard(s) left" in capsys.readouterr().out and _shard_bytes(again) == _shard_bytes(codes_dir)
    assert manifest_of(again)["vqvae"]["checkpoints"] == [
        str(run / f"vqvae_{n}" / "export.pt") for n in ("bottom", "top")
    ]


# -- CodeDataModule ---------------------------------------------------------------------------------------------
N_CTX = 2048  # 8192 samples at hop 4; 512 top codes


def make_cdm(codes_dir, level=0, n_ctx=N_CTX, upper_level=1, batch_size=3, **kw) -> CodeDataModule:
    base = dict(shards=str(codes_dir), shuffle_buffer=8, epoch_length=24, max_genres=3, n_lyric_tokens=32)
    dm = CodeDataModule(
        None, level=level, n_ctx=n_ctx, upper_level=upper_level, batch_size=batch_size, **{**base, **kw}
    )
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def track_codes(codes_dir) -> dict[str, dict]:
    """{key: {"codes0", "codes1", "info"}} of every track in the code shards."""
    tracks = {}
    for shard in sorted(codes_dir.glob("*.tar")):
        for key, m in read_tar(shard).items():
            tracks[key] = {0: npy(m["codes0.npy"]), 1: npy(m["codes1.npy"]), "info": json.loads(m["json"])}
    return tracks


def _check_row(b: dict, i: int, track_codes: dict, n_ctx: int) -> None:
    """Row i's codes and upper codes are the track's codes at offset // hop, zero-padded past the end."""
    t = track_codes[b["key"][i].split("/")[0]]
    off, total = b["offset"][i].item(), b["total_length"][i].item()
    assert off % HOPS[1] == 0 and total == t["info"]["samples"]
    assert b["length"][i].item() == min(n_ctx * HOPS[0], total - off)
    for name, level, n in (("codes", 0, n_ctx), ("upper_codes", 1, n_ctx * HOPS[0] // HOPS[1])):
        want = np.zeros(n, dtype=np.int64)
        piece = t[level][off // HOPS[level] : off // HOPS[level] + n]
        want[: len(piece)] = piece
        assert np.array_equal(b[name][i].numpy(), want), (name, b["key"][i], off)


def test_training_batches_have_the_documented_format(codes_dir, track_codes):
    dm = make_cdm(codes_dir)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == dm.batches_per_epoch == 8
    vocab, tok = LabelVocab.load(codes_dir / "vocab.json"), LyricsTokenizer("v2")
    offsets = set()
    for b in batches:
        assert b["codes"].shape == (3, N_CTX) and b["codes"].dtype == torch.long
        assert b["upper_codes"].shape == (3, N_CTX * 4 // 16) and b["upper_codes"].dtype == torch.long
        for name in ("artist", "offset", "total_length", "length", "lyric_start"):
            assert b[name].shape == (3,) and b[name].dtype == torch.long, name
        assert b["genres"].shape == (3, 3) and ((b["genres"] == -1) | (b["genres"] > 0)).all()
        assert (b["artist"] > 0).all() and (b["artist"] < vocab.n_artists).all()
        assert b["lyrics"].shape == (3, 32) and b["lyrics"].dtype == torch.long
        assert b["skipped"].shape == () and b["skipped"].item() == 0
        assert isinstance(b["key"], list) and len(b["key"]) == 3
        for i in range(3):
            _check_row(b, i, track_codes, N_CTX)
            info = track_codes[b["key"][i].split("/")[0]]["info"]
            window, start = lyric_window(
                tok.encode(info["lyrics"]), 32, info["samples"], b["offset"][i].item(), N_CTX * 4
            )
            assert np.array_equal(b["lyrics"][i].numpy(), window) and b["lyric_start"][i].item() == start
            assert tok.decode(b["lyrics"][i]).startswith("la la song")
            offsets.add(b["offset"][i].item())
    assert len(offsets) > 5 and any(o % 8192 for o in offsets), "shifted crops, not only the grid"
    again = [k for b in make_cdm(codes_dir).train_dataloader() for k in b["key"]]
    assert again == [k for b in batches for k in b["key"]], "reproducible for a seed"
    other = make_cdm(codes_dir)
    other.rank, other.world = 1, 2
    assert [k for b in other.train_dataloader() for k in b["key"]] != again, "another rank, other crops"
    assert other.batches_per_epoch == 4


def test_top_prior_batches_and_short_tracks_are_padded(codes_dir, track_codes):
    n_ctx = 160000 // HOPS[1]  # 160000 samples: longer than every track (at most 6.5 s)
    dm = make_cdm(codes_dir, level="top", n_ctx=n_ctx, upper_level=None, n_lyric_tokens=0, batch_size=2)
    assert dm.level == 1 and dm.hop_length == 16 and dm.sample_length == n_ctx * 16 and dm.l_bins() == 16
    b = next(iter(dm.val_dataloader()))
    assert set(b) == {"codes", "artist", "genres", "offset", "total_length", "length", "skipped", "key"}
    assert b["codes"].shape == (2, n_ctx) and (b["offset"] == 0).all()
    for i in range(2):
        t = track_codes[b["key"][i].split("/")[0]]
        assert b["length"][i].item() == t["info"]["samples"] < n_ctx * 16
        assert np.array_equal(b["codes"][i, : len(t[1])].numpy(), t[1]) and (b["codes"][i, len(t[1]) :] == 0).all()


@pytest.mark.parametrize("workers", [0, 2])
def test_validation_covers_each_val_track_once_over_two_ranks(codes_dir, track_codes, workers):
    val_tracks = {t["key"] for t in manifest_of(codes_dir)["tracks"] if t["split"] == "val"}
    first = [k for b in make_cdm(codes_dir).val_dataloader() for k in b["key"]]
    assert first == [k for b in make_cdm(codes_dir).val_dataloader() for k in b["key"]], "fixed crops"
    per_track = Counter(k.split("/")[0] for k in first)
    assert set(per_track) == val_tracks and set(per_track.values()) == {2}
    seen = []
    for rank in range(2):
        dm = make_cdm(codes_dir, num_workers=workers)
        dm.rank, dm.world = rank, 2
        rank_keys = []
        for b in dm.val_dataloader():
            rank_keys += b["key"]
            for i in range(len(b["key"])):
                _check_row(b, i, track_codes, N_CTX)
        assert rank_keys, f"rank {rank} got no validation data"
        seen += rank_keys
    assert len(seen) == len(set(seen)) and set(seen) == set(first)


def test_clear_errors(shards, codes_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json.*encode-shards"):
        make_cdm(tmp_path)
    with pytest.raises(ValueError, match="not code shards.*encode-shards"):
        make_cdm(shards)
    with pytest.raises(ValueError, match=r"level 'middle' is not in the code shards.*0 \(bottom\), 1 \(top\)"):
        make_cdm(codes_dir, level="middle")
    with pytest.raises(ValueError, match=r"upper_level 3 is not in .*levels 0 \(bottom\), 1 \(top\)"):
        make_cdm(codes_dir, upper_level=3)
    with pytest.raises(ValueError, match="divide n_ctx"):
        make_cdm(codes_dir, n_ctx=6)
