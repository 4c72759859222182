"""The label vocabulary of a prior fine-tuned from another (`train prior --init`): the base model's names keep
their ids, so their embedding rows carry over unchanged, and the new data's names are appended after them.

Matching is by name, never by index: shards prepared on their own number their artists from 1 in sorted order,
so copying rows by id would hand one artist another's embedding. The merged vocabulary is written beside the
stage and used as `data.vocab`, so the DataModule labels the new songs with the merged ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from jukebox_pl.data.prep import MANIFEST_FILE
from jukebox_pl.data.vocab import UNKNOWN, LabelVocab
from jukebox_pl.errors import UserValueError
from jukebox_pl.sampling.models import vocab_of

VOCAB_FILE = "vocab.json"


def shard_label_names(shards: str | Path) -> tuple[list[str], list[str]]:
    """Artist and genre names the tracks of a `prep` (or `encode-shards`) folder carry."""
    path = Path(shards) / MANIFEST_FILE
    if not path.is_file():
        return [], []
    tracks = json.loads(path.read_text()).get("tracks", [])
    artists = sorted({t.get("artist", UNKNOWN) for t in tracks} - {UNKNOWN})
    genres = sorted({g for t in tracks for g in t.get("genres", [])} - {UNKNOWN})
    return artists, genres


def merged_vocab(
    base: LabelVocab, artists: list[str], genres: list[str], rows: tuple[int, int] = (0, 0)
) -> tuple[LabelVocab, dict]:
    """The base vocabulary with the new names appended (ids of the base names unchanged), and what was added.
    New ids start after the base model's table `rows` (genres, artists) when those are longer than its
    vocabulary: the released models' tables have rows no name uses (4111 artist rows, highest id 4108)."""
    merged = LabelVocab.from_dict(base.to_dict())
    new_artists = [a for a in artists if base.artist_id(a, strict=False) == 0]
    new_genres = [g for g in genres if 0 in base.genre_ids(g, strict=False)]
    for table, count in ((merged.genres, rows[0]), (merged.artists, rows[1])):
        _reserve(table, count)
    merged.extend(new_artists, new_genres)
    for table in (merged.genres, merged.artists):
        table.pop(RESERVED, None)
    added = {"artists": {a: merged.artist_id(a) for a in new_artists},
             "genres": {g: merged.genre_ids(g) for g in new_genres}}  # fmt: skip
    return merged, added


RESERVED = "\x00reserved"  # a placeholder key holding the last unused row's id while new names are added


def _reserve(table: dict[str, int], rows: int) -> None:
    """Make the next id `rows` (or later) in a name -> id table."""
    if rows - 1 > max(table.values(), default=-1):
        table[RESERVED] = rows - 1


def table_rows(state: dict) -> tuple[int, int]:
    """(genre rows, artist rows) of a prior checkpoint's label tables (0 when it has none)."""
    rows = [0, 0]
    for key, value in state.items():
        if key.endswith("y_emb.bow_genre_emb.emb.weight"):
            rows[0] = max(rows[0], value.shape[0])
        elif key.endswith("y_emb.artist_emb.emb.weight"):
            rows[1] = max(rows[1], value.shape[0])
    return rows[0], rows[1]


def write_fine_tuning_vocab(
    base: dict, shards: str | Path, stage_dir: Path
) -> tuple[Path, dict, tuple[int, int]] | None:
    """Merge the base checkpoint's vocabulary (`base`: `load_any` of it) with the shards' names into
    `stage_dir/vocab.json`, and the label table sizes (genres, artists) the fine-tuned prior needs (the base's
    rows, grown by the new names); None when the base carries no vocabulary (then the shards must have been
    prepared with `prep --base-vocab`)."""
    vocab = vocab_of(base["hparams"])
    if vocab is None:
        return None
    rows = table_rows(base["state_dict"])
    merged, added = merged_vocab(vocab, *shard_label_names(shards), rows=rows)
    stage_dir.mkdir(parents=True, exist_ok=True)
    bins = (max(rows[0], merged.n_genres), max(rows[1], merged.n_artists))
    return merged.save(stage_dir / VOCAB_FILE), added, bins


def fine_tuning_labels(
    base: dict, shards: str | None, given_vocab: str | None, stage_dir: Path, level: str
) -> tuple[list[str], dict | None]:
    """The config overrides a fine-tuning run needs for its labels, and the names it adds: a vocabulary given
    as `data.vocab` is checked against the base's; otherwise the merged one is written and used."""
    if given_vocab:
        vocab = vocab_of(base["hparams"])
        if vocab is not None:
            check_agrees(vocab, LabelVocab.load(given_vocab), f"data.vocab={given_vocab}")
        return [], None
    merged = write_fine_tuning_vocab(base, shards, stage_dir) if shards else None
    if merged is None:
        return [], None
    path, added, (genres, artists) = merged  # the base's tables, grown (a released model's too)
    return [f"data.vocab={path.resolve()}", f"prior.{level}.y_bins=[{genres},{artists}]"], added


def rows_from_artist(base: dict, init: str | Path, artist: str | None) -> dict[str, int] | None:
    """`--init-artist`: the artist table row new artists start from (a similar, known artist's)."""
    if artist is None:
        return None
    vocab = vocab_of(base["hparams"])
    if vocab is None:
        raise UserValueError(f"--init-artist needs the names of {init}'s artists; it holds no vocabulary")
    return {"y_emb.artist_emb.emb.weight": vocab.artist_id(artist)}


def check_agrees(base: LabelVocab, given: LabelVocab, where: str) -> None:
    """A vocabulary given for fine-tuning (`data.vocab`) must give every name the base knows the base's id:
    otherwise those artists would silently train and sample another artist's row."""
    clashes = []
    for kind, ours, theirs in (("artist", base.artists, given.artists), ("genre", base.genres, given.genres)):
        for name, idx in theirs.items():
            if name in ours and ours[name] != idx:
                clashes.append(f"{kind} {name!r} is {idx} there, {ours[name]} in the base")
    if clashes:
        shown = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise UserValueError(
            f"{where} contradicts the base prior's labels: {shown}. Leave data.vocab unset (labels are then "
            "merged by name) or prepare the shards with `prep --base-vocab` of the base run's vocabulary"
        )
