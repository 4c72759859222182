"""Two CPU processes under DDP (gloo): disjoint, complete validation data and equal training steps."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_data_probe.py"


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("workers", [0, 1])
def test_two_rank_ddp_reads_disjoint_validation_data_without_hanging(shards, tmp_path, workers):
    manifest = json.loads((shards / "manifest.json").read_text())
    val_shards = manifest["shards"]["val"][:3]  # an odd count: rank 0 gets two shards, rank 1 one
    assert len(val_shards) == 3
    train_urls = "::".join(str(shards / n) for n in manifest["shards"]["train"])
    val_urls = "::".join(str(shards / n) for n in val_shards)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), train_urls, val_urls, str(tmp_path), str(workers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*_epoch*.json"))]
    assert len(records) == 4  # 2 ranks x 2 epochs
    val_tracks = {t["key"] for t in manifest["tracks"] if t["split"] == "val" and t["shard"] in val_shards}
    for epoch in (0, 1):
        ranks = [r for r in records if r["epoch"] == epoch]
        assert {r["world"] for r in ranks} == {2}
        keys0, keys1 = (set(r["val"]) for r in sorted(ranks, key=lambda r: r["rank"]))
        assert keys0 and keys1 and not keys0 & keys1, "ranks must read disjoint validation data"
        assert {k.split("/")[0] for k in keys0 | keys1} == val_tracks, "together they read every track"
        assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == 6  # 12 crops per epoch / 2 ranks


@pytest.mark.slow
@pytest.mark.ddp
def test_a_validation_split_with_fewer_tracks_than_ranks_is_validated_by_every_rank(shards, tmp_path):
    """One validation track, two ranks: no refusal and no hang (a rank without a track would never send its
    figures); both ranks read the one track, so the reduced figure is exactly one process's."""
    manifest = json.loads((shards / "manifest.json").read_text())
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    manifest["shards"]["val"] = manifest["shards"]["val"][:1]
    manifest["counts"]["tracks"]["val"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "-", str(folder), str(out), "0"], env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every rank validates all of them" in proc.stdout + proc.stderr
    records = [json.loads(p.read_text()) for p in sorted(out.glob("rank*_epoch0.json"))]
    track = {t["key"] for t in manifest["tracks"] if t["shard"] == manifest["shards"]["val"][0]}
    assert len(records) == 2 and len(track) == 1
    for r in records:
        assert {k.split("/")[0] for k in r["val"]} == track, r["val"]


def test_the_data_module_tears_the_process_group_down_at_exit(shards, tmp_path):
    """A gloo group left to interpreter finalisation can abort a finished run (exit -6): once the DataModule is
    set up under a process group, the group is destroyed by an exit handler that runs before finalisation."""
    probe = f"""
import atexit, os
import torch.distributed as dist
from jukebox_pl.data.datamodule import AudioDataModule
atexit.register(lambda: print("initialized at exit:", dist.is_initialized()))
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
dist.init_process_group("gloo", rank=0, world_size=1)
AudioDataModule(shards={str(shards)!r}, sample_rate=22050, sample_length=4096, batch_size=2).setup("fit")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "initialized at exit: False" in proc.stdout, proc.stdout + proc.stderr
