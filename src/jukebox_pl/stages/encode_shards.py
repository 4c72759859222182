"""`jukebox-pl encode-shards`: audio shards -> VQ-VAE code shards, so prior training never runs the VQ-VAE.

Each output shard mirrors one audio shard (same split, same name, same tracks in the same order) and holds per
track `<key>.json` (the audio shard's track info, byte for byte) and `<key>.codes<level>.npy` (int16, 1-D,
ceil(samples / hop) codes of the whole mono track). Shards are written as `.tar.tmp` and renamed when
complete; a state file records which are done, so an interrupted run resumes, and a run over an `--out`
encoded from other audio or other VQ-VAE weights is refused instead of mixing the two. Tracks that cannot be
read are skipped and listed in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from jukebox_pl.audio import AudioDecodeError, read_audio
from jukebox_pl.config.levels import level_index, level_name
from jukebox_pl.data.code_shards import CODES_FORMAT, CODES_KIND, INT16_CODES, codes_ext
from jukebox_pl.data.prep import MANIFEST_FILE, SPLITS, VOCAB_FILE
from jukebox_pl.data.resumable_folder import resume_state, write_json_atomic
from jukebox_pl.errors import MissingInputError, RefusedError, UserValueError
from jukebox_pl.training.run_lock import lock_folder, release
from jukebox_pl.vqvae.fingerprint import codebook_sha1, encoder_sha1
from jukebox_pl.vqvae.vqvae import VQVAE, level_checkpoint

STATE_FILE = ".encode_state.json"
STATE_VERSION = 1
AUDIO_EXTS = ("flac", "wav", "ogg", "mp3")


class EncodeRefused(RefusedError):
    """OUT holds code shards this run must not touch (other audio or other VQ-VAE weights)."""


class BadTrack(UserValueError):
    """One track of a shard cannot be encoded; it is skipped and reported, never fatal."""


# -- what defines a code-shard folder (a resume must match it exactly) ----------------------------------------
def encoder_fingerprint(vqvae: VQVAE, level: int) -> str:
    """sha1 of what decides a level's codes (encoder weights + codebook; `jukebox_pl.vqvae.fingerprint`).

    Hashing weights rather than checkpoint paths means a moved or re-exported checkpoint still resumes, while a
    checkpoint trained further (same path, new weights) is refused.
    """
    return encoder_sha1(vqvae.level(level).state_dict())


def _source_digest(manifest: dict) -> str:
    """sha1 of the audio manifest's shards and tracks (its `created` time does not count)."""
    body = json.dumps({"shards": manifest.get("shards"), "tracks": manifest.get("tracks")}, sort_keys=True)
    return hashlib.sha1(body.encode()).hexdigest()[:16]


def fingerprint(src: Path, manifest: dict, vqvae: VQVAE, levels: list[int]) -> dict:
    """Flat, so a refusal can name exactly what differs (e.g. `encoder_top`)."""
    fp = {
        "source": str(src.resolve()),
        "source_manifest": _source_digest(manifest),
        "sample_rate": vqvae.sample_rate,
        "levels": [level_name(i, vqvae.n_levels) for i in levels],
    }
    for i in levels:
        name = level_name(i, vqvae.n_levels)
        fp[f"hop_{name}"] = vqvae.hop_length(i)
        fp[f"encoder_{name}"] = encoder_fingerprint(vqvae, i)
    return fp


def resolve_levels(vqvae: VQVAE, levels: list[int | str] | None) -> list[int]:
    """Indices of the levels to encode: all loaded ones by default; names or indices otherwise."""
    if not levels:
        return vqvae.available()
    wanted = sorted({level_index(lv, vqvae.n_levels) for lv in levels})
    for idx in wanted:
        vqvae.level(idx)  # KeyError naming the loaded levels
    return wanted


