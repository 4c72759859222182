"""Peak memory of importing and loading a released-size prior, against the size of its file.

Writes a reference-format file with the exact keys and shapes of a released prior (random weights; by default
`1b_lyrics`, 943 M parameters, 3.8 GB), then in fresh processes: converts it with `import_openai` and loads
the result the way `jukebox-pl sample` does. Prints each process's peak RSS. The target: neither holds more
than one copy of the weights (peak RSS <= file size + the interpreter and torch, ~0.5 GB).

    python bench/import.py [--model 1b_lyrics|5b|5b_lyrics|upsampler_level_0|upsampler_level_1] [--dir DIR]
    python bench/import.py --dry-run     # the same steps on the released VQ-VAE's layout (seconds)
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

KEYS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openai_jukebox" / "keys" / "released"
FILES = {
    "1b_lyrics": "prior_1b_lyrics",
    "5b": "prior_5b",
    "5b_lyrics": "prior_5b_lyrics",
    "upsampler_level_0": "upsampler_level_0",
    "upsampler_level_1": "upsampler_level_1",
    "vqvae": "vqvae",
}

CHILD = """
import resource, sys, time
t = time.perf_counter()
step, path, out, hps = sys.argv[1:5]
if step == "import":
    from jukebox_pl.stages.import_openai import ImportItem, import_openai
    kind = "vqvae" if hps == "vqvae" else "prior"
    import_openai(out, [ImportItem(kind, path, hps)])
else:
    from jukebox_pl.sampling.models import load_prior
    from jukebox_pl.vqvae.vqvae import VQVAE
    if hps == "vqvae":
        VQVAE.from_run(out)
    else:
        import glob
        model, _ = load_prior(glob.glob(out + "/prior_*/export.pt")[0])
        print("params", sum(p.numel() for p in model.parameters()), file=sys.stderr)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"{peak:.2f} {time.perf_counter() - t:.1f}")
"""


def write_reference_file(model: str, path: Path) -> int:
    """A {'model': state} file with the released layout, random N(0, 0.02) weights; returns its byte size."""
    state = {}
    for line in (KEYS / f"{FILES[model]}.txt").read_text().splitlines():
        key, shape, dtype, _ = line.split("\t")
        dtype = getattr(torch, dtype.removeprefix("torch."))
        state[key] = (torch.randn(ast.literal_eval(shape)) * 0.02).to(dtype)
    torch.save({"model": state, "step": 0}, path)
    return path.stat().st_size


def run_child(step: str, path: Path, out: Path, hps: str) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", CHILD, step, str(path), str(out), hps], capture_output=True,
                          text=True, check=True)  # fmt: skip
    peak, seconds = done.stdout.split()[-2:]
    return float(peak), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="1b_lyrics", choices=sorted(FILES))
    parser.add_argument("--dir", help="where to write the files (default: a temporary folder, removed after)")
    parser.add_argument("--dry-run", action="store_true", help="use the VQ-VAE's layout: checks the steps quickly")
    args = parser.parse_args()
    model = "vqvae" if args.dry_run else args.model
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        source, run = Path(tmp) / f"{model}.pth.tar", Path(tmp) / "run"
        t = time.perf_counter()
        size = write_reference_file(model, source) / 2**30
        print(f"{model}: reference-format file {size:.2f} GiB, written in {time.perf_counter() - t:.0f} s")
        for step in ("import", "load"):
            peak, seconds = run_child(step, source, run, model)
            print(f"  {step:<6} peak RSS {peak:6.2f} GiB ({peak / size:4.2f}x the file) in {seconds:5.1f} s")
        written = sum(p.stat().st_size for p in run.rglob("*.pt")) / 2**30
        print(f"  imported run: {written:.2f} GiB on disk")


if __name__ == "__main__":
    main()
