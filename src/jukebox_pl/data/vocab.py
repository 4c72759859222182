"""Artist and genre vocabularies: name <-> id, id 0 = unknown, stable ids when a vocabulary is extended.

Stable ids matter for fine-tuning: a pretrained prior's label embeddings are indexed by these ids, so a new
artist must get a new id appended at the end rather than shifting everyone else's.

A vocabulary has a `style`, which decides how a name becomes a table key and how a genre becomes ids:
- "jukebox-pl" (ours): ASCII-folded, lower case, single spaces; one id per genre; one name per id.
- "openai-v2" (the reference's 5B models, `jukebox/data/artist_genre_processor.py` with v3=False): keys by the
  reference's `norm` (lower case, non-alphanumerics -> '_'); a genre is a bag of words, one id per word, at
  most 5 words; several names may share an id.
- "openai-v3" (the reference's 1B model): keys are the names lower-cased, nothing else; one id per whole genre
  string, at most one genre; several names may share an id.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jukebox_pl.errors import UserKeyError, UserValueError
from jukebox_pl.text import normalize_label, reference_norm
from jukebox_pl.user_files import read_input_text

UNKNOWN = "unknown"
MAX_VOCAB_BYTES = 64 << 20  # the reference's tables (~10k artists) are well under 1 MB
STYLES = ("jukebox-pl", "openai-v2", "openai-v3")
# The reference's max_bow_genre_size: genre ids one label may hold (its Labeller asserts the count).
MAX_GENRES = {"jukebox-pl": None, "openai-v2": 5, "openai-v3": 1}


class UnknownLabelError(UserKeyError):
    """An artist or genre name that is not in the vocabulary; the message lists close and known names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def _check_style(style: str) -> str:
    if style not in STYLES:
        raise UserValueError(f"unknown label vocabulary style {style!r}; choose one of {', '.join(STYLES)}")
    return style


