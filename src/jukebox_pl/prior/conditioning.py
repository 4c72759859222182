"""One interface for everything a prior is conditioned on.

A conditioner declares the batch keys it reads (`batch_keys`), the per-track values a DataModule must copy
into batches for it (`track_fields`, read from the track JSON that `prep` writes: metadata columns land under
`extra`), and returns its `Contribution` to a window: a start-token embedding, per-position embeddings,
cross-attention keys/values, or prefix tokens. The prior, its LightningModule, the DataModules and the sampler
all iterate over the configured conditioners, so adding one (a tempo, a key, a mood) is one new class plus
config:

    prior:
      top:
        conditioners:
          tempo: {target: my_project.tempo.TempoConditioner, column: extra.bpm}

The class is built as `target(width=<prior width>, n_ctx=<prior n_ctx>, **the other keys)`.

Importing a module runs its code, so a target is imported only when this invocation allowed it: named on the
command line (`prior.top.conditioners=...`, `jukebox_pl.config.load_config` overrides), passed to
`--allow-conditioner`, or to `allow_conditioners(...)` by a library user. A target named only by a file (a
downloaded checkpoint's hyper-parameters, a run's saved config) resolves when its module is already imported
(nothing new runs) or lives in jukebox_pl, and is refused otherwise, naming the key, the target and the file.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from jukebox_pl.config.conditioner_targets import (  # noqa: F401 - allow_conditioners & co. are public here too
    _normal,
    allow_conditioners,
    check_file_conditioners,
    conditioner_allowed,
    named_targets,
    refusal,
)
from jukebox_pl.errors import UnsafeFileError, UserValueError


@dataclass
class Window:
    """What a conditioner may need to know about the window being modelled."""

    n: int  # rows in the batch
    n_ctx: int  # tokens of this level in the window
    sample_length: int  # audio samples the window spans
    width: int  # the prior's width
    loss: bool = False  # training/validation forward (conditioners may add their own loss)


@dataclass
class Contribution:
    """A conditioner's part of a window's conditioning; every field is optional and summed or placed by the prior."""

    start: torch.Tensor | None = None  # (B, 1, width): added to the start token
    tokens: torch.Tensor | None = None  # (B, n_ctx, width): added to every position's embedding
    encoder_kv: torch.Tensor | None = None  # (B, L, width): keys/values of the cross-attention layers
    prefix: torch.Tensor | None = None  # (B, L) token ids placed before the codes (merged lyrics)
    aux_bits: torch.Tensor | None = None  # the conditioner's own next-token loss in bits (lyrics LM)


class Conditioner(nn.Module):
    """Base class: subclasses set `batch_keys` and implement `contribute`.

    `flat = True` registers the conditioner's children directly on the prior (so its weights keep the
    reference's key names, e.g. `prime_prior.*`) instead of under `extra_conditioners.<name>`.
    """

    batch_keys: tuple[str, ...] = ()
    flat: bool = False
    #: what the batch keys are, for error messages ("the codes of the level above", ...)
    describes: str = ""

    @classmethod
    def track_fields(cls, **kwargs: Any) -> dict[str, dict]:
        """Batch key -> {"path": dotted key in the track JSON, "default": value or None, "dtype": "float"|"long"}
        for values the DataModules must copy from each track (built-in keys are produced by the pipelines)."""
        return {}

    def contribute(self, inputs: dict[str, torch.Tensor], window: Window) -> Contribution:
        raise NotImplementedError

    def check_inputs(self, inputs: dict[str, torch.Tensor], what: str) -> None:
        missing = [k for k in self.batch_keys if inputs.get(k) is None]
        if missing:
            about = self.describes or type(self).__name__
            raise UserValueError(f"{what} is conditioned on {about}: pass {', '.join(missing)}")


def resolve_target(target: str, key: str = "conditioners.<name>.target", source: str = "a config") -> type[Conditioner]:
    """`package.module.ClassName` (or `package.module:ClassName`) -> the Conditioner subclass; a module is
    imported only when `conditioner_allowed` (see the module's docstring), else UnsafeFileError."""
    module, _, name = _normal(target).rpartition(".")
    if not conditioner_allowed(target):
        raise UnsafeFileError(refusal(target, key, source))
    try:
        cls = getattr(sys.modules.get(module) or importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserValueError(f"conditioner target {target!r} cannot be imported: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, Conditioner)):
        raise UserValueError(f"conditioner target {target!r} is not a jukebox_pl Conditioner subclass")
    return cls


def split_spec(name: str, spec: dict, source: str = "a config", at: str = "") -> tuple[type[Conditioner], dict]:
    """A config entry {target: ..., **kwargs} -> (class, kwargs); `at` (`prior.top`) and `source` name where the
    entry came from in messages."""
    spec = dict(spec)
    if "target" not in spec:
        raise UserValueError(f"conditioner {name!r} needs a `target` (a Conditioner class path); got {sorted(spec)}")
    key = f"{at}.conditioners.{name}.target" if at else f"conditioners.{name}.target"
    return resolve_target(spec.pop("target"), key, source), spec


def extra_track_fields(specs: dict[str, dict], at: str = "prior.<level>") -> dict[str, dict]:
    """Every track field the configured extra conditioners read (for the DataModules); `at` names the section
    in messages."""
    fields: dict[str, dict] = {}
    for name, spec in (specs or {}).items():
        cls, kwargs = split_spec(name, spec, at=at)
        fields |= cls.track_fields(**kwargs)
    return fields
