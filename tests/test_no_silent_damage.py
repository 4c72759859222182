"""No silent damage (issue 21): a refused `--resume` leaves the saved config as it was; one process per stage
folder or sample folder; `sample --out` never writes into a folder that is not its own; a prior is never paired
with the codebook of another VQ-VAE than the one it learned."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prior_settings import COMMON, VQVAE

from jukebox_pl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = VQVAE + COMMON + ["trainer.max_steps=1", "run.log_audio_every_n_steps=0", "data.epoch_length=4"]


def train(run: Path, shards: Path, *extra: str, level: str = "top", stage: str = "vqvae") -> int:
    return main(["train", stage, "--level", level, "--run", str(run), "--data", str(shards), *TINY, *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


class Holder:
    """Another process holding a folder's lock (what a second `train`/`sample` on the folder meets)."""

    def __init__(self, folder: Path):
        code = textwrap.dedent(f"""
            import sys, time
            from jukebox_pl.training.run_lock import lock_folder
            lock_folder({str(folder)!r})
            print("locked", flush=True)
            sys.stdin.read()
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        assert self.proc.stdout.readline().strip() == "locked"

    def __enter__(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- a refused --resume writes nothing ------------------------------------------------------------------------
def test_a_refused_resume_leaves_the_saved_config_and_a_plain_resume_works(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, shards) == 0
    saved = run / "vqvae_top" / "config.yaml"
    before = saved.read_text()
    capsys.readouterr()
    assert train(run, shards, "--resume", "vqvae.l_bins=64") == 2
    err = one_line(capsys)
    assert "vqvae.l_bins" in err and "32" in err and "64" in err and str(saved) in err
    assert saved.read_text() == before
    assert train(run, shards, "--resume", "trainer.max_steps=2") == 0, capsys.readouterr().err


# -- one process per stage folder -----------------------------------------------------------------------------
def test_a_second_train_on_a_stage_folder_in_use_is_refused_naming_the_holder(shards, tmp_path, capsys):
    stage = tmp_path / "run" / "vqvae_top"
    with Holder(stage) as pid:
        assert train(tmp_path / "run", shards) == 2
        err = one_line(capsys)
        assert f"PID {pid}" in err and str(stage) in err
        assert not (stage / "config.yaml").exists()
    assert train(tmp_path / "run", shards) == 0, capsys.readouterr().err  # the holder ended: the lock is gone


def test_only_the_first_rank_locks(tmp_path, monkeypatch):
    """The ranks of one run share its folders: a process launched as another rank never takes (or meets) the
    lock, so it cannot refuse its own rank 0."""
    from jukebox_pl.training.run_lock import lock_folder

    with Holder(tmp_path / "stage"):
        for var, value in (("LOCAL_RANK", "1"), ("NODE_RANK", "1"), ("RANK", "3"), ("SLURM_PROCID", "2")):
            with monkeypatch.context() as env:
                env.setenv(var, value)
                assert lock_folder(tmp_path / "stage") is None


# -- sample --out writes only into its own folder ---------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict[str, Path]:
    """Run `a`: a top VQ-VAE level and its top prior; `b`: another top level of the same shape (another seed);
    `small`: a top level with another codebook size. One training step each."""
    from prior_settings import PRIOR

    root = tmp_path_factory.mktemp("pairing")
    runs = {name: root / name for name in ("a", "b", "small")}
    assert train(runs["a"], shards) == 0
    assert train(runs["a"], shards, *PRIOR, stage="prior") == 0
    assert train(runs["b"], shards, "seed=5") == 0
    assert train(runs["small"], shards, "vqvae.l_bins=16") == 0
    return runs


def sample_args(out: Path, *extra: str) -> list[str]:
    return ["sample", "--out", str(out), "--levels", "1", "--seconds", "0.2", "--no-progress", *extra]


def test_sample_never_writes_into_a_foreign_folder(runs, tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("my page")
    assert main(sample_args(site, "--run", str(runs["a"]))) == 2
    err = one_line(capsys)
    assert str(site) in err and "index.html" in err
    assert (site / "index.html").read_text() == "my page" and sorted(p.name for p in site.iterdir()) == ["index.html"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    assert main(sample_args(a_file, "--run", str(runs["a"]))) == 2
    assert str(a_file) in one_line(capsys) and a_file.read_text() == "keep"


def test_sample_into_a_new_then_its_own_folder_and_one_process_at_a_time(runs, tmp_path, capsys):
    out = tmp_path / "song"
    with Holder(out) as pid:  # another `sample` is writing there
        assert main(sample_args(out, "--run", str(runs["a"]))) == 2
        assert f"PID {pid}" in one_line(capsys)
    assert main(sample_args(out, "--run", str(runs["a"]))) == 0, capsys.readouterr().err
    assert (out / "codes.pt").is_file()
    assert main(sample_args(out, "--run", str(runs["a"]), "--resume")) == 0, capsys.readouterr().err
    assert main(sample_args(tmp_path / "never", "--run", str(runs["a"]), "--artist", "Nobody At All")) == 2
    assert not (tmp_path / "never").exists()  # a refused sample leaves no folder behind


# -- a prior is used only with the VQ-VAE whose codes it learned ------------------------------------------------
def files(runs: dict[str, Path], prior: str, vqvae: str) -> tuple[Path, Path]:
    return runs[prior] / "prior_top" / "checkpoints" / "last.ckpt", runs[
        vqvae
    ] / "vqvae_top" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(("other", "differs"), [("b", "top codebook"), ("small", "top l_bins 32 vs 16")])
def test_a_prior_with_another_vqvae_is_refused_unless_allowed(runs, tmp_path, capsys, other, differs):
    prior, vqvae = files(runs, "a", other)
    args = sample_args(tmp_path / "x", "--prior", str(prior), "--vqvae", str(vqvae))
    assert main(args) == 2
    err = one_line(capsys)
    assert str(prior) in err and str(vqvae) in err and differs in err and "--allow-mismatch" in err
    if other == "b":  # same shapes: sampling goes through when asked for, with a warning
        with pytest.warns(UserWarning, match="another VQ-VAE"):
            assert main([*args, "--allow-mismatch"]) == 0, capsys.readouterr().err
    prior, vqvae = files(runs, "a", "a")
    assert main(sample_args(tmp_path / "y", "--prior", str(prior), "--vqvae", str(vqvae))) == 0


def test_a_run_folder_whose_prior_learned_another_vqvae_is_refused_by_sample_and_evaluate(runs, shards, tmp_path,
                                                                                          capsys):  # fmt: skip
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(runs["b"] / "vqvae_top", mixed / "vqvae_top")
    shutil.copytree(runs["a"] / "prior_top", mixed / "prior_top")
    assert main(sample_args(tmp_path / "x", "--run", str(mixed))) == 2
    err = one_line(capsys)
    assert "prior_top" in err and "vqvae_top" in err and "codebook" in err
    assert main(["evaluate", "--from", str(mixed), "--data", str(shards), "--batches", "1"]) == 2
    assert "codebook" in one_line(capsys)


def test_a_prior_resumed_on_another_vqvae_is_refused(runs, shards, tmp_path, capsys):
    import shutil

    from prior_settings import PRIOR

    run = tmp_path / "run"
    shutil.copytree(runs["a"], run, ignore=shutil.ignore_patterns(".lock"))
    shutil.rmtree(run / "vqvae_top")
    shutil.copytree(runs["b"] / "vqvae_top", run / "vqvae_top")  # the VQ-VAE swapped under the prior
    assert train(run, shards, *PRIOR, "--resume", "trainer.max_steps=2", stage="prior") == 2
    err = one_line(capsys)
    assert "prior_top" in err and "last.ckpt" in err and "codebook" in err


def test_a_prior_that_records_no_vqvae_loads_with_a_warning(runs, tmp_path, capsys):
    import torch

    prior, vqvae = files(runs, "a", "a")
    old = tmp_path / "old.ckpt"
    saved = torch.load(prior, weights_only=True)
    del saved["jukebox_pl"]["vqvae_fingerprint"]
    torch.save(saved, old)
    with pytest.warns(UserWarning, match="does not record which VQ-VAE"):
        assert main(sample_args(tmp_path / "x", "--prior", str(old), "--vqvae", str(vqvae))) == 0


def test_an_imported_prior_records_the_vqvae_it_was_imported_with(tmp_path, capsys):
    """Reference files carry no record: the import writes one, from the VQ-VAE imported with the prior (given
    after it here) or already in the run folder, so the imported run samples without a warning."""
    import warnings

    import torch
    from test_import_openai import FIXTURES, reference_file

    from jukebox_pl.stages.import_openai import ImportItem, import_openai
    from jukebox_pl.vqvae.fingerprint import codes_fingerprint
    from jukebox_pl.vqvae.vqvae import VQVAE

    vq, vq_hps = reference_file(FIXTURES, "small_vqvae", tmp_path)
    prior, prior_hps = reference_file(FIXTURES, "small_prior_w128_d6", tmp_path)
    together, later = tmp_path / "together", tmp_path / "later"
    assert main(["import-openai", "--out", str(together), "--prior", str(prior), "--hps", str(prior_hps), "--level",
                 "top", "--vqvae", str(vq), "--hps", str(vq_hps)]) == 0  # fmt: skip
    assert main(["import-openai", "--out", str(later), "--vqvae", str(vq), "--hps", str(vq_hps)]) == 0
    import_openai(later, [ImportItem("prior", str(prior), str(prior_hps), "top")], overwrite=True)
    for run in (together, later):
        meta = torch.load(run / "prior_top" / "export.pt", weights_only=True)["meta"]
        vqvae = VQVAE.from_run(run)
        assert meta["vqvae_fingerprint"] == codes_fingerprint(vqvae, vqvae.n_levels - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert main(sample_args(tmp_path / f"{run.name}_song", "--run", str(run), "--temperature", "0")) == 0


def test_a_second_encode_shards_on_a_folder_in_use_is_refused(runs, shards, tmp_path, capsys):
    out = tmp_path / "codes"
    args = ["encode-shards", "--shards", str(shards), "--out", str(out), "--run", str(runs["a"]), "--no-progress"]
    with Holder(out) as pid:
        assert main(args) == 2
        assert f"PID {pid}" in one_line(capsys)
    assert main(args) == 0, capsys.readouterr().err  # the holder ended; its empty lock file is no foreign file


def _stage_copy(source: Path, run: Path, stage: str) -> None:
    import shutil

    shutil.copytree(source / stage, run / stage, ignore=shutil.ignore_patterns(".lock"))


def test_a_prior_is_not_trained_on_another_vqvaes_code_shards(runs, shards, tmp_path, capsys):
    from prior_settings import PRIOR

    codes = tmp_path / "codes_b"
    assert main(["encode-shards", "--shards", str(shards), "--out", str(codes), "--run", str(runs["b"]),
                 "--no-progress"]) == 0  # fmt: skip
    run = tmp_path / "run"
    _stage_copy(runs["a"], run, "vqvae_top")
    capsys.readouterr()
    assert main(["train", "prior", "--level", "top", "--run", str(run), "--data", str(codes), *TINY, *PRIOR]) == 2
    err = one_line(capsys)
    assert "code shards" in err and "codes_b" in err and "encoded by another VQ-VAE" in err and "encoder" in err


def test_a_prior_is_not_fine_tuned_on_another_vqvae(runs, shards, tmp_path, capsys):
    from prior_settings import PRIOR

    run = tmp_path / "run"
    _stage_copy(runs["b"], run, "vqvae_top")
    base = runs["a"] / "prior_top" / "checkpoints" / "last.ckpt"
    assert train(run, shards, *PRIOR, "--init", str(base), stage="prior") == 2
    err = one_line(capsys)
    assert str(base) in err and "another VQ-VAE" in err and "codebook" in err
    assert not (run / "prior_top" / "checkpoints" / "last.ckpt").exists()
