"""A model folder in the Hub layout, found locally or fetched by Hub id, and its `config.json` read as data.

A Hub id (`owner/name`) is fetched with `huggingface_hub.snapshot_download` (only the JSON, safetensors and card
files: nothing else a repository holds is downloaded) and then read exactly like a local folder, so the checks
below are the same whichever way a folder arrived.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jukebox_pl.config.conditioner_targets import check_file_conditioners
from jukebox_pl.config.loader import ConfigError
from jukebox_pl.errors import JukeboxError, MissingInputError, UserValueError
from jukebox_pl.hub.weights import FORMAT, atomic_write
from jukebox_pl.user_files import read_input_text

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
MAX_CONFIG_BYTES = 16 << 20  # a config.json with a large vocabulary is a few MB
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
FETCHED = ["*.json", "*.safetensors", "*.md", "*/*.json", "*/*.safetensors", "*/*.md"]


def resolve_folder(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The local folder of a model: `name_or_path` itself when it is a folder, else the snapshot of the Hub
    repository it names (fetched or found in the cache). A missing path or an unreachable id is one line."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists():
        raise UserValueError(f"{text} is a file; name the folder that holds {CONFIG_NAME} (or a Hub id owner/name)")
    if not HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise MissingInputError(f"{text} does not exist: name a folder in the Hub layout or a Hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        fetched = snapshot_download(
            repo_id=text, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token, allow_patterns=FETCHED,
        )  # fmt: skip
        return Path(fetched)
    except JukeboxError:
        raise
    except Exception as err:  # no network, no such repository, no access: the user's situation, named
        reason = next(iter(str(err).splitlines()), "") or type(err).__name__
        raise MissingInputError(
            f"{text} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(err).__name__}: {reason}); check the id, your network and your token (HF_TOKEN)"
        ) from None


def read_config(path: str | Path, kinds: Iterable[str]) -> dict[str, Any]:
    """A `config.json` written by jukebox-pl, as plain data: valid JSON, an object of one of `kinds`, naming no
    conditioner this invocation did not allow (refused before any model is built)."""
    path = Path(path)
    text = read_input_text(path, "config", MAX_CONFIG_BYTES)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds a JSON {type(config).__name__}, not an object of settings")
    if config.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: format={config.get('format')!r} is not {FORMAT!r}; it was not written by jukebox-pl's "
            "save_pretrained (export it again with `jukebox-pl export --format hub`)"
        )
    kinds = tuple(kinds)
    if config.get("kind") not in kinds:
        raise ConfigError(f"{path}: kind={config.get('kind')!r}; expected {' or '.join(map(repr, kinds))}")
    check_file_conditioners(config, f"config {path}")
    return config


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], path: str | Path) -> None:
    """Refuse a key this format does not have (one line naming it and those it has)."""
    allowed = set(allowed) | {"format", "kind"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; the keys of this file are {', '.join(sorted(allowed))}")


def config_int(config: Mapping[str, Any], key: str, path: str | Path, low: int, high: int) -> int:
    """An integer setting of a config.json within [low, high], or one line naming the key and the value."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{path}: {key}={value!r} must be an integer in [{low}, {high}]")
    return value


def config_pair(config: Mapping[str, Any], key: str, path: str | Path, high: int) -> tuple[int, int] | None:
    """A null or a pair of positive integers (at most `high`) of a config.json."""
    value = config.get(key)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2):
        raise ConfigError(f"{path}: {key}={value!r} must be null or two positive integers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= high:
            raise ConfigError(f"{path}: {key}={value!r} must be null or two integers in [1, {high}]")
    return int(value[0]), int(value[1])


def write_config(path: str | Path, kind: str, values: Mapping[str, Any]) -> Path:
    """Write a config.json (atomic): the format, the kind, then `values` (plain data)."""
    text = json.dumps({"format": FORMAT, "kind": kind, **values}, indent=2, sort_keys=False) + "\n"
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
