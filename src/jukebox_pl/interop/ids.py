"""The reference's artist and genre id tables (`jukebox/data/ids/{v2,v3}_{artist,genre}_ids.txt`) as a
`LabelVocab`, so that names given to a released prior become the ids it was trained with.

The tables are not shipped (the reference's license is non-commercial): users point at their own copy. Each
line is `name;id`; the reference strips the line, splits it at ';' and lower-cases the name, and so do we;
several names may share an id (id 0 = unknown). v2 tables (the 5B models) are keyed by the reference's `norm`
with genres as a bag of words; v3 (the 1B model) by lower-cased names with one id per genre string.
"""

from __future__ import annotations

from pathlib import Path

from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.errors import MissingInputError, UserValueError

VERSIONS = ("v2", "v3")


def _id_or_none(text: str) -> int | None:
    try:
        idx = int(text)
    except ValueError:
        return None
    return idx if idx >= 0 else None


def read_id_table(path: Path) -> dict[str, int]:
    """One `name;id` table -> {lower-cased name: id}; blank lines are skipped, a malformed one is named by file
    and line (the reference would stop on it with a bare unpacking error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingInputError(
            f"{path} does not exist: point at a folder holding the reference's id tables "
            f"(jukebox/data/ids/ of the openai/jukebox repository)"
        ) from None
    except UnicodeDecodeError as err:
        raise UserValueError(f"{path} is not UTF-8 text: {err}") from None
    table: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        parts = stripped.split(";")
        idx = _id_or_none(parts[1]) if len(parts) == 2 else None
        if idx is None:
            raise UserValueError(f"{path}:{number}: expected 'name;id' with an id >= 0, got {line!r}")
        table[parts[0].lower()] = idx
    if not table:
        raise UserValueError(f"{path} holds no 'name;id' lines")
    return table


def read_reference_ids(folder: str | Path, version: str = "v2") -> LabelVocab:
    """`{version}_artist_ids.txt` and `{version}_genre_ids.txt` of `folder` -> a LabelVocab of style
    "openai-v2" or "openai-v3"."""
    if version not in VERSIONS:
        raise UserValueError(f"unknown id table version {version!r}; choose one of {', '.join(VERSIONS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"{folder} is not a folder (expected the reference's jukebox/data/ids/)")
    artists = read_id_table(folder / f"{version}_artist_ids.txt")
    genres = read_id_table(folder / f"{version}_genre_ids.txt")
    return LabelVocab(artists=artists, genres=genres, style=f"openai-{version}")
