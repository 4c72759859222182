"""Artist and genre vocabularies: name <-> id, id 0 = unknown, stable ids when a vocabulary is extended.

Stable ids matter for fine-tuning: a pretrained prior's label embeddings are indexed by these ids, so a new
artist must get a new id appended at the end rather than shifting everyone else's.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jukebox_pl.errors import MissingInputError, UserKeyError, UserValueError
from jukebox_pl.text import normalize_label

UNKNOWN = "unknown"


class UnknownLabelError(UserKeyError):
    """An artist or genre name that is not in the vocabulary; the message lists close and known names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass
class LabelVocab:
    artists: dict[str, int] = field(default_factory=lambda: {UNKNOWN: 0})
    genres: dict[str, int] = field(default_factory=lambda: {UNKNOWN: 0})

    @staticmethod
    def _add(table: dict[str, int], name: str) -> int:
        key = normalize_label(name) or UNKNOWN
        if key not in table:
            table[key] = max(table.values(), default=-1) + 1
        return table[key]

    def add_artist(self, name: str) -> int:
        return self._add(self.artists, name)

    def add_genre(self, name: str) -> int:
        return self._add(self.genres, name)

    def extend(self, artists: Iterable[str] = (), genres: Iterable[str] = ()) -> LabelVocab:
        """Add names in sorted order (deterministic ids); existing ids never change."""
        for name in sorted({normalize_label(a) for a in artists} - {""}):
            self.add_artist(name)
        for name in sorted({normalize_label(g) for g in genres} - {""}):
            self.add_genre(name)
        return self

    @staticmethod
    def _lookup(table: dict[str, int], name: str, kind: str, strict: bool) -> int:
        key = normalize_label(name)
        if key in table:
            return table[key]
        if not strict:
            return 0
        close = difflib.get_close_matches(key, list(table), n=5, cutoff=0.5)
        known = sorted(table)
        listing = ", ".join(known[:50]) + (f", ... ({len(known)} in all)" if len(known) > 50 else "")
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownLabelError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {listing}")

    def artist_id(self, name: str, strict: bool = True) -> int:
        return self._lookup(self.artists, name, "artist", strict)

    def genre_id(self, name: str, strict: bool = True) -> int:
        return self._lookup(self.genres, name, "genre", strict)

    @property
    def n_artists(self) -> int:
        return max(self.artists.values()) + 1

    @property
    def n_genres(self) -> int:
        return max(self.genres.values()) + 1

    def artist_name(self, idx: int) -> str:
        return {v: k for k, v in self.artists.items()}.get(int(idx), UNKNOWN)

    def genre_name(self, idx: int) -> str:
        return {v: k for k, v in self.genres.items()}.get(int(idx), UNKNOWN)

    def to_dict(self) -> dict:
        return {"artists": self.artists, "genres": self.genres}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            vocab = cls(artists=dict(raw["artists"]), genres=dict(raw["genres"]))
        except FileNotFoundError:
            raise MissingInputError(f"vocabulary file {path} does not exist") from None
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise UserValueError(
                f"{path} is not a jukebox-pl vocab.json (needs 'artists' and 'genres'): {err}"
            ) from None
        for kind, table in (("artists", vocab.artists), ("genres", vocab.genres)):
            if table.get(UNKNOWN) != 0:
                raise UserValueError(f"{path}: {kind} must map {UNKNOWN!r} to id 0")
            if len(set(table.values())) != len(table):
                raise UserValueError(f"{path}: {kind} has two names with the same id")
        return vocab
