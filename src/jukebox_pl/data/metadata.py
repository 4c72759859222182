"""Per-track metadata (artist, genres, lyrics) from a CSV or JSONL file keyed by path relative to --src.

Nothing here stops a run: malformed rows and cells, over-long values, missing lyric files and unknown columns
are collected as problems for the manifest, each naming the column and starting `file:line (row N)`: the line
on which the row starts, and for CSV its row as a spreadsheet numbers it (the header is row 1; the two differ
once a cell spans lines). A bad cell is left out and the rest of its row is used (an artist left out becomes
"unknown"; a row with too few cells gets empty ones, extra cells are ignored); a row is dropped only when its
path is unusable or the row itself cannot be parsed (longer than MAX_ROW_CHARS, or broken CSV).

Lyric files named in the metadata are read only when they resolve, symlinks followed, inside --src or inside
the metadata file's own folder, and only up to MAX_LYRICS_BYTES; anything else is reported and ignored.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from jukebox_pl.data.safe_paths import is_inside, os_reason, read_capped, resolve_link
from jukebox_pl.errors import UserValueError
from jukebox_pl.user_files import check_input_file

MAX_LYRICS_BYTES = 64 * 1024
"""Lyrics of one track, inline or from a file, in UTF-8 bytes. The longest real songs have well under 20 KB
of text; more is a mistake (a whole book, a binary file) and would be stored with the track and tokenised on
every crop."""
MAX_NAME_CHARS = 256
"""artist, genre(s), title, album: longer is not a name, and artist and genre cells become vocabulary entries."""
MAX_EXTRA_CHARS = 1024
"""Any other column: kept under 'extra' in every track's JSON, so it stays small."""
MAX_PATH_CHARS = 4096
"""The path column: PATH_MAX on Linux; no real file has a longer path."""
MAX_ROW_CHARS = 4 * 1024 * 1024
"""One row of a metadata file: bounds the memory a single row may take. It is far above the column limits, so
an over-long cell (Python's csv module alone refuses cells over 128 Ki characters) is reported by itself and
the rest of its row is still used; a row beyond this is dropped whole."""

KNOWN_FIELDS = ("path", "artist", "genre", "genres", "lyrics", "split")
SPLIT_VALUES = ("train", "val")
"""A `split` cell pins a track to a split (whole songs held out by name); an empty cell leaves it to the hash."""
PATH_ALIASES = ("path", "file", "filename", "relpath")
NAME_FIELDS = ("artist", "genre", "genres", "title", "album")
_GENRE_SPLIT = re.compile(r"[;|,]")


@dataclass
class TrackMeta:
    artist: str = "unknown"
    genres: list[str] = field(default_factory=lambda: ["unknown"])
    lyrics: str = ""
    extra: dict = field(default_factory=dict)
    split: str | None = None  # "train" / "val" when the metadata pins it, else the prep's hash split decides


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


def _limit(column: str) -> tuple[int, str]:
    """The most one value of a column may hold, and the unit it is measured in."""
    if column in PATH_ALIASES:
        return MAX_PATH_CHARS, "character"
    if column == "lyrics":
        return MAX_LYRICS_BYTES, "byte"
    if column in NAME_FIELDS:
        return MAX_NAME_CHARS, "character"
    return MAX_EXTRA_CHARS, "character"


def _text_problem(text: str, limit: int, unit: str = "character") -> str:
    """What is wrong with a piece of text from the file ("" when nothing): bad bytes, NUL bytes, too long."""
    try:
        raw = text.encode("utf-8")  # undecodable input bytes were kept as lone surrogates, which cannot encode
    except UnicodeEncodeError:
        return "holds bytes that are not valid UTF-8"
    if "\0" in text:
        return "contains NUL bytes"
    size = len(raw) if unit == "byte" else len(text)
    return f"is {size} {unit}s long, over the {limit}-{unit} limit" if size > limit else ""