# -- checks before anything is written -----------------------------------------------------------------------
def _read_source(src: Path) -> dict:
    path = src / MANIFEST_FILE
    if not path.is_file():
        raise MissingInputError(
            f"--shards {src} has no {MANIFEST_FILE}; point it at a folder written by `jukebox-pl prep`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("kind") == CODES_KIND:
        raise UserValueError(f"--shards {src} already holds code shards; give the audio shards they were made from")
    return manifest


def _check_model(vqvae: VQVAE, levels: list[int], manifest: dict, src: Path) -> None:
    if manifest["sample_rate"] != vqvae.sample_rate:
        raise UserValueError(
            f"the audio shards in {src} are {manifest['sample_rate']} Hz but the VQ-VAE was trained at "
            f"{vqvae.sample_rate} Hz; prep the audio again with --sr {vqvae.sample_rate}"
        )
    for i in levels:
        cfg = vqvae.level(i).cfg
        name = level_name(i, vqvae.n_levels)
        if cfg.channels != 1:
            raise UserValueError(f"VQ-VAE level {name} takes {cfg.channels} channels; encode-shards encodes mono audio")
        if cfg.l_bins > INT16_CODES:
            raise UserValueError(f"VQ-VAE level {name} has {cfg.l_bins} codes, more than int16 code shards can hold")


def _check_out(out: Path, src: Path, fp: dict) -> dict | None:
    """The state to resume from, None for a fresh start, or EncodeRefused naming what differs."""
    if out.resolve() == src.resolve():
        raise EncodeRefused(f"--out {out} is the audio shard folder itself; choose another folder")
    return resume_state(
        out, STATE_FILE, command="encode-shards", key="fingerprint", fingerprint=fp, version=STATE_VERSION,
        refused=EncodeRefused, empty_hint="choose an empty folder",
        contents="code shards made from a different source or VQ-VAE",
        restart="use a new --out, or delete that folder to encode again",
    )  # fmt: skip


# -- reading audio shards and writing code shards ---------------------------------------------------------------
def _track_groups(path: Path) -> Iterator[tuple[str | None, dict[str, bytes]]]:
    """(key, {ext: bytes}) per track in shard order; a damaged tar ends with (None, {"error": reason})."""
    key, group = None, {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                k, _, ext = member.name.rsplit("/", 1)[-1].partition(".")
                if key is not None and k != key:
                    yield key, group
                    group = {}
                key = k
                group[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        if key is not None:
            yield key, group
        yield None, {"error": f"{type(err).__name__}: {err}".encode()}
        return
    if key is not None:
        yield key, group


def _npy_bytes(codes: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, codes, allow_pickle=False)
    return buf.getvalue()


def _encode_track(
    members: dict[str, bytes], vqvae: VQVAE, levels: list[int], device: str
) -> tuple[dict, dict[int, np.ndarray]]:
    """One track's info and its codes per level; BadTrack says why a track cannot be used."""
    if "json" not in members:
        raise BadTrack("no .json member")
    audio_ext = next((e for e in AUDIO_EXTS if e in members), None)
    if audio_ext is None:
        raise BadTrack(f"no audio member (has {sorted(members)})")
    try:
        info = json.loads(members["json"])
        expected = int(info["samples"])
    except (ValueError, KeyError, TypeError) as err:
        raise BadTrack(f"malformed json ({type(err).__name__}: {err})") from None
    try:
        audio, sr = read_audio(members[audio_ext])
    except AudioDecodeError as err:
        raise BadTrack(f"cannot decode the {audio_ext} audio ({str(err).split(': ', 1)[-1]})") from None
    if sr != vqvae.sample_rate:
        raise BadTrack(f"audio is {sr} Hz, the VQ-VAE {vqvae.sample_rate} Hz")
    if audio.shape[1] != expected or expected == 0:
        raise BadTrack(f"decoded {audio.shape[1]} samples but its json says {expected}")
    mono = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=0, dtype=np.float32)))
    codes = vqvae.encode(mono.to(device)[None, None], levels)
    return info, {i: c[0].cpu().numpy().astype(np.int16) for i, c in codes.items()}


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Fixed metadata (mtime 0, no owner), so a resumed run writes byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    tar.addfile(info, io.BytesIO(data))


