"""Which checkpoint a resumed stage starts from: `last.ckpt`, or, when that is missing or damaged (a disk that
filled up, a copy cut short), the newest intact `stepNNNNNNNN.ckpt` beside it, saying so loudly."""

from __future__ import annotations

import re
from pathlib import Path

from lightning_utilities.core.rank_zero import rank_zero_warn

from jukebox_pl.errors import MissingInputError
from jukebox_pl.training.checkpoints.checksums import damaged_tensors, describe_damage
from jukebox_pl.training.checkpoints.read_write import load_mapped, safe_load, unsafe_global

STEP_FILE = re.compile(r"^step(\d+)\.ckpt$")


def is_intact(path: Path) -> str | None:
    """None when the file opens as a checkpoint, else why not. The archive is mapped, not copied, and each
    tensor read once to compare its checksum (the resume reads it next from the page cache); tensors whose
    bytes differ from their checksums make the file damaged. A crafted pickle (any global or object torch
    refuses, however it words it) is refused with UnsafeFileError, which stops the resume: it is never passed
    over as damaged, or the run would silently continue from an older file."""
    try:
        obj = load_mapped(path)
    except Exception as err:  # truncated archive, zero bytes, not a zip, or a refused pickle
        if unsafe_global(err) is not None:
            safe_load(path, "checkpoint")  # raises UnsafeFileError naming the file and what it held
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    bad = damaged_tensors(obj)
    return describe_damage(bad) if bad else None


def numbered_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the every-N-step checkpoints, newest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("step*.ckpt") if (m := STEP_FILE.match(p.name))]
    return sorted(found, reverse=True)


def resume_checkpoint(folder: str | Path) -> Path:
    """`folder/last.ckpt` when intact, else the newest intact numbered checkpoint (with a warning naming what was
    wrong and what is used instead); MissingInputError when there is nothing to resume from."""
    folder = Path(folder)
    last = folder / "last.ckpt"
    problems = []
    if last.is_file():
        why = is_intact(last)
        if why is None:
            return last
        problems.append(f"{last} is damaged ({why})")
    else:
        problems.append(f"{last} does not exist")
    for step, path in numbered_checkpoints(folder):
        why = is_intact(path)
        if why is None:
            rank_zero_warn(f"{problems[0]}; resuming from {path} (step {step}) instead")
            return path
        problems.append(f"{path} is damaged ({why})")
    raise MissingInputError(
        "nothing to resume: " + "; ".join(problems) + " (train without --resume first, or choose another --run)"
    )