def _value_problem(column: str, value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _text_problem(text, *_limit(column))


def _column_name_problem(name) -> str:
    return _text_problem(name, MAX_NAME_CHARS) if isinstance(name, str) else "is not text"


def _clean_row(row: dict, where: str, problems: list[str]) -> dict:
    """The row without the cells that are malformed or over their column's limit, each one reported."""
    clean = {}
    for column, value in row.items():
        problem = _column_name_problem(column)
        if problem:
            problems.append(f"{where}: a column name {problem} (it starts {str(column)[:40]!r}); its value is ignored")
            continue
        problem = "" if value is None else _value_problem(column, value)
        if problem:
            problems.append(f"{where}: column {column!r} {problem}; value ignored")
            continue
        clean[column] = value
    return clean


def _shown(text: str, limit: int = 200) -> str:
    """A value quoted for a problem message, cut short: the message must stay one readable line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _read_lyrics(value: str, meta_dir: Path, src_dir: Path | None, where: str, problems: list[str]) -> str:
    """Inline lyrics as they are; a one-line `.txt` value names a lyrics file next to the metadata or under
    --src, read only when it resolves (symlinks followed) inside one of those two folders."""
    value = value or ""
    if "\n" in value or not value.strip().lower().endswith(".txt"):
        return value
    name = value.strip()
    if "\0" in name:
        problems.append(f"{where}: lyrics path contains NUL bytes; ignored")
        return ""
    bases = [b for b in (meta_dir, src_dir) if b is not None]
    roots = [Path(os.path.realpath(b)) for b in bases]
    escaped = False
    for base in bases:
        candidate = base / name  # an absolute name stays absolute
        if not os.path.lexists(candidate):
            continue
        target, reason = resolve_link(candidate)
        if target is None:
            problems.append(f"{where}: lyrics path {_shown(name)} cannot be used: {reason}")
            return ""
        if not is_inside(target, roots):
            escaped = True
            continue
        return _read_lyrics_file(target, name, where, problems)
    if escaped:
        problems.append(f"{where}: lyrics path {_shown(name)} escapes --src and the metadata file's folder; ignored")
    else:
        problems.append(f"{where}: lyrics file {_shown(name)} not found next to the metadata or under --src")
    return ""


def _read_lyrics_file(target: Path, name: str, where: str, problems: list[str]) -> str:
    """A lyrics file's text, refusing files over MAX_LYRICS_BYTES (checked before reading) and binary files."""
    data, reason = read_capped(target, MAX_LYRICS_BYTES)
    if data is None:
        problems.append(f"{where}: lyrics file {_shown(name)} {reason}; ignored")
        return ""
    if b"\0" in data:
        problems.append(f"{where}: lyrics file {_shown(name)} contains NUL bytes (not a text file); ignored")
        return ""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.append(f"{where}: lyrics file {_shown(name)} is not valid UTF-8; the undecodable bytes were replaced")
        return data.decode("utf-8-sig", errors="replace")


class _RowTooLong(Exception):
    """A row over MAX_ROW_CHARS: it was read through in blocks, never held whole, and is dropped."""


class _Lines:
    """The lines of an open metadata file for a parser, holding at most MAX_ROW_CHARS of any one row.

    It numbers lines for the problem messages and counts the quote characters of the current row, so that
    after a broken CSV row the rest of that row can be skipped: in valid CSV a row ends at the first line end
    after an even number of quotes (a quote inside a quoted cell is written twice)."""

    def __init__(self, fh):
        self.fh = fh
        self.number = 0
        self.new_row()

    def new_row(self) -> None:
        self.quotes = self.chars = 0
        self.first = self.number + 1

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        text = self.fh.readline(MAX_ROW_CHARS + 1)
        if not text:
            raise StopIteration
        self.number += 1
        self.quotes += text.count('"')
        self.chars += len(text)
        if self.chars > MAX_ROW_CHARS:
            self._read_through(text)
            raise _RowTooLong
        return text

    def _read_through(self, text: str) -> None:
        """Consume the rest of an over-long line in blocks, counting its quotes."""
        while text and not text.endswith(("\n", "\r")):
            text = self.fh.readline(1 << 16)
            self.quotes += text.count('"')

    def skip_row(self) -> None:
        """After a broken row, consume the lines still inside it (while its quotes are unbalanced)."""
        while self.quotes % 2:
            self.chars = 0  # skipped lines are not kept, so they need no bound
            try:
                next(self)
            except StopIteration:
                return
            except _RowTooLong:
                continue


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Raise the csv module's (process-wide) cell limit while one file is parsed; our own limits apply after."""
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv_header(cells: list[str], where: str, problems: list[str]) -> list[str | None]:
    """Column names, None for a name that cannot be used (its cells are then ignored)."""
    header: list[str | None] = []
    for i, name in enumerate(cells, 1):
        problem = _column_name_problem(name)
        if problem:
            problems.append(f"{where}: header column {i} {problem}; that column is ignored")
        elif name in header:
            problems.append(f"{where}: column {name!r} appears twice; the later one wins")
        header.append(None if problem else name)
    return header


def _csv_cells(header: list[str | None], cells: list[str], where: str, problems: list[str]) -> dict:
    if len(cells) != len(header):
        fix = "the extra cells are ignored" if len(cells) > len(header) else "the missing cells are left empty"
        problems.append(f"{where}: {len(cells)} cells but the header has {len(header)} columns; {fix}")
    return {name: cell for name, cell in zip(header, cells) if name is not None}


def _csv_rows(path: Path, fh, problems: list[str]) -> Iterator[tuple[str, dict]]:
    """Yield (where, row) for each CSV/TSV row; a row that cannot be parsed is reported and skipped."""
    lines = _Lines(fh)
    reader = csv.reader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    header, row = None, 0
    while True:
        lines.new_row()
        row += 1
        where = f"{path.name}:{lines.first} (row {row})"
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (_RowTooLong, csv.Error) as err:
            lines.skip_row()
            too_long = isinstance(err, _RowTooLong)
            what = f"is longer than {MAX_ROW_CHARS} characters" if too_long else f"is not valid CSV ({err})"
            if header is None:
                problems.append(f"{where}: the header row {what}; the file is ignored")
                return
            problems.append(f"{where}: the row {what}; row ignored")
            continue
        if header is None:
            header = _csv_header(cells, where, problems)
        elif cells:
            yield where, _csv_cells(header, cells, where, problems)


def _jsonl_rows(path: Path, fh, problems: list[str]) -> Iterator[tuple[str, dict]]:
    """Yield (where, row) for each JSON object line; any other line is reported and skipped."""
    lines = _Lines(fh)
    while True:
        lines.new_row()
        where = f"{path.name}:{lines.first}"
        try:
            text = next(lines)
        except StopIteration:
            return
        except _RowTooLong:
            problems.append(f"{where}: line is longer than {MAX_ROW_CHARS} characters; row ignored")
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg}); row ignored")
            continue
        except RecursionError:
            problems.append(f"{where}: JSON nested too deeply; row ignored")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object; row ignored")
            continue
        yield where, row