@dataclass
class LabelVocab:
    """Artist and genre names -> the integer ids a prior's label embeddings read (`unknown` is 0).

    `style` says how a name becomes a table key: `jukebox-pl` (normalised names, what `prep` writes to
    `vocab.json`), `openai-v2` (the reference's v2 tables: a genre is a bag of words, up to several ids) or
    `openai-v3`. Batches carry `artist` (N,) and `genres` (N, max_genres) ids, padded with -1."""

    artists: dict[str, int] = field(default_factory=lambda: {UNKNOWN: 0})
    genres: dict[str, int] = field(default_factory=lambda: {UNKNOWN: 0})
    style: str = "jukebox-pl"

    def __post_init__(self) -> None:
        _check_style(self.style)

    # -- how names become keys -------------------------------------------------------------------------
    def artist_key(self, name: str) -> str:
        """The table key of an artist name under this vocabulary's style."""
        if self.style == "openai-v2":
            return reference_norm(name)
        if self.style == "openai-v3":
            return name.lower()
        return normalize_label(name)

    def genre_keys(self, name: str) -> list[str]:
        """The table keys of one genre string: v2 splits it into words (its bag of words), the others keep it
        whole."""
        if self.style == "openai-v2":
            return reference_norm(name).split("_")
        if self.style == "openai-v3":
            return [name.lower()]
        return [normalize_label(name)]

    @property
    def max_genres(self) -> int | None:
        """Most genre ids one label may hold (the reference's max_bow_genre_size); None = no fixed limit."""
        return MAX_GENRES[self.style]

    # -- growing --------------------------------------------------------------------------------------
    @staticmethod
    def _add_key(table: dict[str, int], key: str) -> int:
        if key not in table:
            table[key] = max(table.values(), default=-1) + 1
        return table[key]

    def _blank_is_unknown(self, key: str) -> str:
        """jukebox-pl files a nameless label under `unknown`; the reference's tables may hold '' themselves."""
        if self.style == "jukebox-pl" and not key:
            return UNKNOWN
        return key

    def add_artist(self, name: str) -> int:
        return self._add_key(self.artists, self._blank_is_unknown(self.artist_key(name)))

    def add_genre(self, name: str) -> list[int]:
        """Add a genre's keys (one, or each word of a v2 bag) and return their ids."""
        return [self._add_key(self.genres, self._blank_is_unknown(k)) for k in self.genre_keys(name)]

    def extend(self, artists: Iterable[str] = (), genres: Iterable[str] = ()) -> LabelVocab:
        """Add names in sorted key order (deterministic ids); existing ids never change."""
        for key in sorted({self.artist_key(a) for a in artists} - {""}):
            self._add_key(self.artists, key)
        for key in sorted({k for g in genres for k in self.genre_keys(g)} - {""}):
            self._add_key(self.genres, key)
        return self

    # -- lookups ---------------------------------------------------------------------------------------
    @staticmethod
    def _lookup(table: dict[str, int], key: str, name: str, kind: str, strict: bool, of: str | None = None) -> int:
        """`key`'s id; unknown: 0, or (strict) an error naming `name` (and the whole genre `of` a v2 word)."""
        if key in table:
            return table[key]
        if not strict:
            return 0
        close = difflib.get_close_matches(key, list(table), n=5, cutoff=0.5)
        known = sorted(table)
        listing = ", ".join(known[:50]) + (f", ... ({len(known)} in all)" if len(known) > 50 else "")
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        said = repr(name) if key in (name, normalize_label(name)) else f"{name!r} (looked up as {key!r})"
        said += f" (a word of {of!r})" if of is not None else ""
        raise UnknownLabelError(f"unknown {kind} {said}.{hint} Known {kind}s: {listing}")

    def artist_id(self, name: str, strict: bool = True) -> int:
        """An artist's id; unknown names raise UnknownLabelError (strict) or give 0, the unknown id."""
        return self._lookup(self.artists, self.artist_key(name), name, "artist", strict)

    def genre_ids(self, name: str, strict: bool = True) -> list[int]:
        """A genre string's ids: one for jukebox-pl and openai-v3, one per word for openai-v2. Strict: unknown
        names or words raise (the reference maps them to 0 with a printed warning) and so does a bag of more
        words than the style's `max_genres` (the reference asserts); not strict: unknown ones give 0, as the
        reference's, and callers cut the list to their slots."""
        keys = self.genre_keys(name)
        if strict and self.max_genres is not None and len(keys) > self.max_genres:
            raise UserValueError(
                f"genre {name!r} is {len(keys)} words {keys}; {self.style} labels hold at most {self.max_genres}"
            )
        if len(keys) == 1:
            return [self._lookup(self.genres, keys[0], name, "genre", strict)]
        return [self._lookup(self.genres, k, k, "genre word", strict, of=name) for k in keys]

    def genre_id(self, name: str, strict: bool = True) -> int:
        """The id of a genre that is one table key; a v2 genre of several words needs `genre_ids`."""
        ids = self.genre_ids(name, strict)
        if len(ids) != 1:
            raise UserValueError(
                f"genre {name!r} is a bag of {len(ids)} words {self.genre_keys(name)}; use genre_ids for it"
            )
        return ids[0]

    @property
    def n_artists(self) -> int:
        return max(self.artists.values()) + 1

    @property
    def n_genres(self) -> int:
        return max(self.genres.values()) + 1

    @staticmethod
    def _first_name(table: dict[str, int], idx: int) -> str:
        return next((name for name, i in table.items() if i == int(idx)), UNKNOWN)

    def artist_name(self, idx: int) -> str:
        """The first name (in table order) with this id; `unknown` for an id no name has."""
        return self._first_name(self.artists, idx)

    def genre_name(self, idx: int) -> str:
        """The first genre key (in table order) with this id; `unknown` for an id no key has."""
        return self._first_name(self.genres, idx)

    # -- files ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"style": self.style, "artists": dict(self.artists), "genres": dict(self.genres)}

    @classmethod
    def from_dict(cls, raw: dict, where: str = "vocabulary") -> LabelVocab:
        """A vocabulary from `to_dict`'s form (a vocab.json, a checkpoint's hyperparameters); without a
        "style" key it is jukebox-pl's. Checks what lookups rely on."""
        try:
            style = _check_style(raw.get("style", "jukebox-pl"))
            vocab = cls(artists=dict(raw["artists"]), genres=dict(raw["genres"]), style=style)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise UserValueError(
                f"{where} is not a jukebox-pl vocab.json (needs 'artists' and 'genres', each a mapping of names "
                f"to ids): {type(err).__name__} {err}"
            ) from None
        for kind, table in (("artists", vocab.artists), ("genres", vocab.genres)):
            if not table or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in table.values()):
                raise UserValueError(f"{where}: {kind} must map names to ids >= 0 (and hold at least one)")
            odd = next((name for name in table if not isinstance(name, str)), None)
            if odd is not None:
                raise UserValueError(f"{where}: {kind} must map names (strings) to ids, not {odd!r}")
            if style != "jukebox-pl":
                continue  # the reference's tables: id 0 may have several names, or none named 'unknown'
            if table.get(UNKNOWN) != 0:
                raise UserValueError(f"{where}: {kind} must map {UNKNOWN!r} to id 0")
            if len(set(table.values())) != len(table):
                raise UserValueError(f"{where}: {kind} has two names with the same id")
        return vocab

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        path = Path(path)
        text = read_input_text(path, "vocabulary file", MAX_VOCAB_BYTES)  # missing, FIFO, huge: one line
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserValueError(f"{path} is not a jukebox-pl vocab.json: {err}") from None
        if not isinstance(raw, dict):
            raise UserValueError(f"{path} is not a jukebox-pl vocab.json (needs 'artists' and 'genres')")
        return cls.from_dict(raw, str(path))