def _track_record(key: str, info: dict, codes: dict[int, np.ndarray], shard: str, split: str, source: dict) -> dict:
    """The audio manifest's entry for this track (or one rebuilt from its json), plus code counts."""
    sr = int(info.get("sample_rate", 0)) or 1
    record = dict(source.get(key) or {})
    record.setdefault("path", info.get("source", key))
    record.setdefault("seconds", round(int(info["samples"]) / sr, 3))
    record.setdefault("artist", info.get("artist", "unknown"))
    record.setdefault("genres", info.get("genres", []))
    record.update(key=key, split=split, shard=shard, samples=int(info["samples"]))
    record["tokens"] = {str(i): int(c.shape[0]) for i, c in codes.items()}
    return record


def encode_shard(
    src_path: Path,
    out_path: Path,
    split: str,
    vqvae: VQVAE,
    levels: list[int],
    device: str,
    source_tracks: dict[str, dict],
    advance: Callable[[], None] = lambda: None,
) -> tuple[list[dict], list[dict]]:
    """Encode one audio shard into `out_path` (via `.tar.tmp`); returns (track records, skipped tracks)."""
    records, skipped = [], []
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, members in _track_groups(src_path):
            if key is None:
                reason = f"shard ends early ({members['error'].decode()})"
                skipped.append({"shard": src_path.name, "key": None, "reason": reason})
                break
            try:
                info, codes = _encode_track(members, vqvae, levels, device)
            except BadTrack as err:
                skipped.append({"shard": src_path.name, "key": key, "reason": str(err)})
                advance()
                continue
            _add_member(tar, f"{key}.json", members["json"])
            for i, c in codes.items():
                _add_member(tar, f"{key}.{codes_ext(i)}", _npy_bytes(c))
            records.append(_track_record(key, info, codes, out_path.name, split, source_tracks))
            advance()
    if records:
        os.replace(tmp, out_path)
    else:
        tmp.unlink()
    return records, skipped


# -- the whole folder -----------------------------------------------------------------------------------------
def encode_shards(
    src: str | Path,
    out: str | Path,
    vqvae: VQVAE,
    levels: list[int | str] | None = None,
    device: str = "cpu",
    progress: bool = False,
    checkpoints: list[str] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Encode (or resume encoding) every track of an audio-shard folder; returns the code manifest.

    `checkpoints` (the level files `vqvae` was loaded from) are only recorded in the manifest; whether `out`
    may be resumed is decided by a fingerprint of the encoder weights.
    """
    src, out = Path(src), Path(out)
    source = _read_source(src)
    levels = resolve_levels(vqvae, levels)
    _check_model(vqvae, levels, source, src)
    fp = fingerprint(src, source, vqvae, levels)
    state = _check_out(out, src, fp)
    lock_folder(out, "--out")  # one encode-shards per folder (creates it)
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob("*.tar.tmp"):  # a shard that was being written when the last run stopped
        tmp.unlink()
    if state is None:
        state = {"version": STATE_VERSION, "fingerprint": fp, "shards": {}, "skipped": {}, "complete": False}
    state_path = out / STATE_FILE
    write_json_atomic(state_path, state)
    vqvae.to(device).eval()
    source_tracks = {t["key"]: t for t in source.get("tracks", [])}
    todo = [
        (split, name)
        for split in SPLITS
        for name in source["shards"][split]
        if not (name in state["shards"] and (not state["shards"][name] or (out / name).is_file()))
    ]
    if len(todo) < sum(len(source["shards"][s]) for s in SPLITS):
        log(f"resuming {out}: {len(todo)} shard(s) left to encode")
    per_shard = Counter(t.get("shard") for t in source_tracks.values())
    n_tracks = sum(per_shard[name] for _, name in todo)
    with _progress(progress, n_tracks) as advance:
        for split, name in todo:
            records, skipped = encode_shard(
                src / name, out / name, split, vqvae, levels, device, source_tracks, advance
            )
            state["shards"][name] = records
            state["skipped"][name] = skipped
            write_json_atomic(state_path, state)
    manifest = build_manifest(src, source, vqvae, levels, state, checkpoints)
    if (src / VOCAB_FILE).is_file():
        shutil.copyfile(src / VOCAB_FILE, out / VOCAB_FILE)
    write_json_atomic(out / MANIFEST_FILE, manifest)
    state["complete"] = True
    write_json_atomic(state_path, state)
    release(out)
    return manifest


def build_manifest(
    src: Path, source: dict, vqvae: VQVAE, levels: list[int], state: dict, checkpoints: list[str] | None
) -> dict:
    """Like the audio manifest (shards, tracks, counts, skips) plus what a prior needs: levels, hops, codebooks."""
    shards = {s: [n for n in source["shards"][s] if state["shards"].get(n)] for s in SPLITS}
    tracks = sorted((r for n in state["shards"] for r in state["shards"][n]), key=lambda r: r["path"])
    skipped = [item for n in sorted(state["skipped"]) for item in state["skipped"][n]]
    hours = {s: round(sum(t["seconds"] for t in tracks if t["split"] == s) / 3600, 4) for s in SPLITS}
    tokens = {str(i): sum(t["tokens"][str(i)] for t in tracks) for i in levels}
    names = {i: level_name(i, vqvae.n_levels) for i in levels}
    return {
        "kind": CODES_KIND,
        "format": CODES_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(src.resolve()),
        "sample_rate": vqvae.sample_rate,
        "n_levels": vqvae.n_levels,
        "levels": {str(i): vqvae.hop_length(i) for i in levels},
        "level_names": {str(i): n for i, n in names.items()},
        "l_bins": {str(i): int(vqvae.level(i).cfg.l_bins) for i in levels},
        "codes_dtype": "int16",
        "vqvae": {
            "checkpoints": [str(Path(p).resolve()) for p in checkpoints] if checkpoints else None,
            "encoder_sha1": {n: state["fingerprint"][f"encoder_{n}"] for n in names.values()},
            "codebook_sha1": {n: codebook_sha1(vqvae.level(i).state_dict()) for i, n in names.items()},
        },
        "fingerprint": state["fingerprint"],
        "counts": {
            "tracks": {s: sum(t["split"] == s for t in tracks) for s in SPLITS},
            "skipped": len(skipped),
            "shards": {s: len(shards[s]) for s in SPLITS},
            "tokens": tokens,
        },
        "hours": {**hours, "total": round(sum(hours.values()), 4)},
        "shards": shards,
        "skipped": skipped,
        "vocab": {**source.get("vocab", {}), "file": VOCAB_FILE},
        "tracks": tracks,
    }


class _progress:
    """A rich progress bar over tracks (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("encode"), BarColumn(), MofNCompleteColumn(), TextColumn("tracks"),
                            TimeElapsedColumn())  # fmt: skip
        self.bar.__enter__()
        task = self.bar.add_task("encode", total=self.total)
        return lambda: self.bar.update(task, advance=1)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)