def _rows(path: Path, fh, problems: list[str]) -> Iterator[tuple[str, dict]]:
    """Yield (where, row) for each row of a CSV, TSV or JSONL file."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _jsonl_rows(path, fh, problems)
    return _csv_rows(path, fh, problems)


def _add_row(meta: Metadata, row: dict, where: str, meta_dir: Path, src: Path | None, unknown: set[str]) -> None:
    """Turn one parsed row into a TrackMeta, leaving out (and reporting) every value that cannot be used."""
    row = _clean_row(row, where, meta.problems)
    key_field = next((k for k in PATH_ALIASES if row.get(k)), None)
    if key_field is None:
        meta.problems.append(f"{where}: no 'path' value; row ignored")
        return
    rel = normalize_rel_path(row[key_field])
    genre_value = row.get("genres") or row.get("genre")
    extra = {k: v for k, v in row.items() if k not in KNOWN_FIELDS and k not in PATH_ALIASES}
    unknown.update(extra)
    if rel in meta.rows:
        meta.problems.append(f"{where}: {rel!r} listed twice; the later row wins")
    split = str(row.get("split") or "").strip().lower() or None
    if split is not None and split not in SPLIT_VALUES:
        meta.problems.append(
            f"{where}: column 'split': {_shown(str(row['split']))} is not one of {', '.join(SPLIT_VALUES)}; "
            "the track's split is left to --val-fraction"
        )
        split = None
    meta.rows[rel] = TrackMeta(
        artist=str(row.get("artist") or "unknown").strip() or "unknown",
        genres=split_genres(genre_value),
        lyrics=_read_lyrics(str(row.get("lyrics") or ""), meta_dir, src, where, meta.problems),
        extra=extra,
        split=split,
    )


def load_metadata(path: str | Path | None, src_dir: str | Path | None = None) -> Metadata:
    """Parse a metadata file; `None` gives empty metadata (every track is artist/genre 'unknown').

    Only a metadata file that is missing, of an unknown kind or unreadable as a whole stops the run (the user
    asked for its labels); everything inside it is checked value by value (see the module docstring).
    Undecodable bytes are kept as lone surrogates while parsing so that they can be reported by cell."""
    if path is None:
        return Metadata()
    path = check_input_file(path, "metadata file")  # missing, a folder, a FIFO or device: one line
    if path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson", ".json"):
        raise UserValueError(f"metadata file {path} must be .csv or .jsonl, got {path.suffix!r}")
    meta = Metadata(source=str(path))
    src = Path(src_dir) if src_dir is not None else None
    unknown: set[str] = set()
    try:
        with (
            path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh,
            _csv_field_limit(MAX_ROW_CHARS + 1),
        ):
            for where, row in _rows(path, fh, meta.problems):
                _add_row(meta, row, where, path.parent, src, unknown)
    except OSError as err:
        raise UserValueError(f"metadata file {path} cannot be read ({os_reason(err)})") from None
    meta.unknown_fields = sorted(unknown)
    return meta
