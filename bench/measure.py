"""What every side-by-side bench shares, so that its figures cannot mislead: interleaved repeats after the same
warm-up on both sides, medians with their spread, the load average around the measurement, and a JSON file in
`bench/results/` that records where the figures came from (commits, torch, threads, CPU, command line, every
repeat's raw value). `bench/report.py` renders the README's tables from those files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NOISY_SPREAD = 1.5  # max / min of the repeats above this: the figure is flagged
MIN_REPEATS = 3
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "sve")  # fmt: skip


# -- repeats ----------------------------------------------------------------------------------------------------
def interleaved(sides: dict[str, Callable[[], T]], repeats: int, warmup: int = 1) -> dict[str, list[T]]:
    """Each side `warmup` times (unrecorded, in the same order), then `repeats` rounds of ours, reference, ours,
    ... so that a drift in the machine's load hits every side alike. Each callable returns what it measured."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    values: dict[str, list[T]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            values[name].append(fn())
    return values


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """`fn` as a callable that returns the seconds it took."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def stats(values: list[float]) -> dict:
    """Median and spread (min, max, max / min) of a figure's repeats, and whether the spread makes it noisy."""
    if not values:
        raise ValueError("no repeats to summarise")
    lo, hi = min(values), max(values)
    spread = hi / lo if lo > 0 else float("inf")
    return {"median": statistics.median(values), "min": lo, "max": hi, "n": len(values), "spread": spread,
            "noisy": len(values) > 1 and spread > NOISY_SPREAD, "values": list(values)}  # fmt: skip


def flag(s: dict, load: float | None = None) -> str:
    """' (noisy: spread 1.9x, load 1.9)' for a noisy figure, '' otherwise: printed after its median."""
    if not s["noisy"]:
        return ""
    return f" (noisy: spread {s['spread']:.1f}x" + (f", load {load:.1f})" if load is not None else ")")


def cell(s: dict, spec: str = ".1f", load: float | None = None) -> str:
    """A median with its range: '47.9 [47.1-49.0]', flagged when noisy."""
    return f"{s['median']:{spec}} [{s['min']:{spec}}-{s['max']:{spec}}]{flag(s, load)}"


def load1() -> float:
    """The 1-minute load average (nan where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# -- provenance -------------------------------------------------------------------------------------------------
def _git(root: Path, *args: str) -> str | None:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read only: never refresh the index
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path = ROOT) -> dict:
    """This repository's commit and whether the working tree differs from it."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit or "unknown", "dirty": bool(status) if status is not None else None}


def reference_commit(checkout: str | Path | None, given: str | None = None) -> str | None:
    """The reference checkout's commit: from its git when it has one, else `given` (--reference-commit), else
    'unknown'; None when no reference was timed."""
    if checkout is None:
        return None
    if (Path(checkout) / ".git").exists() and (commit := _git(Path(checkout), "rev-parse", "HEAD")):
        return commit
    return given or "unknown"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model and the vector / matrix flags that decide kernel speed."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "count": os.cpu_count()}


def provenance(threads: int, reference: str | Path | None = None, reference_commit_flag: str | None = None) -> dict:
    """Where a result came from: date, this repository's commit, the reference's, torch, threads, CPU, argv."""
    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_state(),
        "reference": str(reference) if reference else None,
        "reference_commit": reference_commit(reference, reference_commit_flag),
        "torch": torch.__version__,
        "threads": threads,
        "cpu": cpu_info(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
    }


class Sitting:
    """One bench run: the load average when it starts and ends, and its provenance, written with its figures."""

    def __init__(self, bench: str, threads: int, reference=None, reference_commit_flag=None):
        import torch

        torch.set_num_threads(threads)  # the same thread count on both sides, set explicitly
        self.bench, self.threads = bench, threads
        self.meta = provenance(threads, reference, reference_commit_flag)
        self.meta["load_before"] = load1()
        print(f"{bench} bench: torch {self.meta['torch']}, {threads} threads, {self.meta['cpu']['model']}, "
              f"git {self.meta['git']['commit'][:10]}{'+dirty' if self.meta['git']['dirty'] else ''}, reference "
              f"{self.meta['reference_commit']}, load {self.meta['load_before']:.1f}", flush=True)  # fmt: skip

    @property
    def load(self) -> float:
        """The highest load average seen so far in this sitting (what a noisy flag quotes)."""
        return max(self.meta["load_before"], load1())

    def finish(self, figures: dict, out: str | Path | None = None) -> Path | None:
        """Print the load average after, and write figures + provenance to `out` (default
        bench/results/<bench>.json; '-' writes nothing)."""
        self.meta["load_after"] = load1()
        print(f"load average: {self.meta['load_before']:.1f} before, {self.meta['load_after']:.1f} after", flush=True)
        if out == "-":
            return None
        return write_result(self.bench, {"meta": self.meta, **figures}, out)


def write_result(bench: str, result: dict, out: str | Path | None = None) -> Path:
    """Write atomically (temp file, then rename) to `out` or bench/results/<bench>.json."""
    path = Path(out) if out else RESULTS / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}", flush=True)
    return path
