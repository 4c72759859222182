"""Training a VQ-VAE level through Lightning: overfitting, resume, DDP codebook sync, CLI round trips."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from jukebox_pl.cli import main
from jukebox_pl.config.sections import vqvae_config
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.training.checkpoints.read_write import load_any
from jukebox_pl.training.runner import RunExists
from jukebox_pl.vqvae.lightning import VQVAELevel
from jukebox_pl.vqvae.vqvae import VQVAE

SMALL = [
    "vqvae.l_bins=32",
    "vqvae.width=8",
    "vqvae.depth=2",
    "vqvae.sample_length=2048",
    "vqvae.batch_size=2",
    "vqvae.bandwidth_batches=1",
    "data.epoch_length=40",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "run.log_audio_every_n_steps=2",
    "trainer.log_every_n_steps=1",
]


@pytest.mark.slow
def test_a_level_overfits_one_clip():
    torch.manual_seed(0)
    t = torch.arange(4096) / 22050
    clip = (0.5 * torch.sin(2 * np.pi * 220 * t) * torch.sin(2 * np.pi * 3 * t)).reshape(1, 1, -1)
    cfg = vqvae_config(
        levels=3,
        l_bins=32,
        emb_width=16,
        width=16,
        depth=2,
        multispectral=1.0,
        spectral_mode="reference",  # the loss-ratio bound below is for the reference's bandwidth-normalised term
        loss_linf=0.0,
        bandwidth_batches=1,
        optim={"lr": 3e-3, "warmup_steps": 5},
    )
    module = VQVAELevel(cfg, "bottom", 22050)
    loader = torch.utils.data.DataLoader(clip.repeat(8, 1, 1), batch_size=2)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    trainer = pl.Trainer(
        max_steps=120,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Record()],
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    assert bool(module.bandwidth_ready)
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) / 5, (losses[:5], losses[-10:])
    recon = module.reconstruct(clip)
    assert recon.shape == clip.shape
    assert ((recon - clip) ** 2).mean() < 0.2 * (clip**2).mean()


class ProbeStart(pl.Callback):
    def __init__(self):
        self.seen = {}

    def on_train_start(self, trainer, pl_module):
        b = pl_module.model.bottleneck
        self.seen = {
            "step": trainer.global_step,
            "k": b.k.clone(),
            "k_elem": b.k_elem.clone(),
            "bandwidth": pl_module.bandwidth.clone(),
        }


@pytest.mark.slow
def test_train_checkpoint_and_resume_at_the_same_step(shards, tmp_path):
    run = tmp_path / "run"
    train_vqvae(
        run,
        "bottom",
        "tiny",
        str(shards),
        SMALL + ["trainer.max_steps=6", "run.checkpoint_every_n_steps=3", "trainer.val_check_interval=3"],
    )
    stage = run / "vqvae_bottom"
    assert (stage / "config.yaml").is_file() and (stage / "checkpoints" / "step00000003.ckpt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(stage / "logs"), size_guidance={"audio": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert {"audio/0_real", "audio/0_recon"} <= set(tags["audio"]), tags["audio"]
    assert "spectrogram/0_recon" in tags["images"]
    assert {"train/loss", "train/multispectral", "codebook/codes_alive_ema", "codebook/restarts"} <= set(
        tags["scalars"]
    )
    assert {"val/spectral_convergence_db", "val/si_sdr", "val/codebook_usage", "val/codes_used"} <= set(tags["scalars"])
    from jukebox_pl.stages.demo import summary_rows

    (row,) = [r for r in summary_rows(run) if r[0] == "vqvae_bottom"]
    assert "codes in a batch" in row[1] and " codes (perplexity " in row[2] and " dB" in row[2], row
    saved = torch.load(stage / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 6 and saved["optimizer_states"] and saved["jukebox_pl"]["level_name"] == "bottom"
    with pytest.raises(RunExists, match="--resume"):
        train_vqvae(run, "bottom", "tiny", str(shards), SMALL + ["trainer.max_steps=6"])
    probe = ProbeStart()
    train_vqvae(run, "bottom", "tiny", str(shards), ["trainer.max_steps=9"], resume=True, callbacks=[probe])
    state = saved["state_dict"]
    assert probe.seen["step"] == 6
    assert torch.equal(probe.seen["k"], state["model.bottleneck.k"])
    assert torch.equal(probe.seen["k_elem"], state["model.bottleneck.k_elem"])
    assert torch.equal(probe.seen["bandwidth"], state["bandwidth"]), "the loss normalisation is kept, not re-estimated"
    assert torch.load(stage / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 9


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_vqvae(tmp_path / "empty", "top", "tiny", None, [], resume=True)
    with pytest.raises(ValueError, match="2 levels: bottom, top"):
        train_vqvae(tmp_path / "r", "middle", "small", None, [])


@pytest.mark.slow
@pytest.mark.ddp
def test_two_rank_ddp_keeps_codebooks_identical(shards, tmp_path):
    script = Path(__file__).parent / "scripts" / "ddp_vqvae_probe.py"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, str(script), str(shards), str(tmp_path / "run"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["step"] == r1["step"] == 6
    assert set(r0["keys"]) != set(r1["keys"]), "ranks trained on different crops"
    for name in ("k", "k_elem", "k_sum", "bandwidth"):
        assert torch.equal(r0[name], r1[name]), f"{name} differs between ranks"
    assert r0["k_elem"].sum() > 0


@pytest.mark.slow
def test_export_encode_decode_round_trip(shards, tmp_path, capsys):
    run = tmp_path / "run"
    for level in ("bottom", "top"):
        train_vqvae(run, level, "tiny", str(shards), SMALL + ["trainer.max_steps=2"])
    exported = tmp_path / "top.pt"
    assert main(["export", "--ckpt", str(run / "vqvae_top" / "checkpoints" / "last.ckpt"), "--out", str(exported)]) == 0
    info = load_any(exported)
    assert info["kind"] == "vqvae-level" and not any("optimizer" in k for k in info)
    sr = 22050
    song = tmp_path / "song.flac"
    audio = 0.3 * np.sin(2 * np.pi * 330 * np.arange(101430) / 44100)
    sf.write(song, np.stack([audio, audio], 1), 44100)  # stereo 44.1 kHz in, mono 22.05 kHz model
    codes = tmp_path / "song_codes.pt"
    assert main(["encode", "--run", str(run), "--audio", str(song), "--out", str(codes)]) == 0
    obj = torch.load(codes, weights_only=False)
    n = len(audio) // 2  # 44.1 kHz -> 22.05 kHz
    assert set(obj["codes"]) == {"bottom", "top"} and obj["length"] == n
    assert obj["codes"]["bottom"].shape == (-(-n // 8),) and obj["codes"]["top"].shape == (-(-n // 128),)
    out = tmp_path / "decoded"
    assert (
        main(
            [
                "decode",
                "--ckpt",
                str(run / "vqvae_bottom" / "checkpoints" / "last.ckpt"),
                str(exported),
                "--codes",
                str(codes),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for level in ("bottom", "top"):
        data, rate = sf.read(out / f"song_codes_{level}.wav")
        assert rate == sr and len(data) == n
    vq = VQVAE.from_run(run)
    assert vq.available() == [0, 2] and vq.hop_length("top") == 128
    with pytest.raises(KeyError, match="middle is not loaded"):
        vq.level("middle")
    assert main(["decode", "--run", str(run), "--codes", str(song), "--out", str(out)]) == 2
    assert "not a codes file" in capsys.readouterr().err


def test_a_run_set_to_fsdp_trains_its_vqvae_levels_under_ddp(shards, tmp_path):
    """`trainer.strategy=fsdp` is for the priors; a VQ-VAE level of the same run (its codebook all-reduced by
    itself) trains under DDP without buffer broadcasts, and says so."""
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy

    class Seen(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.strategy = trainer.strategy

    seen, environ = Seen(), dict(os.environ)
    try:
        train_vqvae(tmp_path / "run", "top", "tiny", str(shards),
                    SMALL + ["trainer.max_steps=1", "trainer.strategy=fsdp"], callbacks=[seen])  # fmt: skip
    finally:  # in-process DDP leaves its group and MASTER_PORT behind: a later DDP probe would wait on that port
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
    assert isinstance(seen.strategy, DDPStrategy) and not seen.strategy._ddp_kwargs.get("broadcast_buffers", True)


def _validate(module, audio: torch.Tensor, capsys) -> str:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(audio), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    capsys.readouterr()
    trainer.validate(module, loader, verbose=False)
    return capsys.readouterr().err


def test_validation_warns_in_one_line_when_a_level_collapses(capsys):
    torch.manual_seed(0)
    cfg = vqvae_config(None, **{"l_bins": 32, "width": 8, "depth": 1, "emb_width": 8})
    module = VQVAELevel(cfg, "top", 22050)
    t = torch.arange(4 * 2048) / 22050
    audio = (0.3 * torch.sin(2 * torch.pi * 220 * t * (1 + torch.arange(8)[:, None] / 4))).reshape(8, 1, -1)
    latents = module.model.encoder(audio).detach()
    bottleneck = module.model.bottleneck
    with torch.no_grad():  # every code the same vector: all held-out audio lands on code 0
        bottleneck.k.copy_(latents.mean((0, 2)).expand_as(bottleneck.k))
    err = _validate(module, audio, capsys)
    lines = [line for line in err.splitlines() if "held-out audio uses" in line]
    assert lines == [
        "warning: top level: held-out audio uses 1 of 32 codes at step 0 (under 10% of the codebook: collapsed; "
        "README 'Real music' says what to do)"
    ], err
    with torch.no_grad():  # codes spread over the held-out latents: no warning
        flat = latents.permute(0, 2, 1).reshape(-1, 8)
        bottleneck.k.copy_(flat[torch.randperm(len(flat))[:32]])
    assert "held-out audio uses" not in _validate(module, audio, capsys)
