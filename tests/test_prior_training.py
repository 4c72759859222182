"""Training priors through Lightning on a small trained VQ-VAE: top with lyrics, upsampler, resume, errors, DDP."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from audio_fixtures import new_artist_shards
from prior_settings import COMMON, PRIOR, VQVAE
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jukebox_pl.config import ConfigError
from jukebox_pl.prior.lightning import PriorModule
from jukebox_pl.stages.train_prior import load_prior_weights, train_prior
from jukebox_pl.stages.train_vqvae import train_vqvae
from jukebox_pl.training.checkpoints.read_write import export_weights, load_any


@pytest.fixture(scope="module")
def vqvae_run(shards, tmp_path_factory) -> Path:
    """A run folder with the top and middle VQ-VAE levels trained for two steps."""
    run = tmp_path_factory.mktemp("prior_run") / "run"
    for level in ("top", "middle"):
        train_vqvae(run, level, "tiny", str(shards), VQVAE + COMMON)
    return run


def fresh_run(vqvae_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for stage in vqvae_run.glob("vqvae_*"):
        shutil.copytree(stage, run / stage.name)
    return run


class AtStart(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.ema = {k: v.clone() for k, v in pl_module.ema_model.state_dict().items()}


@pytest.mark.slow
def test_top_prior_trains_logs_and_resumes(vqvae_run, shards, tmp_path):
    run = fresh_run(vqvae_run, tmp_path)
    module = train_prior(
        run, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=3", "trainer.val_check_interval=2"]
    )
    assert module.model.lyrics_mode == "encoder" and module.model.cfg.labels
    ckpt = run / "prior_top" / "checkpoints" / "last.ckpt"
    info = load_any(ckpt)
    assert info["kind"] == "prior" and info["meta"]["level_name"] == "top" and info["global_step"] == 3
    state = info["state_dict"]
    assert any(k.startswith("ema_model.y_emb.artist_emb") for k in state)
    moved = [k for k in state if k.startswith("model.") and not torch.equal(state[k], state["ema_model." + k[6:]])]
    assert moved, "the EMA copy trails the trained weights"
    events = EventAccumulator(str(run / "prior_top" / "logs")).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "train/music_bits_per_token",
        "train/lyric_bits_per_token",
        "train/lr",
        "speed/tokens_per_s",
        "val/loss",
    ):
        assert tag in tags, f"{tag} not logged (have {sorted(tags)})"

    probe = AtStart()
    train_prior(
        run, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=5"], resume=True, callbacks=[probe]
    )
    assert probe.step == 3
    for key, value in probe.ema.items():
        assert torch.equal(value, state["ema_model." + key]), key
    assert load_any(ckpt)["global_step"] == 5

    export = export_weights(ckpt, tmp_path / "top.pt")
    exported = load_any(export)["state_dict"]
    assert torch.equal(
        exported["model.y_emb.artist_emb.emb.weight"],
        load_any(ckpt)["state_dict"]["ema_model.y_emb.artist_emb.emb.weight"],
    )


@pytest.mark.slow
def test_upsampler_trains_on_the_level_above(vqvae_run, shards, tmp_path):
    run = fresh_run(vqvae_run, tmp_path)
    seen = {}

    class Shapes(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            codes, upper = pl_module.batch_codes(batch)
            seen["codes"], seen["upper"] = tuple(codes.shape), tuple(upper.shape)

    module = train_prior(run, "middle", "tiny", str(shards), PRIOR + COMMON, callbacks=[Shapes()])
    assert seen == {"codes": (2, 64), "upper": (2, 16)}
    assert module.model.lyrics_mode == "none" and module.model.n_tokens == 0
    assert load_any(run / "prior_middle" / "checkpoints" / "last.ckpt")["global_step"] == 2


@pytest.mark.slow
def test_prior_stage_errors_name_the_problem(vqvae_run, shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="make train-level LEVEL=top STAGE=vqvae"):
        train_prior(tmp_path / "empty", "top", "tiny", str(shards), PRIOR + COMMON)
    run = fresh_run(vqvae_run, tmp_path)
    with pytest.raises(ConfigError, match=r"data\.sample_length.*per stage.*n_ctx x hop"):
        train_prior(run, "top", "tiny", str(shards), PRIOR + COMMON + ["data.sample_length=8192"])
    train_prior(run, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    top = run / "prior_top" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="trained for the top level"):
        train_prior(run, "middle", "tiny", str(shards), PRIOR + COMMON, init=str(top))


@pytest.mark.slow
def test_fine_tuning_keeps_known_artists_and_grows_the_table(vqvae_run, shards, tmp_path):
    run = fresh_run(vqvae_run, tmp_path)
    old = train_prior(run, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    cfg = old.hparams
    n_genres, n_artists = cfg["y_bins"]
    bigger = PriorModule(
        cfg["prior"], "top", cfg["vqvae_cfg"], cfg["sample_rate"], y_bins=(n_genres + 1, n_artists + 2)
    )
    load_prior_weights(bigger, run / "prior_top" / "checkpoints" / "last.ckpt")
    new_table = bigger.model.y_emb.artist_emb.emb.weight
    old_table = old.ema_model.y_emb.artist_emb.emb.weight
    assert new_table.shape[0] == n_artists + 2
    assert torch.equal(new_table[:n_artists], old_table)
    assert torch.equal(bigger.model.prior.x_emb.weight, old.ema_model.prior.x_emb.weight)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_rank_ddp_prior_step(vqvae_run, shards, tmp_path):
    run = fresh_run(vqvae_run, tmp_path)
    script = Path(__file__).parent / "scripts" / "ddp_prior_probe.py"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, str(script), str(shards), str(run), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["step"] == r1["step"] == 3
    assert set(r0["keys"]) != set(r1["keys"]), "ranks trained on different crops"
    for name in ("weights", "ema"):
        for key in r0[name]:
            assert torch.equal(r0[name][key], r1[name][key]), f"{name} {key} differs between ranks"
    assert (run / "prior_top" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_priors_train_on_pre_encoded_code_shards(vqvae_run, shards, tmp_path):
    from jukebox_pl.cli import main

    run = fresh_run(vqvae_run, tmp_path)
    codes = tmp_path / "codes"
    assert (
        main(["encode-shards", "--shards", str(shards), "--out", str(codes), "--run", str(run), "--no-progress"]) == 0
    )
    seen = []

    class Kinds(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(("audio" in batch, tuple(batch["codes"].shape), tuple(batch["upper_codes"].shape)))

    train_prior(run, "middle", "tiny", str(codes), PRIOR + COMMON, callbacks=[Kinds()])
    assert seen == [(False, (2, 64), (2, 16))] * 2
    top = train_prior(run, "top", "tiny", str(codes), PRIOR + COMMON)
    assert top.trainer.global_step == 2


def test_strategy_names_reach_the_trainer():
    from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy

    from jukebox_pl.stages.train_prior import training_strategy

    fsdp = training_strategy("fsdp")
    assert isinstance(fsdp, ModelParallelStrategy) and not fsdp._save_distributed_checkpoint
    assert isinstance(training_strategy("ddp"), DDPStrategy) and training_strategy("auto") is None


def test_cli_train_prior_reports_a_missing_vqvae(shards, tmp_path, capsys):
    from jukebox_pl.cli import main

    code = main(["train", "prior", "--level", "middle", "--run", str(tmp_path / "r"), "--data", str(shards)])
    assert code == 2
    err = capsys.readouterr().err
    assert "no trained VQ-VAE middle level" in err and "make train-level LEVEL=middle STAGE=vqvae" in err
    assert main(["train", "vqvae", "--level", "top", "--run", str(tmp_path / "r"), "--init", "x.ckpt"]) == 2
    assert "--vqvae and --init are options of `train prior`" in capsys.readouterr().err


@pytest.mark.slow
def test_a_moved_run_folder_still_loads_its_vqvae(vqvae_run, shards, tmp_path, monkeypatch):
    """Checkpoints refer to other stages relative to their run folder: moved and loaded from elsewhere, it works."""
    run = fresh_run(vqvae_run, tmp_path)
    train_prior(run, "middle", "tiny", str(shards), PRIOR + COMMON)
    moved = tmp_path / "elsewhere" / "copied_run"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    monkeypatch.chdir(tmp_path / "elsewhere")
    module = PriorModule.load_from_checkpoint(moved / "prior_middle" / "checkpoints" / "last.ckpt")
    assert module.hparams["vqvae_checkpoints"] == [
        "vqvae_middle/checkpoints/last.ckpt",
        "vqvae_top/checkpoints/last.ckpt",
    ]
    assert sorted(module.vqvae.available()) == [1, 2]


@pytest.mark.slow
def test_a_stopped_and_resumed_top_prior_equals_the_uninterrupted_one(vqvae_run, shards, tmp_path):
    """The lyric windows, the frozen VQ-VAE's encoding and the EMA weights too: SIGTERM inside step 3, resume,
    same losses and the same weights (EMA included) bit for bit as a run that was never stopped."""
    import os
    import signal

    from jukebox_pl.errors import StopRequested

    class Losses(pl.Callback):
        def __init__(self):
            self.by_step = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.by_step[trainer.global_step] = float(outputs["loss"])

    class Term(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    args = PRIOR + COMMON + ["trainer.max_steps=5", "data.epoch_length=4"]
    whole, first, second = Losses(), Losses(), Losses()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = fresh_run(vqvae_run, tmp_path / "a"), fresh_run(vqvae_run, tmp_path / "b")
    train_prior(a, "top", "tiny", str(shards), args, callbacks=[whole])
    with pytest.raises(StopRequested, match="at step 3"):
        train_prior(b, "top", "tiny", str(shards), args, callbacks=[first, Term()])
    train_prior(b, "top", "tiny", str(shards), [], resume=True, callbacks=[second])
    assert {**first.by_step, **second.by_step} == whole.by_step and sorted(second.by_step) == [4, 5]
    ema = [torch.load(r / "prior_top" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in (a, b)]
    differ = [k for k in ema[0] if not torch.equal(ema[0][k], ema[1][k])]
    assert not differ, f"differ after the resume: {differ[:5]}"

    # a run that ended at its max_steps midway through an epoch, continued with more steps, reads on from there
    # (Lightning counts that epoch as completed; the resume point must not skip to the next one)
    (tmp_path / "c").mkdir()
    c, ended, more = fresh_run(vqvae_run, tmp_path / "c"), Losses(), Losses()
    train_prior(c, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=3", "data.epoch_length=4"],
                callbacks=[ended])  # fmt: skip
    train_prior(c, "top", "tiny", str(shards), ["trainer.max_steps=5"], resume=True, callbacks=[more])
    assert {**ended.by_step, **more.by_step} == whole.by_step


def two_process_prior(vqvae_run, shards, tmp_path, name: str, *settings: str) -> tuple[Path, dict]:
    """Train the tiny top prior with 2 CPU processes (tests/scripts/fsdp_prior_probe.py); (run, losses by rank)."""
    run = tmp_path / name / "run"
    if not run.exists():
        (tmp_path / name).mkdir()
        run = fresh_run(vqvae_run, tmp_path / name)
    out = tmp_path / name / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    script = Path(__file__).parent / "scripts" / "fsdp_prior_probe.py"
    proc = subprocess.run([sys.executable, str(script), str(shards), str(run), str(out), *settings], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run, {r: json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)}


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp_trains_like_ddp_resumes_and_its_checkpoint_samples_in_one_process(vqvae_run, shards, tmp_path, capsys):
    """FSDP (fully_shard per transformer block, with activation checkpointing) on 2 CPU processes: the same losses
    and weights (EMA included) as DDP, also across a resume; one ordinary checkpoint file that samples in one
    process; bf16 mixed precision steps too."""
    from jukebox_pl.cli import main

    ddp_run, ddp = two_process_prior(vqvae_run, shards, tmp_path, "ddp", "trainer.strategy=ddp", "trainer.max_steps=4")
    fsdp = ["trainer.strategy=fsdp", "prior.top.checkpoint_res=true"]
    fsdp_run, first = two_process_prior(vqvae_run, shards, tmp_path, "fsdp", *fsdp, "trainer.max_steps=3")
    units = json.loads((tmp_path / "fsdp" / "out" / "units0.json").read_text())
    assert units["units"] == units["blocks"] + 2, "a unit per block and one for the rest, in both copies"
    _, resumed = two_process_prior(vqvae_run, shards, tmp_path, "fsdp", *fsdp, "trainer.max_steps=4", "resume")
    for rank in (0, 1):
        got = {**first[rank], **resumed[rank]}
        assert set(got) == set(ddp[rank]) == {"1", "2", "3", "4"}
        for step, loss in ddp[rank].items():
            assert got[step] == pytest.approx(loss, rel=1e-5), (rank, step)
    a, b = (load_any(r / "prior_top" / "checkpoints" / "last.ckpt") for r in (ddp_run, fsdp_run))
    assert a["global_step"] == b["global_step"] == 4 and set(a["state_dict"]) == set(b["state_dict"])
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    out = tmp_path / "sampled"
    assert main(["sample", "--run", str(fsdp_run), "--out", str(out), "--seconds", "0.3", "--levels", "1",
                 "--no-progress"]) == 0, capsys.readouterr().err[-3000:]  # fmt: skip
    assert (out / "top" / "sample_0.wav").is_file()
    _, half = two_process_prior(vqvae_run, shards, tmp_path, "bf16", *fsdp, "trainer.max_steps=2",
                                "trainer.precision=bf16-mixed")  # fmt: skip
    assert half[0]["1"] == pytest.approx(ddp[0]["1"], abs=0.05)


@pytest.mark.slow
@pytest.mark.ddp
def test_fine_tuning_under_fsdp_keeps_the_base_rows_bit_for_bit(vqvae_run, shards, music, tmp_path):
    """`finetune --train embeddings` with 2 FSDP processes: the label tables are sharded by row, and every rank
    puts back the base rows of its own shard after each step; the new artist's row learns."""

    (tmp_path / "base").mkdir()
    base = fresh_run(vqvae_run, tmp_path / "base")
    train_prior(base, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    new_shards = new_artist_shards(music, tmp_path)
    cli = Path(sys.executable).parent / "jukebox-pl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([str(cli), "finetune", "--from", str(base), "--data", str(new_shards), "--run",
                           str(tmp_path / "new"), "--train", "embeddings", *COMMON, "trainer.strategy=fsdp",
                           "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_steps=3",
                           "trainer.val_check_interval=2", "prior.top.optim.lr=0.01", "prior.top.optim.warmup_steps=0"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    old = load_any(base / "prior_top" / "checkpoints" / "last.ckpt")["state_dict"]
    new = load_any(tmp_path / "new" / "prior_top" / "checkpoints" / "last.ckpt")["state_dict"]
    key = "y_emb.artist_emb.emb.weight"
    rows = old["ema_model." + key].shape[0]
    assert new["model." + key].shape[0] == rows + 1
    assert torch.equal(new["model." + key][:rows], old["ema_model." + key]), "the base artists' rows moved"
    assert not torch.allclose(new["model." + key][rows], old["ema_model." + key].mean(0)), "the new row learned"


@pytest.mark.slow
def test_fine_tuning_matches_label_rows_by_name_not_by_index(vqvae_run, shards, music, tmp_path):
    """New shards prepared on their own number their artists afresh ('Artist 1' is id 1 there, 2 in the base);
    `--init` merges the vocabularies by name: base artists keep their ids and rows, a new artist gets a new row
    started from the mean of the base rows, and the new songs are labelled with the merged ids."""
    from jukebox_pl.data.vocab import LabelVocab
    from jukebox_pl.errors import UserValueError
    from jukebox_pl.stages.finetune_labels import write_fine_tuning_vocab
    from jukebox_pl.training.checkpoints.read_write import load_any

    (tmp_path / "base").mkdir(), (tmp_path / "tuned").mkdir(), (tmp_path / "clash").mkdir()
    base_run = fresh_run(vqvae_run, tmp_path / "base")
    base = train_prior(base_run, "top", "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    base_vocab = LabelVocab.from_dict(base.hparams["vocab"])
    base_ckpt = base_run / "prior_top" / "checkpoints" / "last.ckpt"
    new_shards = new_artist_shards(music, tmp_path)
    own = LabelVocab.load(new_shards / "vocab.json")
    assert own.artist_id("Artist 1") != base_vocab.artist_id("Artist 1"), "the test needs shifted ids"

    path, added, bins = write_fine_tuning_vocab(load_any(base_ckpt), new_shards, tmp_path / "stage")
    merged = LabelVocab.load(path)
    for name in ("Artist 0", "Artist 1", "Artist 2"):
        assert merged.artist_id(name) == base_vocab.artist_id(name)
    assert added["artists"] == {"Zed Newcomer": base_vocab.n_artists}
    assert bins == (merged.n_genres, merged.n_artists)
    cfg = base.hparams
    bigger = PriorModule(cfg["prior"], "top", cfg["vqvae_cfg"], cfg["sample_rate"],
                         y_bins=(merged.n_genres, merged.n_artists))  # fmt: skip
    grew = load_prior_weights(bigger, base_ckpt)
    old_rows = base.ema_model.y_emb.artist_emb.emb.weight
    new_rows = bigger.model.y_emb.artist_emb.emb.weight
    assert grew["y_emb.artist_emb.emb.weight"] == (old_rows.shape[0], old_rows.shape[0] + 1)
    assert torch.equal(new_rows[: old_rows.shape[0]], old_rows)
    torch.testing.assert_close(new_rows[-1], old_rows.mean(0))

    with pytest.raises(UserValueError, match=r"contradicts the base prior's labels: artist 'artist 1' is 1 there, 2"):
        train_prior(fresh_run(vqvae_run, tmp_path / "clash"), "top", "tiny", str(new_shards),
                    PRIOR + COMMON + [f"data.vocab={new_shards / 'vocab.json'}"], init=str(base_ckpt))  # fmt: skip
    tuned_run = fresh_run(vqvae_run, tmp_path / "tuned")
    tuned = train_prior(tuned_run, "top", "tiny", str(new_shards), PRIOR + COMMON + ["trainer.max_steps=1"],
                        init=str(base_ckpt))  # fmt: skip
    report = json.loads((tuned_run / "prior_top" / "finetune.json").read_text())
    assert report["added"]["artists"] == {"Zed Newcomer": base_vocab.n_artists}
    assert LabelVocab.from_dict(tuned.hparams["vocab"]).artist_id("Artist 1") == base_vocab.artist_id("Artist 1")


@pytest.mark.slow
def test_finetune_makes_a_run_that_samples_the_new_artist_by_name(vqvae_run, shards, music, tmp_path, capsys):
    """`jukebox-pl finetune` on a base run with a top and a middle prior: LoRA on the top prior, the base's other
    stages linked, the best checkpoint kept; `sample --run NEW --artist NEW_NAME` works, old names too."""
    from jukebox_pl.cli import main

    (tmp_path / "base").mkdir()
    base = fresh_run(vqvae_run, tmp_path / "base")
    for level in ("top", "middle"):
        train_prior(base, level, "tiny", str(shards), PRIOR + COMMON + ["trainer.max_steps=1"])
    new_shards = new_artist_shards(music, tmp_path)
    new = tmp_path / "new_run"
    code = main(["finetune", "--from", str(base), "--data", str(new_shards), "--run", str(new), "--train", "lora:2",
                 "--init-artist", "Artist 1", *COMMON, "trainer.max_steps=2",
                 "trainer.val_check_interval=1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-3000:]
    assert (new / "vqvae_top").is_symlink() and (new / "prior_middle").is_symlink()
    assert not (new / "prior_top").is_symlink() and (new / "prior_top" / "checkpoints" / "best.ckpt").is_file()
    from jukebox_pl.sampling.models import prior_checkpoint

    assert prior_checkpoint(new, "top").name == "best.ckpt", "sampling and evaluating the run use the best weights"
    report = json.loads((new / "prior_top" / "finetune.json").read_text())
    assert "Zed Newcomer" in report["added"]["artists"] and "'Artist 1'" in report["new_rows"]
    for artist in ("Zed Newcomer", "Artist 2"):
        out = tmp_path / artist.replace(" ", "_")
        assert main(["sample", "--run", str(new), "--out", str(out), "--artist", artist, "--seconds", "0.3",
                     "--levels", "2", "--no-progress"]) == 0, capsys.readouterr().err[-3000:]  # fmt: skip
        assert (out / "middle" / "sample_0.wav").is_file()
    for shards_dir in (new_shards, shards):  # the new artist's songs, and the base's (forgetting)
        assert main(["evaluate", "--from", str(new), "--data", str(shards_dir), "--batches", "1", "--json"]) == 0
        figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert set(figures) == {"music_bits_per_token", "lyric_bits_per_token"}, figures


@pytest.mark.slow
def test_evaluate_gives_the_validation_figure_and_names_unknown_artists(vqvae_run, shards, music, tmp_path, capsys):
    """`jukebox-pl evaluate` measures what validation measured for the same weights; shards naming an artist the
    prior does not know are scored with it read as the unknown artist, and the command names it."""
    from jukebox_pl.cli import main
    from jukebox_pl.stages.evaluate import evaluate_prior

    run = fresh_run(vqvae_run, tmp_path)
    settings = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1.0"]
    module = train_prior(run, "top", "tiny", str(shards), PRIOR + COMMON + settings)
    logged = float(module.trainer.callback_metrics["val/music_bits_per_token"])
    figures = evaluate_prior(run, shards)
    assert figures["music_bits_per_token"] == pytest.approx(logged, rel=1e-5)
    assert figures == evaluate_prior(run / "prior_top" / "checkpoints" / "last.ckpt", shards)
    int4 = evaluate_prior(run, shards, weights="int4")  # what `sample --weights int4` would cost, in bits
    assert int4["music_bits_per_token"] == pytest.approx(figures["music_bits_per_token"], abs=0.05)
    assert int4 != figures

    new_shards = new_artist_shards(music, tmp_path)
    assert main(["evaluate", "--from", str(run), "--data", str(new_shards)]) == 0  # the "before" of a fine-tune
    err = capsys.readouterr().err
    assert "Zed Newcomer" in err and "read as the unknown label" in err, err


def test_new_names_take_rows_after_a_table_longer_than_its_vocabulary():
    """The released models' tables have rows no name uses (v2: 4111 artist rows, highest id 4108): a new artist
    must get a new row after them, not one of them."""
    from jukebox_pl.data.vocab import LabelVocab
    from jukebox_pl.stages.finetune_labels import merged_vocab

    base = LabelVocab().extend(["Ada", "Bo"], ["jazz"])  # artist ids 0..2, genre ids 0..1
    merged, added = merged_vocab(base, ["Bo", "Cy"], ["jazz", "folk"], rows=(4, 7))
    assert merged.artist_id("Bo") == base.artist_id("Bo") and added["artists"] == {"Cy": 7}
    assert added["genres"] == {"folk": [4]} and merged.n_artists == 8 and merged.n_genres == 5
    assert "\x00reserved" not in merged.artists
    same, nothing = merged_vocab(base, ["Ada"], [], rows=(4, 7))
    assert same.to_dict() == base.to_dict() and nothing == {"artists": {}, "genres": {}}
