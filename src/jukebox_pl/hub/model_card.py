"""The model card (`README.md`) of a folder in the Hub layout: YAML front matter the Hub indexes (licence,
library, tags) and what a user needs before trusting a model: its configuration, its vocabulary, the data it
was trained on, its size and how to load it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from jukebox_pl.errors import UserValueError

LIBRARY = "jukebox-pl"
TAGS = ["jukebox-pl", "jukebox", "music-generation", "audio", "pytorch-lightning"]
DEFAULT_LICENSE = "other"  # the licence of trained weights depends on their data: unknown unless the user says
MAX_NAMES = 200  # vocabulary names listed in a card before "and N more"


@dataclass
class CardFacts:
    """What a card says about one model or a whole run."""

    title: str
    load: str  # Python that loads it
    parameters: dict[str, int]  # part -> parameter count
    config: dict[str, Any]
    license: str = DEFAULT_LICENSE
    tags: list[str] = field(default_factory=list)
    vocab: Mapping[str, Any] | None = None  # LabelVocab.to_dict() form
    data: Mapping[str, Any] | None = None  # training data summary (see `data_summary`)
    pairing: Mapping[str, Any] | None = None  # the VQ-VAE fingerprint a prior learned


LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")


def check_license(license: str) -> str:
    """A licence as the Hub writes it (`apache-2.0`, `cc-by-nc-4.0`, `mit`, `other`), or one line saying so."""
    if not isinstance(license, str) or not LICENSE_ID.match(license):
        raise UserValueError(
            f"--license {license!r} is not a licence identifier; use the Hub's form such as apache-2.0, mit, "
            "cc-by-nc-4.0, or other"
        )
    return license


def _names(table: Mapping[str, int] | None) -> str:
    names = sorted(table or {}, key=lambda name: (table[name], name))
    shown = ", ".join(f"`{name}`" for name in names[:MAX_NAMES])
    more = f" and {len(names) - MAX_NAMES} more (all in config.json)" if len(names) > MAX_NAMES else ""
    return (shown + more) or "none"


def _data_lines(data: Mapping[str, Any] | None) -> list[str]:
    if not data:
        return ["Not recorded with these weights."]
    labels = {
        "shards": "Shard folder", "tracks": "Tracks", "hours": "Hours of audio", "sample_rate": "Sample rate (Hz)",
        "source": "Source folder", "created": "Prepared",
    }  # fmt: skip
    lines = [f"- {labels.get(key, key)}: {value}" for key, value in data.items() if value not in (None, "", {})]
    return lines or ["Not recorded with these weights."]


def render_card(facts: CardFacts) -> ModelCard:
    """The card of `facts` as a huggingface_hub ModelCard (front matter + markdown)."""
    data = ModelCardData(license=check_license(facts.license), library_name=LIBRARY, tags=sorted({*TAGS, *facts.tags}))
    total = sum(facts.parameters.values())
    rows = "\n".join(f"| {part} | {count:,} |" for part, count in facts.parameters.items())
    vocab = facts.vocab or {}
    parts = [
        f"---\n{data.to_yaml()}\n---",
        f"# {facts.title}",
        "Trained with jukebox-pl, a PyTorch Lightning re-implementation of [OpenAI's Jukebox]"
        "(https://github.com/openai/jukebox). The weights are `model.safetensors` (tensors only: loading them runs "
        "no code).",
        f"**Licence:** `{facts.license}`" + (" (not stated by its exporter)" if facts.license == "other" else ""),
        f"## How to load\n\n```python\n{facts.load}\n```",
        f"## Parameters\n\n{total:,} in all.\n\n| part | parameters |\n|---|---|\n{rows}",
        "## Vocabulary\n\n"
        + (f"Artists: {_names(vocab.get('artists'))}\n\nGenres: {_names(vocab.get('genres'))}" if vocab else
           "No label vocabulary (this model reads no artist or genre labels, or none was recorded)."),
        "## Training data\n\n" + "\n".join(_data_lines(facts.data)),
    ]  # fmt: skip
    if facts.pairing:
        parts.append(
            "## VQ-VAE pairing\n\nThis prior learned the codes of the VQ-VAE with these codebooks; sampling "
            f"refuses another one:\n\n```json\n{json.dumps(facts.pairing, indent=2)}\n```"
        )
    parts.append(f"## Configuration\n\n```json\n{json.dumps(facts.config, indent=2, default=str)}\n```")
    return ModelCard("\n\n".join(parts) + "\n")


def data_summary(config: Mapping[str, Any] | None, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training data of a run in a few facts: from its config's `data` section and, when the shard folder
    is at hand, its `manifest.json` (tracks, hours, when and from where it was prepared)."""
    data = dict((config or {}).get("data") or {})
    out: dict[str, Any] = {"shards": data.get("shards"), "sample_rate": data.get("sample_rate")}
    if manifest:
        counts = manifest.get("counts") or {}
        tracks = counts.get("tracks") if isinstance(counts, Mapping) else None
        hours = manifest.get("hours") or {}
        out["tracks"] = sum(v for v in tracks.values() if isinstance(v, int)) if isinstance(tracks, Mapping) else None
        out["hours"] = hours.get("total") if isinstance(hours, Mapping) else None
        out["sample_rate"] = manifest.get("sample_rate", out["sample_rate"])
        out["created"] = manifest.get("created")
    return {key: value for key, value in out.items() if value is not None}
