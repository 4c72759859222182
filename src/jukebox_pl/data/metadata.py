"""Per-track metadata (artist, genres, lyrics) from a CSV or JSONL file keyed by path relative to --src.

Nothing here stops a run: malformed rows, missing lyric files and unknown columns are collected as problems
for the manifest, and the track falls back to the "unknown" labels.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from jukebox_pl.errors import MissingInputError, UserValueError

KNOWN_FIELDS = ("path", "artist", "genre", "genres", "lyrics")
PATH_ALIASES = ("path", "file", "filename", "relpath")
_GENRE_SPLIT = re.compile(r"[;|,]")


@dataclass
class TrackMeta:
    artist: str = "unknown"
    genres: list[str] = field(default_factory=lambda: ["unknown"])
    lyrics: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Metadata:
    """Rows keyed by normalised relative path, plus everything that was wrong with the file."""

    source: str | None = None
    rows: dict[str, TrackMeta] = field(default_factory=dict)
    unknown_fields: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def get(self, rel_path: str) -> TrackMeta | None:
        return self.rows.get(normalize_rel_path(rel_path))


def normalize_rel_path(path: str) -> str:
    """Compare paths as POSIX, without leading './', so CSVs written on any OS match."""
    text = str(path).strip().replace("\\", "/")
    return str(PurePosixPath(text)).lstrip("/") if text else ""


def split_genres(value) -> list[str]:
    items = value if isinstance(value, list) else _GENRE_SPLIT.split(str(value or ""))
    genres = [str(g).strip() for g in items if str(g).strip()]
    return genres or ["unknown"]


def _read_lyrics(value: str, meta_dir: Path, src_dir: Path | None, where: str, problems: list[str]) -> str:
    value = value or ""
    if "\n" in value or not value.strip().lower().endswith(".txt"):
        return value
    for base in (meta_dir, src_dir):
        if base is not None and (base / value.strip()).is_file():
            return (base / value.strip()).read_text(encoding="utf-8", errors="replace")
    problems.append(f"{where}: lyrics file {value.strip()!r} not found next to the metadata or under --src")
    return ""


def _rows(path: Path, problems: list[str]):
    """Yield (line label, dict) for each row of a CSV or JSONL file."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    problems.append(f"{path.name}:{n}: not valid JSON ({err.msg}); row ignored")
                    continue
                if not isinstance(row, dict):
                    problems.append(f"{path.name}:{n}: expected a JSON object; row ignored")
                    continue
                yield f"{path.name}:{n}", row
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                if None in row:  # more cells than header columns
                    problems.append(f"{path.name}:{n}: more cells than columns; extra cells ignored")
                    row.pop(None)
                yield f"{path.name}:{n}", row


def load_metadata(path: str | Path | None, src_dir: str | Path | None = None) -> Metadata:
    """Parse a metadata file; `None` gives empty metadata (every track is artist/genre 'unknown')."""
    if path is None:
        return Metadata()
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"metadata file {path} does not exist")
    if path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson", ".json"):
        raise UserValueError(f"metadata file {path} must be .csv or .jsonl, got {path.suffix!r}")
    meta = Metadata(source=str(path))
    src = Path(src_dir) if src_dir is not None else None
    unknown: set[str] = set()
    for where, row in _rows(path, meta.problems):
        key_field = next((k for k in PATH_ALIASES if row.get(k)), None)
        if key_field is None:
            meta.problems.append(f"{where}: no 'path' value; row ignored")
            continue
        rel = normalize_rel_path(row[key_field])
        genre_value = row.get("genres") or row.get("genre")
        extra = {k: v for k, v in row.items() if k not in KNOWN_FIELDS and k not in PATH_ALIASES}
        unknown.update(extra)
        if rel in meta.rows:
            meta.problems.append(f"{where}: {rel!r} listed twice; the later row wins")
        meta.rows[rel] = TrackMeta(
            artist=str(row.get("artist") or "unknown").strip() or "unknown",
            genres=split_genres(genre_value),
            lyrics=_read_lyrics(str(row.get("lyrics") or ""), path.parent, src, where, meta.problems),
            extra=extra,
        )
    meta.unknown_fields = sorted(unknown)
    return meta
