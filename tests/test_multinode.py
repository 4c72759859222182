"""Two nodes on one machine, for real: two processes with `trainer.num_nodes=2 trainer.devices=1` (gloo), started
by hand (NODE_RANK, MASTER_ADDR), by `torchrun --nnodes 2`, and as two SLURM tasks (the variables set by hand)
with a SIGUSR1 requeue that the requeued job resumes from. The nodes read different data and end identical."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "node_probe.py"
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR",
               "MASTER_PORT")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in LAUNCH_VARS and not k.startswith(("SLURM_", "TORCHELASTIC_"))}  # fmt: skip


def launch(commands: list[list[str]], envs: list[dict], timeout: float = 300) -> list[tuple[int, str]]:
    procs = [subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c, e in zip(commands, envs)]  # fmt: skip
    try:
        return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def probe(*args) -> list[str]:
    return [sys.executable, str(SCRIPT), *map(str, args)]


def by_hand_env(port: int | None = None) -> list[dict]:
    """The environments of two nodes started by hand on this machine (node ranks 0 and 1, one master port)."""
    port = port or free_port()
    return [{**clean_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(r)} for r in (0, 1)]


def by_hand(args: list, port: int) -> list[tuple[int, str]]:
    return launch([probe(*args)] * 2, by_hand_env(port))


def ranks_agree(out: Path, step: int, start: int = 0) -> None:
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for r in (r0, r1):
        assert (r["world"], r["nodes"], r["start"], r["step"]) == (2, 2, start, step)
    assert r0["keys"] and set(r0["keys"]) != set(r1["keys"]), "the nodes trained on different crops"
    differ = [k for k in r0["state"] if not torch.equal(r0["state"][k], r1["state"][k])]
    assert not differ, f"the nodes' weights differ: {differ[:5]}"


def passed(results: list[tuple[int, str]], code: int = 0) -> None:
    for rc, log in results:
        assert rc == code, log[-4000:]


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_train_a_vqvae_level_and_a_prior_then_resume(shards, tmp_path):
    run = tmp_path / "run"
    passed(by_hand(["vqvae", shards, run, tmp_path / "vq", 3], free_port()))
    ranks_agree(tmp_path / "vq", 3)  # weights, EMA codebook and its counters alike
    passed(by_hand(["prior", shards, run, tmp_path / "prior", 2], free_port()))
    ranks_agree(tmp_path / "prior", 2)
    passed(by_hand(["prior", shards, run, tmp_path / "resumed", 4, "resume"], free_port()))
    ranks_agree(tmp_path / "resumed", 4, start=2)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_under_torchrun(shards, tmp_path):
    port = free_port()
    commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                 "--node-rank", str(r), "--master-addr", "127.0.0.1", "--master-port", str(port),
                 *probe("vqvae", shards, tmp_path / "run", tmp_path / "out", 2)[1:]] for r in (0, 1)]  # fmt: skip
    passed(launch(commands, [clean_env()] * 2))
    ranks_agree(tmp_path / "out", 2)


@pytest.mark.slow
@pytest.mark.ddp
def test_slurm_tasks_requeue_on_sigusr1_and_the_requeued_job_resumes(shards, tmp_path):
    """SIGUSR1 (sbatch --signal=USR1@90) at step 2: both tasks stop at that step with last.ckpt saved, task 0
    runs `scontrol requeue JOB`; the requeued job (SLURM_RESTART_COUNT=1), started with the same command line,
    continues from step 2 to the end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.log"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    port = free_port()

    def tasks(restart: int) -> list[dict]:
        common = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "jukebox", "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
                  "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "127.0.0.1", "SLURM_LOCALID": "0",
                  "MASTER_PORT": str(port), "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
        if restart:
            common["SLURM_RESTART_COUNT"] = str(restart)
        return [{**clean_env(), **common, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)} for r in (0, 1)]

    run, out = tmp_path / "run", tmp_path / "out"
    first = launch([probe("vqvae", shards, run, out, 5, "usr1-at=2")] * 2, tasks(0))
    passed(first, 128 + signal.SIGUSR1)
    assert calls.read_text().split() == ["requeue", "4242"], "task 0 (only) requeues the job"
    assert torch.load(run / "vqvae_top" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    ranks_agree(out, 2)
    port = free_port()
    passed(launch([probe("vqvae", shards, run, out, 5)] * 2, tasks(1)))
    ranks_agree(out, 5, start=2)