# -- command line ---------------------------------------------------------------------------------------------
def _load_for_cli(args) -> tuple[VQVAE, list[str]]:
    """The VQ-VAE and the checkpoint files it came from (recorded in the manifest)."""
    if args.vqvae:
        return VQVAE.from_checkpoints(args.vqvae), list(args.vqvae)
    vqvae = VQVAE.from_run(args.run)
    return vqvae, [str(level_checkpoint(args.run, level_name(i, vqvae.n_levels))) for i in vqvae.available()]


def run(args) -> int:
    """`jukebox-pl encode-shards`: encode, then print a short summary."""
    import sys

    start = time.time()
    _read_source(Path(args.shards))  # fail on a wrong folder before loading any weights
    vqvae, ckpts = _load_for_cli(args)
    levels = [s.strip() for s in args.levels.split(",") if s.strip()] if args.levels else None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    manifest = encode_shards(
        args.shards, args.out, vqvae, levels, device=device, checkpoints=ckpts,
        progress=not args.no_progress and sys.stderr.isatty(), log=print,
    )  # fmt: skip
    c = manifest["counts"]
    hops = ", ".join(f"{manifest['level_names'][i]} (hop {h})" for i, h in manifest["levels"].items())
    print(
        f"encoded {c['tracks']['train']} train + {c['tracks']['val']} val tracks "
        f"({manifest['hours']['total']:.3f} h, {c['skipped']} skipped) at levels {hops} "
        f"in {time.time() - start:.1f} s -> {args.out}"
    )
    for item in manifest["skipped"][:20]:
        print(f"  skipped {item['shard']}:{item['key']}: {item['reason']}")
    return 0
