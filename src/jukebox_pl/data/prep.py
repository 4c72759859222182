"""`jukebox-pl prep`: turn a folder of music into WebDataset shards, a vocabulary and an honest manifest.

Each shard member is one whole track (FLAC at the target rate, channels kept, plus JSON metadata), so any
stage can cut crops of any length from the same shards. Bad files never stop a run: they are skipped and
listed with the reason. Shards are written under a temporary name and renamed when complete, and a state
file lets an interrupted run resume without mixing in a different run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import webdataset as wds

from jukebox_pl.audio import (
    AUDIO_EXTENSIONS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    UNSUPPORTED_AUDIO_EXTENSIONS,
    AudioDecodeError,
    audio_info,
    encode_audio,
    level_dbfs,
    limit_channels,
    read_audio,
    resample,
)
from jukebox_pl.data.metadata import Metadata, TrackMeta, load_metadata
from jukebox_pl.data.resumable_folder import resume_state, write_json_atomic
from jukebox_pl.data.safe_paths import walk_source
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.errors import DiskFullError, MissingInputError, RefusedError, UserValueError, is_disk_full
from jukebox_pl.user_files import check_input_file

STATE_FILE = ".prep_state.json"
MANIFEST_FILE = "manifest.json"
VOCAB_FILE = "vocab.json"
SPLITS = ("train", "val")
STATE_VERSION = 1


class PrepRefused(RefusedError):
    """OUT holds something this run must not touch (another run's shards); the message says what to do."""


@dataclass
class PrepOptions:
    """What `prepare_shards` (`jukebox-pl prep`) does: the audio under `src` (with labels from the `metadata` CSV)
    resampled to `sr` Hz and stored as `bits`-bit PCM in WebDataset shards under `out` (at most `shard_mb` MB or
    `shard_tracks` tracks each), `val_fraction` of the tracks (seeded by `seed`) held out for validation. Tracks
    shorter than `min_seconds` or longer than `max_seconds`, or whose RMS level is under `silence_db` dBFS, are
    skipped; `base_vocab` (a vocab.json) keeps a pretrained model's label ids."""

    src: str
    out: str
    metadata: str | None = None
    sr: int = 44100
    val_fraction: float = 0.05
    min_seconds: float = 1.0
    max_seconds: float | None = None
    silence_db: float = -60.0
    bits: int = 16
    shard_mb: float = 512.0
    shard_tracks: int = 500
    base_vocab: str | None = None
    seed: int = 0
    workers: int = 1
    overwrite: bool = False

    def fingerprint(self) -> dict:
        """What defines the dataset; a resume must match it exactly (workers and overwrite do not count)."""
        fp = {k: v for k, v in asdict(self).items() if k not in ("workers", "overwrite", "out")}
        fp["src"] = str(Path(self.src).resolve())
        fp["metadata"] = _file_digest(self.metadata, "--metadata file")
        fp["base_vocab"] = _file_digest(self.base_vocab, "--base-vocab file")
        return fp


def _file_digest(path: str | None, what: str) -> str | None:
    if not path:
        return None
    check_input_file(path, what)  # a FIFO would block the digest for ever, a folder would be a traceback
    h = hashlib.sha1()
    with open(path, "rb") as fh:  # in blocks: a metadata file may be large
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"{Path(path).resolve()}#sha1:{h.hexdigest()[:16]}"


@dataclass
class SourceListing:
    audio: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    other: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # paths the walk could not use, with the reason

    def digest(self) -> str:
        h = hashlib.sha1()
        for rel in self.audio:
            h.update(f"{rel}\0{self.sizes[rel]}\n".encode())
        return h.hexdigest()


def _audio_kind(name: str) -> str | None:
    ext = Path(name).suffix.lower()
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    return "unsupported" if ext in UNSUPPORTED_AUDIO_EXTENSIONS else None


def discover(src: str | Path, exclude: Path | None = None) -> SourceListing:
    """Walk `src` recursively (sorted, so runs are deterministic) and sort files by what we can read.

    Nothing here stops the walk: broken symlinks, symlink loops, links leading out of `src`, folders that
    cannot be listed and audio files that cannot be opened land in `skipped` with the reason, which prep
    reports like a corrupt file. Symlinks inside `src` (to files or folders) are followed once, never twice
    to the same track; see `jukebox_pl.data.safe_paths` for the whole policy. Hidden folders are not walked.
    """
    src = Path(src)
    if not src.is_dir():
        raise MissingInputError(f"--src {src} is not a folder")
    walk = walk_source(
        src,
        wanted=lambda name: _audio_kind(name) is not None,
        probe=lambda rel: _audio_kind(rel) == "audio",
        exclude=exclude,
    )
    if walk.root_error:  # nothing to prep: a user error, not a skip
        raise UserValueError(f"--src {src} cannot be read ({walk.root_error})")
    listing = SourceListing(other=walk.other, skipped=walk.skipped)
    for rel, size in walk.files:
        if _audio_kind(rel) == "audio":
            listing.audio.append(rel)
            listing.sizes[rel] = size
        else:
            listing.unsupported.append(rel)
    return listing


def _hash_fraction(rel: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{rel}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(paths: Iterable[str], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """Deterministic train/val split by track, stable when files are added (a hash of the path, not order).

    With two or more tracks and val_fraction > 0 at least one track goes to validation.
    """
    paths = list(paths)
    fractions = {p: _hash_fraction(p, seed) for p in paths}
    splits = {p: "val" if f < val_fraction else "train" for p, f in fractions.items()}
    if val_fraction > 0 and len(paths) >= 2 and "val" not in splits.values():
        splits[min(fractions, key=fractions.get)] = "val"
    return splits


def track_key(rel: str) -> str:
    """A WebDataset key: no dots (they separate the extension), unique through a short hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", rel.rsplit(".", 1)[0]).strip("_")[-80:]
    return f"{stem}_{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


@dataclass
class TrackResult:
    rel: str
    ok: bool
    reason: str = ""
    flac: bytes = b""
    frames: int = 0
    channels: int = 0
    source_sr: int = 0
    peak_db: float = 0.0


def load_track(
    src: str, rel: str, sr: int, bits: int, min_seconds: float, max_seconds: float | None, silence_db: float
) -> TrackResult:
    """Decode, check and re-encode one file (runs in a worker process). The header is checked first, so a
    damaged one (a rate of 1 Hz, hours of frames) is skipped before anything is decoded or resampled."""
    path = Path(src, rel)
    try:
        info = audio_info(path)
        if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
            return TrackResult(
                rel, False, f"sample rate {info.sample_rate} Hz out of range [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
            )
        if max_seconds is not None and info.seconds > max_seconds:
            return TrackResult(rel, False, f"too long: {info.seconds:.1f} s > --max-seconds {max_seconds:g}")
        audio, source_sr = read_audio(path)
    except AudioDecodeError as err:
        reason = str(err).split(": ", 1)[-1]
        if "does not exist" in reason and path.is_file():  # libsndfile's words for unknown data
            reason = "unrecognised or corrupt audio data"
        return TrackResult(rel, False, f"cannot decode as audio ({reason})")
    except MemoryError:
        return TrackResult(rel, False, "too large to decode in memory")
    if audio.shape[1] == 0:
        return TrackResult(rel, False, "empty: 0 samples")
    seconds = audio.shape[1] / source_sr
    if seconds < min_seconds:
        return TrackResult(rel, False, f"too short: {seconds:.2f} s < --min-seconds {min_seconds:g}")
    if max_seconds is not None and seconds > max_seconds:
        return TrackResult(rel, False, f"too long: {seconds:.1f} s > --max-seconds {max_seconds:g}")
    if not np.all(np.isfinite(audio)):
        return TrackResult(rel, False, "contains NaN or infinite samples")
    peak_db, rms_db = level_dbfs(audio)
    if rms_db < silence_db:
        return TrackResult(rel, False, f"silent: RMS {rms_db:.1f} dBFS < {silence_db:g} dBFS")
    try:
        audio = resample(limit_channels(audio), source_sr, sr, name=rel)
    except AudioDecodeError as err:  # the resampled track would not fit in memory
        return TrackResult(rel, False, f"too large to resample ({str(err).split(': ', 1)[-1]})")
    except MemoryError:
        return TrackResult(rel, False, "too large to resample in memory")
    subtype = {16: "PCM_16", 24: "PCM_24"}[bits]
    flac = encode_audio(audio, sr, "FLAC", subtype)
    return TrackResult(
        rel,
        True,
        flac=flac,
        frames=audio.shape[1],
        channels=audio.shape[0],
        source_sr=source_sr,
        peak_db=round(peak_db, 2),
    )


def _ordered_map(fn: Callable, jobs: list[tuple], workers: int) -> Iterator:
    """Map in order with at most 2*workers jobs in flight, so memory stays bounded on huge folders."""
    if workers <= 1:
        for job in jobs:
            yield fn(*job)
        return
    pool: Executor = ProcessPoolExecutor(max_workers=workers)
    try:
        pending: deque[Future] = deque()
        it = iter(jobs)
        for job in it:
            pending.append(pool.submit(fn, *job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


class ShardSink:
    """One split's ShardWriter; shards are `.tar.tmp` while open and renamed to `.tar` when complete."""

    def __init__(
        self,
        out: Path,
        split: str,
        start: int,
        max_tracks: int,
        max_bytes: float,
        on_commit: Callable[[str, list[dict]], None],
    ):
        self.out, self.split, self.on_commit = out, split, on_commit
        self.pending: list[dict] = []
        self.writer: wds.ShardWriter | None = None
        self.args = dict(
            pattern=str(out / f"{split}-%06d.tar.tmp"),
            maxcount=max_tracks,
            maxsize=max_bytes,
            post=self._finish,
            start_shard=start,
            verbose=0,
            mtime=0.0,
        )

    def _finish(self, tmp_name: str) -> None:
        tmp = Path(tmp_name)
        if not self.pending:
            tmp.unlink(missing_ok=True)
            return
        final = tmp.with_name(tmp.name.removesuffix(".tmp"))
        os.replace(tmp, final)
        records, self.pending = self.pending, []
        for r in records:
            r["shard"] = final.name
        self.on_commit(final.name, records)

    def write(self, sample: dict, record: dict) -> None:
        if self.writer is None:
            self.writer = wds.ShardWriter(**self.args)
        self.writer.write(sample)  # may close (and commit) the previous shard first
        self.pending.append(record)

    def abort(self) -> None:
        """Close the open shard without committing it: it stays `.tmp` and a resume rewrites it."""
        if self.writer is not None and self.writer.tarstream is not None:
            self.writer.tarstream.close()
            self.writer.tarstream = None
        self.writer = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _check_out_dir(opts: PrepOptions, out: Path, fingerprint: dict, files_digest: str, n_files: int) -> dict | None:
    """Return the state to resume from, None for a fresh start, or raise PrepRefused."""
    if opts.overwrite and out.exists():
        for p in list(out.glob("*.tar")) + list(out.glob("*.tar.tmp")):
            p.unlink()
        for name in (STATE_FILE, MANIFEST_FILE, VOCAB_FILE):
            (out / name).unlink(missing_ok=True)
        return None
    state = resume_state(
        out, STATE_FILE, command="prep", key="options", fingerprint=fingerprint, version=STATE_VERSION,
        refused=PrepRefused, contents="shards of a different prep run",
        empty_hint="choose an empty folder, or pass --overwrite to delete its shards and start again",
        restart="use a new --out, or --overwrite to replace them",
    )  # fmt: skip
    if state is None:
        return None
    if state.get("files_digest") != files_digest:
        before = state.get("n_files")
        raise PrepRefused(
            f"the files under --src changed since {out} was started ({before} audio files then, {n_files} now); "
            "shards of two different source folders are never mixed: use a new --out, or --overwrite"
        )
    return state


def prepare_shards(opts: PrepOptions, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a prep and return the manifest."""
    src, out = Path(opts.src), Path(opts.out)
    if opts.bits not in (16, 24):
        raise UserValueError(f"--bits must be 16 or 24, got {opts.bits}")
    if not 0.0 <= opts.val_fraction < 1.0:
        raise UserValueError(f"--val-fraction must be in [0, 1), got {opts.val_fraction}")
    if not MIN_SAMPLE_RATE <= opts.sr <= MAX_SAMPLE_RATE:
        raise UserValueError(f"--sr {opts.sr} Hz is out of range: must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz")
    if out.exists() and not out.is_dir():
        raise PrepRefused(f"--out {out} is an existing file, not a folder; name a new or empty folder for the shards")
    base_vocab = LabelVocab.load(opts.base_vocab) if opts.base_vocab else LabelVocab()  # before any work
    exclude = out.resolve() if out.resolve().is_relative_to(src.resolve()) else None
    listing = discover(src, exclude=exclude)
    metadata = load_metadata(opts.metadata, src)
    fingerprint = opts.fingerprint()
    state = _check_out_dir(opts, out, fingerprint, listing.digest(), len(listing.audio))
    out.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = {
            "version": STATE_VERSION,
            "options": fingerprint,
            "files_digest": listing.digest(),
            "n_files": len(listing.audio),
            "shards": {},
            "tracks": {},
            "skipped": {},
            "complete": False,
        }
    for tmp in out.glob("*.tar.tmp"):  # a shard that was being written when the last run stopped
        tmp.unlink()
    if state["complete"]:
        log(f"{out} is already complete; nothing to do")
        return json.loads((out / MANIFEST_FILE).read_text())

    vocab = base_vocab
    vocab.extend(
        artists=[m.artist for m in metadata.rows.values()],
        genres=[g for m in metadata.rows.values() for g in m.genres],
    )
    vocab.save(out / VOCAB_FILE)
    splits = assign_splits(listing.audio, opts.val_fraction, opts.seed)
    splits.update({rel: m.split for rel, m in metadata.rows.items() if m.split and rel in splits})
    todo = [rel for rel in listing.audio if rel not in state["tracks"] and rel not in state["skipped"]]
    if len(todo) < len(listing.audio):
        log(f"resuming {out}: {len(listing.audio) - len(todo)} of {len(listing.audio)} files already done")
    state_path = out / STATE_FILE

    def commit(shard: str, records: list[dict]) -> None:
        state["shards"][shard] = [r["path"] for r in records]
        for r in records:
            state["tracks"][r["path"]] = r
        write_json_atomic(state_path, state)

    next_index = {
        s: 1 + max((int(n.split("-")[1].split(".")[0]) for n in state["shards"] if n.startswith(s)), default=-1)
        for s in SPLITS
    }
    sinks = {s: ShardSink(out, s, next_index[s], opts.shard_tracks, opts.shard_mb * 1e6, commit) for s in SPLITS}
    write_json_atomic(state_path, state)
    jobs = [(str(src), rel, opts.sr, opts.bits, opts.min_seconds, opts.max_seconds, opts.silence_db) for rel in todo]
    try:
        with _progress(progress, len(todo)) as advance:
            for result in _ordered_map(load_track, jobs, opts.workers):
                if not result.ok:
                    state["skipped"][result.rel] = result.reason
                    advance(0.0)
                    continue
                meta = metadata.get(result.rel) or TrackMeta()
                sample, record = _make_sample(result, meta, vocab, opts.sr, splits[result.rel], metadata)
                sinks[record["split"]].write(sample, record)
                advance(result.frames / opts.sr / 3600)
    except BaseException as err:
        for sink in sinks.values():
            sink.abort()
        if is_disk_full(err):
            with contextlib.suppress(OSError):  # the state of the committed shards is already on disk
                write_json_atomic(state_path, state)
            raise DiskFullError(
                f"no space left on the disk while writing shards to {out} ({err.strerror}); the "
                f"{len(state['shards'])} complete shard(s) are kept: free space and run the same command again "
                "to resume"
            ) from None
        write_json_atomic(state_path, state)  # keep the skips found so far
        raise
    for sink in sinks.values():
        sink.close()
    state["skipped"].update(listing.skipped)
    for rel in listing.unsupported:
        state["skipped"][rel] = f"unsupported format {Path(rel).suffix} (libsndfile cannot read it; convert to FLAC)"
    manifest = build_manifest(opts, listing, metadata, vocab, state)
    write_json_atomic(out / MANIFEST_FILE, manifest)
    state["complete"] = True
    write_json_atomic(state_path, state)
    return manifest


def _make_sample(
    result: TrackResult, meta: TrackMeta, vocab: LabelVocab, sr: int, split: str, metadata: Metadata
) -> tuple[dict, dict]:
    key = track_key(result.rel)
    info = {
        "key": key,
        "source": result.rel,
        "artist": meta.artist,
        "artist_id": vocab.artist_id(meta.artist, strict=False),
        "genres": meta.genres,
        "genre_ids": [i for g in meta.genres for i in vocab.genre_ids(g, strict=False)],
        "lyrics": meta.lyrics,
        "sample_rate": sr,
        "samples": result.frames,
        "duration": result.frames / sr,
        "channels": result.channels,
        "source_sample_rate": result.source_sr,
        "peak_dbfs": result.peak_db,
        "has_metadata": metadata.get(result.rel) is not None,
        "extra": meta.extra,
    }
    record = {
        "path": result.rel,
        "key": key,
        "split": split,
        "seconds": round(result.frames / sr, 3),
        "samples": result.frames,
        "artist": meta.artist,
        "genres": meta.genres,
    }
    return {"__key__": key, "flac": result.flac, "json": info}, record


def build_manifest(
    opts: PrepOptions, listing: SourceListing, metadata: Metadata, vocab: LabelVocab, state: dict
) -> dict:
    tracks = sorted(state["tracks"].values(), key=lambda r: r["path"])
    hours = {s: round(sum(t["seconds"] for t in tracks if t["split"] == s) / 3600, 4) for s in SPLITS}
    shards = {s: sorted(n for n in state["shards"] if n.startswith(s + "-")) for s in SPLITS}
    matched = [t for t in tracks if metadata.get(t["path"]) is not None]
    audio_set = set(listing.audio)
    problems = list(metadata.problems)
    if metadata.unknown_fields:
        problems.append(
            f"metadata fields not used for labels (kept under 'extra'): {', '.join(metadata.unknown_fields)}"
        )
    if tracks and not any(t["split"] == "val" for t in tracks) and opts.val_fraction > 0:
        problems.append("no track ended up in the validation split")
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(Path(opts.src).resolve()),
        "sample_rate": opts.sr,
        "options": {k: v for k, v in asdict(opts).items() if k not in ("overwrite",)},
        "counts": {
            "audio_files_found": len(listing.audio),
            "unsupported_audio_files": len(listing.unsupported),
            "other_files_ignored": listing.other,
            "tracks": {s: sum(t["split"] == s for t in tracks) for s in SPLITS},
            "skipped": len(state["skipped"]),
            "shards": {s: len(shards[s]) for s in SPLITS},
        },
        "hours": {**hours, "total": round(sum(hours.values()), 4)},
        "shards": shards,
        "skipped": [{"path": p, "reason": r} for p, r in sorted(state["skipped"].items())],
        "metadata": {
            "file": metadata.source,
            "rows": len(metadata.rows),
            "tracks_with_metadata": len(matched),
            "tracks_without_metadata": len(tracks) - len(matched),
            "rows_without_audio": sorted(r for r in metadata.rows if r not in audio_set),
            "unknown_fields": metadata.unknown_fields,
            "problems": problems,
        },
        "vocab": {"file": VOCAB_FILE, "artists": vocab.n_artists, "genres": vocab.n_genres},
        "tracks": tracks,
    }


class _progress:
    """A rich progress bar over files with the hours of audio written so far (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.hours = enabled, total, 0.0

    def __enter__(self) -> Callable[[float], None]:
        if not self.enabled:
            return lambda hours: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("prep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            TextColumn("{task.fields[hours]:.2f} h audio"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("prep", total=self.total, hours=0.0)

        def advance(hours: float) -> None:
            self.hours += hours
            self.bar.update(self.task, advance=1, hours=self.hours)

        return advance

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
