"""A folder a command fills over several runs (`prep`'s shards, `encode-shards`' code shards): the state file
it writes first says whose folder it is and what defines its contents, so that a second run continues only its
own work and never mixes in a folder of other files or of another run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jukebox_pl.training.run_lock import LOCK_FILE  # the command's own lock, never a foreign file


def write_json_atomic(path: Path, data: dict) -> None:
    """JSON written beside its target and renamed over it: a kill never leaves half a state file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def describe_mismatch(old: dict, new: dict) -> str:
    """What differs between two settings dicts, key by key (`sr: was 22050, now 44100`)."""
    diffs = [
        f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    ]
    return "; ".join(diffs)


def resume_state(
    out: Path,
    state_file: str,
    *,
    command: str,
    key: str,
    fingerprint: dict,
    version: int,
    refused: type[Exception],
    empty_hint: str,
    contents: str,
    restart: str,
) -> dict | None:
    """The saved state to continue from (its `key` equals `fingerprint`), None for a fresh start (no state file
    and nothing else in `out`), or `refused` naming the problem: a folder of other files (`empty_hint` says what to
    do), or `contents` of another run (what differs, then `restart`)."""
    state_path = out / state_file
    if not state_path.is_file():
        if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise refused(f"--out {out} is not empty and was not written by `jukebox-pl {command}`; {empty_hint}")
        return None
    state = json.loads(state_path.read_text())
    if state.get("version") != version or state.get(key) != fingerprint:
        mismatch = describe_mismatch(state.get(key, {}), fingerprint)
        raise refused(f"--out {out} holds {contents} ({mismatch}); {restart}")
    return state
