"""SLURM: Lightning's environment detection (ranks, nodes, main address from the job's variables), with the
requeue done so that the requeued job continues exactly where the first one stopped.

Submit with `#SBATCH --signal=USR1@90` (SIGUSR1 90 s before the time limit). `GracefulStop` then stops every
rank at the next step boundary with `last.ckpt` saved, rank 0 runs `scontrol requeue JOB`, and the requeued
job (SLURM sets `SLURM_RESTART_COUNT`) resumes from that checkpoint with the same command line. Lightning's own
auto-requeue is switched off: it saves an `hpc_ckpt` from inside the signal handler, mid-step, and a run
resumed from it would not be the run that would have been.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn


def slurm_environment():
    """Lightning's SLURMEnvironment without its auto-requeue, when running as SLURM tasks; else None."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment(auto_requeue=False) if SLURMEnvironment.detect() else None


def restart_count() -> int:
    """How many times SLURM has requeued this job (0 for its first run or outside SLURM)."""
    value = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    return int(value) if value.isdigit() else 0


def job_id() -> str | None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue() -> bool:
    """`scontrol requeue` this job (rank 0 calls it once); says so, or why it could not."""
    job = job_id()
    if job is None:
        rank_zero_warn("SIGUSR1 received but SLURM_JOB_ID is missing or malformed: the job is not requeued")
        return False
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        rank_zero_warn(f"SIGUSR1 received but scontrol is not on PATH: job {job} is not requeued")
        return False
    done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        rank_zero_warn(f"scontrol requeue {job} failed ({done.returncode}): {done.stderr.strip()[:500]}")
        return False
    rank_zero_info(f"requeued SLURM job {job}; it resumes from last.ckpt when it restarts")
    return True
