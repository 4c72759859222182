"""Sampling a song level by level, window by window, with everything needed to stop and resume.

The top prior writes the whole song in overlapping windows (each conditioned on the codes already written in
its first part, with the timing labels and the lyric window moved to its offset); then each upsampler does the
same at its own level, conditioned on the codes of the level above. The state after every window is the codes
so far and the random generator's state, so a resumed run gives exactly the result of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from jukebox_pl.errors import UserValueError
from jukebox_pl.lyrics import lyric_window
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.sampling.windows import next_window


def genre_slots(genres: list[list[int]], max_genres: int) -> torch.Tensor:
    """Per-sample genre ids -> (n, slots) padded with -1 (empty slots, masked by the label conditioner), as the
    reference's labels hold them: `max_genres` slots, and more ids than that are refused as the reference
    refuses them (0 = no limit known: as many slots as the longest list)."""
    longest = max((len(g) for g in genres), default=0)
    if max_genres and longest > max_genres:
        raise UserValueError(f"a sample has {longest} genre ids; this prior reads at most {max_genres}")
    width = max(max_genres or longest, 1)
    return torch.tensor([list(g) + [-1] * (width - len(g)) for g in genres], dtype=torch.long)


@dataclass
class SongSpec:
    """What to sample: one entry per sample in `artists`, `genres` and `lyrics` (lyric character ids)."""

    artists: list[int]
    genres: list[list[int]]
    lyrics: list[list[int]]
    total_samples: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    # level index -> fraction of n_ctx between window starts (reference: 0.125 top, 0.5 upsamplers)
    hop_fractions: dict[int, float] = field(default_factory=dict)
    seed: int = 0
    max_batch: int = 16
    chunk_size: int | None = None  # prompt tokens primed per pass (None: the whole prompt in one)
    # values of extra conditioners' batch keys (e.g. {"tempo": [120.0, 90.0]}): one per sample, or one for all
    labels: dict[str, list[float]] = field(default_factory=dict)
    # classifier-free guidance: level index -> scale (levels not named sample without), and the inputs the
    # null-conditioned rows drop (empty: every input the level's prior learned to do without)
    cfg_scales: dict[int, float] = field(default_factory=dict)
    cfg_inputs: list[str] = field(default_factory=list)
    # level index -> {"artists": [...], "genres": [[...]]} for a level whose prior has its own label ids
    level_labels: dict[int, dict] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return len(self.artists)

    def to_dict(self) -> dict:
        return asdict(self)


class SongSampler:
    """Runs the windows of the requested levels (top first); `state()` / `restore()` make it resumable."""

    def __init__(
        self,
        models: SamplingModels,
        spec: SongSpec,
        levels: list[int],
        codes: dict[int, torch.Tensor] | None = None,
        on_window: Callable[[SongSampler], None] | None = None,
        on_tokens: Callable[[int, int], None] | None = None,
        decode: str = "auto",
    ):
        """`decode`: how the priors take their per-token steps (`prior.decoding`); it changes the speed, not
        what is sampled, so it is not part of the (resumable) spec."""
        self.models, self.spec, self.decode = models, spec, decode
        self.levels = sorted(levels, reverse=True)
        top = models.n_levels - 1
        hop_top = models.vqvae.hop_length(top) if top in models.vqvae.available() else None
        if hop_top and spec.total_samples % hop_top:
            raise UserValueError(f"total_samples {spec.total_samples} must be a multiple of the top hop {hop_top}")
        n = spec.n_samples
        self.codes = {i: torch.zeros(n, 0, dtype=torch.long) for i in self.levels}
        for level, c in (codes or {}).items():
            self.codes[level] = c.long().clone()
        device = next(models.priors[self.levels[0]].parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(spec.seed)
        self.on_window, self.on_tokens = on_window, on_tokens
        self.windows_done = 0

    # -- shapes -------------------------------------------------------------------------------------------
    def hop(self, level: int) -> int:
        return self.models.priors[level].hop_length

    def total_tokens(self, level: int) -> int:
        return self.spec.total_samples // self.hop(level)

    def hop_fraction(self, level: int) -> float:
        default = 0.125 if level == self.models.n_levels - 1 else 0.5
        return self.spec.hop_fractions.get(level, default)

    def align(self, level: int) -> int:
        prior = self.models.priors[level]
        return 1 if prior.is_top else prior.upsample_ratio

    def remaining_tokens(self, level: int) -> int:
        return max(0, self.total_tokens(level) - self.codes[level].shape[1])

    def planned_tokens(self) -> dict[int, int]:
        """Tokens still to sample per level (all samples), following the window plan from the current state."""
        plan = {}
        for level in self.levels:
            prior, filled, todo = self.models.priors[level], self.codes[level].shape[1], 0
            total = self.total_tokens(level)
            while (
                w := next_window(total, filled, prior.n_ctx, self.hop_fraction(level), self.align(level))
            ) is not None:
                todo, filled = todo + w[1] - filled, w[1]
            plan[level] = todo * self.spec.n_samples
        return plan

    # -- state --------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "codes": {int(k): v.clone() for k, v in self.codes.items()},
            "generator": self.generator.get_state(),
            "windows_done": self.windows_done,
            "spec": self.spec.to_dict(),
            "levels": self.levels,
        }

    def restore(self, state: dict) -> None:
        if state["spec"] != self.spec.to_dict() or list(state["levels"]) != self.levels:
            raise UserValueError("the saved sampling state was made with other settings; start a new output folder")
        self.codes = {int(k): v.clone() for k, v in state["codes"].items()}
        self.generator.set_state(state["generator"])
        self.windows_done = state["windows_done"]

    # -- sampling -----------------------------------------------------------------------------------------
    def run(self) -> dict[int, torch.Tensor]:
        for level in self.levels:
            prior = self.models.priors[level]
            if not prior.is_top and level + 1 not in self.codes:
                raise UserValueError(f"the {self.models.name(level)} upsampler needs the codes of the level above")
            while (window := self._next(level)) is not None:
                self._window(level, *window)
                self.windows_done += 1
                if self.on_window is not None:
                    self.on_window(self)
        return self.codes

    def _next(self, level: int) -> tuple[int, int] | None:
        prior = self.models.priors[level]
        filled = self.codes[level].shape[1]
        return next_window(self.total_tokens(level), filled, prior.n_ctx, self.hop_fraction(level), self.align(level))

    def _labels(self, level: int, start: int, rows: slice) -> dict:
        """The window's value of every batch key the prior's conditioners read."""
        prior, spec = self.models.priors[level], self.spec
        n = len(spec.artists[rows])
        offset = start * self.hop(level)
        out: dict = {}
        own = spec.level_labels.get(level, {})
        artists, genres = own.get("artists", spec.artists), own.get("genres", spec.genres)
        for key in prior.batch_keys:
            if key == "artist":
                out[key] = torch.tensor(artists[rows], dtype=torch.long)
            elif key == "genres":
                out[key] = genre_slots(genres[rows], getattr(getattr(prior, "y_emb", None), "max_genres", 0))
            elif key == "total_length":
                out[key] = torch.full((n,), spec.total_samples, dtype=torch.long)
            elif key == "offset":
                out[key] = torch.full((n,), offset, dtype=torch.long)
            elif key == "lyrics":  # float32: the reference's sampling-time arithmetic (see lyric_window)
                windows = [
                    lyric_window(np.asarray(t, dtype=np.int64), prior.n_tokens, spec.total_samples, offset,
                                 prior.sample_length, float32=True)[0]
                    for t in spec.lyrics[rows]
                ]  # fmt: skip
                out[key] = torch.from_numpy(np.stack(windows))
            elif key == "upper_codes":
                r = prior.upsample_ratio
                upper = self.codes[level + 1][rows, start // r : start // r + prior.upper_length]
                out[key] = F.pad(upper, (0, prior.upper_length - upper.shape[1]))
            else:
                out[key] = self._extra_label(key, rows, n)
        return out

    def _extra_label(self, key: str, rows: slice, n: int) -> torch.Tensor:
        """An extra conditioner's value from `SongSpec.labels`: one per sample, or one shared by all."""
        if key not in self.spec.labels:
            raise UserValueError(
                f"a prior of this run is conditioned on {key!r} (an extra conditioner): give its value "
                f"(`--label {key}=VALUE`; known: {sorted(self.spec.labels) or 'none given'})"
            )
        values = list(self.spec.labels[key])
        values = values * self.spec.n_samples if len(values) == 1 else values
        if len(values) != self.spec.n_samples:
            raise UserValueError(f"label {key!r} has {len(values)} values for {self.spec.n_samples} samples")
        return torch.tensor(values[rows], dtype=torch.float32)

    @torch.no_grad()
    def _window(self, level: int, start: int, end: int) -> None:
        prior, spec = self.models.priors[level], self.spec
        device = next(prior.parameters()).device
        known = self.codes[level]
        new_rows = []
        for first in range(0, spec.n_samples, spec.max_batch):
            rows = slice(first, min(first + spec.max_batch, spec.n_samples))
            labels = {k: v.to(device) for k, v in self._labels(level, start, rows).items()}
            n = rows.stop - rows.start
            scale = spec.cfg_scales.get(level, 1.0)
            cond = prior.guided_condition(n, scale, prior.guidable(spec.cfg_inputs), **labels)
            prompt = known[rows, start:].to(device)
            done = prompt.shape[1]
            counter = (lambda _k, lv=level, m=n: self.on_tokens(lv, m)) if self.on_tokens else None  # noqa: E731
            window = prior.sample(
                cond, n, prompt=prompt if done else None, length=end - start, temperature=spec.temperature,
                top_k=spec.top_k, top_p=spec.top_p, chunk_size=spec.chunk_size, generator=self.generator,
                on_token=counter, decode=self.decode, cfg_scale=scale,
            )  # fmt: skip
            new_rows.append(window.cpu())
        self.codes[level] = torch.cat([known[:, :start], torch.cat(new_rows)], dim=1)
