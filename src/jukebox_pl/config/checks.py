"""What every numeric config key allows, in one table next to the schema.

The schema only checks types: a batch size of 0, a negative step count or a learning rate of `nan` merge fine and
then crash deep inside a run (a division by zero, an index error) or quietly do something else. `RULES` names,
for every numeric key, the values that work; `CROSS_RULES` the few that depend on other keys of the same section.
`problems` walks a resolved config (or one section of it) and yields each offending key with its value and what
is allowed; the loader turns the first into a one-line ConfigError.

Keys are dotted patterns: `*` stands for one segment (a prior level), so `prior.*.batch_size` covers the
`batch_size` of every level.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# seed_everything takes [0, 2**32 - 1] and the stages add small offsets per level; keep well inside it.
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Rule:
    """A set of allowed values: `allowed` says it in words (after "must be"), `accepts` tests a value."""

    allowed: str
    accepts: Callable[[Any], bool]


@dataclass(frozen=True)
class Problem:
    """A value outside its rule: the key relative to the checked tree, the value and what is allowed."""

    key: str
    value: Any
    allowed: str


def show(value: Any) -> str:
    """A value as the user wrote it in YAML (null, true, 'text', [1, 2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float (bools are not numbers here; nan and inf never make sense in a config)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int, high: int | None = None) -> Rule:
    """An integer >= low (and <= high)."""
    words = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return Rule(words, lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def number(low: float, high: float | None = None, above: bool = False, below: bool = False) -> Rule:
    """A finite number from low (excluded when `above`) up to high (excluded when `below`)."""
    if high is None:
        words = f"a finite number {'>' if above else '>='} {low:g}"
    else:
        words = f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"

    def accepts(v: Any) -> bool:
        if not _is_number(v) or v < low or (above and v == low):
            return False
        return high is None or v < high or (v == high and not below)

    return Rule(words, accepts)


def exactly(*values: Any) -> Rule:
    """One of a few literal values (`-1`, `null`), compared with their type (True is not 1)."""
    words = " or ".join(show(v) for v in values)
    return Rule(words, lambda v: any(v is x or (type(v) is type(x) and v == x) for x in values))


def any_of(*rules: Rule) -> Rule:
    """A value any of `rules` accepts."""
    return Rule(" or ".join(r.allowed for r in rules), lambda v: any(r.accepts(v) for r in rules))


def optional(rule: Rule) -> Rule:
    """null (the key's "unset") or what `rule` allows."""
    return any_of(exactly(None), rule)


def list_of(item: Rule, length: int | None = None) -> Rule:
    """A non-empty list (of exactly `length` items when given) whose every item `item` accepts."""
    words = f"a list of {length} items" if length else "a non-empty list"

    def accepts(v: Any) -> bool:
        if not isinstance(v, list | tuple) or len(v) != (length or len(v)) or not v:
            return False
        return all(item.accepts(x) for x in v)

    return Rule(f"{words}, each {item.allowed}", accepts)


def text() -> Rule:
    """Any string: Lightning parses its own device and interval strings (`'0,1'`, `'00:01:00:00'`)."""
    return Rule("a string", lambda v: isinstance(v, str))


POSITIVE = integer(1)
COUNT = integer(0)
STEPS = any_of(exactly(-1), integer(1))  # Lightning's -1 = no limit
WEIGHT = number(0)  # a loss weight or threshold: 0 switches it off
SCALE = number(0, above=True)  # a multiplier that must not vanish
FRACTION = number(0, 1)
DECAY = number(0, 1, below=True)  # an EMA decay or Adam beta: 1 would freeze the average
# The encoder's Conv1d(k=2s, stride s, padding s/2) keeps length/s exactly only for an even stride (an odd one
# loses a sample per layer and the decoder no longer matches).
EVEN_STRIDE = Rule("an even integer >= 2", lambda v: _is_int(v) and v >= 2 and v % 2 == 0)
# Lightning: an int counts batches, a float is a share of the epoch, a string is a wall-clock interval.
VAL_INTERVAL = Rule(
    "null, an integer >= 1 (batches), a number in (0, 1] (share of an epoch) or a time string 'DD:HH:MM:SS'",
    optional(any_of(integer(1), number(0, 1, above=True), text())).accepts,
)
BATCH_LIMIT = optional(any_of(integer(0), number(0, 1)))
DEVICES = Rule(
    "'auto' (or another Lightning device string), -1 (all), an integer >= 1 or a non-empty list of indices >= 0",
    any_of(text(), exactly(-1), integer(1), list_of(integer(0))).accepts,
)


# What Lightning's Trainer(precision=...) accepts (lightning.fabric.connector._PRECISION_INPUT), as strings;
# anything else fails only when the Trainer is built, after the data and models are set up.
PRECISIONS = (
    "64-true", "32-true", "16-mixed", "16-true", "bf16-mixed", "bf16-true", "transformer-engine",
    "transformer-engine-float16", "64", "32", "16", "bf16",
)  # fmt: skip
PRECISION = Rule(", ".join(repr(p) for p in PRECISIONS), lambda v: str(v) in PRECISIONS)


def _trainable(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"all|embeddings|top-layers:[1-9]\d*|lora:[1-9]\d*", v) is not None


def _optim(stage: str) -> dict[str, Rule]:
    """The optimiser keys of one stage (`vqvae`, `prior.*`)."""
    rules = {
        "lr": SCALE,
        "weight_decay": WEIGHT,
        "betas": list_of(DECAY, length=2),
        "eps": SCALE,
        "warmup_steps": COUNT,
        "decay_steps": COUNT,  # 0 = trainer.max_steps
        "min_lr_factor": FRACTION,
        "decay": exactly("none", "linear", "cosine"),
    }
    return {f"{stage}.optim.{key}": rule for key, rule in rules.items()}


RULES: dict[str, Rule] = {
    "seed": integer(0, MAX_SEED),
    "data.sample_rate": POSITIVE,
    "data.num_workers": COUNT,
    "data.open_tracks": POSITIVE,
    "data.shuffle_buffer": COUNT,  # 0 or 1 = off
    "data.epoch_length": POSITIVE,
    "data.val_crops_per_track": POSITIVE,
    "data.max_genres": POSITIVE,
    "data.min_track_seconds": WEIGHT,
    "data.max_skips_in_a_row": POSITIVE,
    "data.starve_seconds": SCALE,
    "data.skip_report_seconds": WEIGHT,  # 0 = a summary with every skip
    "trainer.devices": DEVICES,
    "trainer.num_nodes": POSITIVE,
    "trainer.max_steps": STEPS,
    "trainer.max_epochs": optional(STEPS),
    "trainer.accumulate_grad_batches": POSITIVE,
    "trainer.gradient_clip_val": optional(WEIGHT),
    "trainer.log_every_n_steps": COUNT,  # 0 = no logging (Lightning)
    "trainer.val_check_interval": VAL_INTERVAL,
    "trainer.check_val_every_n_epoch": optional(POSITIVE),
    "trainer.limit_train_batches": BATCH_LIMIT,
    "trainer.limit_val_batches": BATCH_LIMIT,
    "trainer.num_sanity_val_steps": integer(-1),  # -1 = the whole validation set
    "trainer.precision": PRECISION,
    "run.checkpoint_every_n_steps": POSITIVE,
    "run.keep_checkpoints": integer(-1),  # -1 keeps all, 0 only last.ckpt
    "run.log_audio_every_n_steps": COUNT,  # 0 = off
    "run.n_audio_examples": COUNT,
    "run.max_nonfinite_steps_in_a_row": POSITIVE,
    "run.max_update_ratio": WEIGHT,  # 0 = no update check
    "run.max_loss_jump": WEIGHT,  # 0 = off
    # three prior levels (bottom, middle, top) exist in the schema and on the command line
    "vqvae.levels": integer(1, 3),
    "vqvae.downs_t": list_of(POSITIVE),
    "vqvae.strides_t": list_of(EVEN_STRIDE),
    "vqvae.emb_width": POSITIVE,
    "vqvae.l_bins": POSITIVE,
    "vqvae.mu": FRACTION,
    # `jukebox` (the old name of `reference`) is still read from older checkpoints, not advertised
    "vqvae.spectral_mode": Rule("'auraloss' or 'reference'", lambda v: v in ("auraloss", "reference", "jukebox")),
    "vqvae.revival_threshold": WEIGHT,
    "vqvae.revival_relative": optional(WEIGHT),
    "vqvae.commit": WEIGHT,
    "vqvae.loss_l1": WEIGHT,
    "vqvae.loss_l2": WEIGHT,
    "vqvae.loss_linf": WEIGHT,
    "vqvae.linf_k": POSITIVE,
    "vqvae.spectral": WEIGHT,
    "vqvae.multispectral": WEIGHT,
    "vqvae.mrstft_fft_sizes": list_of(POSITIVE),
    "vqvae.mrstft_hop_sizes": list_of(POSITIVE),
    "vqvae.mrstft_win_lengths": list_of(POSITIVE),
    "vqvae.mrstft_w_sc": WEIGHT,
    "vqvae.mrstft_w_log_mag": WEIGHT,
    "vqvae.mrstft_w_lin_mag": WEIGHT,
    "vqvae.mrstft_w_phs": WEIGHT,
    "vqvae.width": POSITIVE,
    "vqvae.depth": POSITIVE,
    "vqvae.m_conv": SCALE,
    "vqvae.dilation_growth_rate": POSITIVE,
    "vqvae.dilation_cycle": optional(POSITIVE),  # i % 0 would divide by zero
    "vqvae.multipliers": optional(list_of(POSITIVE)),
    "vqvae.channels": POSITIVE,
    "vqvae.sample_length": POSITIVE,
    "vqvae.batch_size": POSITIVE,
    "vqvae.bandwidth_batches": POSITIVE,
    **_optim("vqvae"),
    "prior.*.n_ctx": POSITIVE,
    "prior.*.width": POSITIVE,
    "prior.*.depth": POSITIVE,
    "prior.*.heads": POSITIVE,
    "prior.*.attn_order": COUNT,
    "prior.*.blocks": POSITIVE,
    "prior.*.m_attn": SCALE,
    "prior.*.m_mlp": SCALE,
    "prior.*.init_scale": SCALE,
    "prior.*.y_bins": optional(list_of(POSITIVE, length=2)),  # [genres, artists]
    "prior.*.t_bins": POSITIVE,
    "prior.*.min_duration": WEIGHT,
    "prior.*.lyrics": exactly("none", "encoder", "merged"),
    "prior.*.trainable": Rule("all, embeddings, top-layers:N or lora:RANK (N, RANK >= 1)", _trainable),
    "prior.*.lyrics_vocab": exactly("v2", "v3"),
    "prior.*.max_duration": SCALE,
    "prior.*.n_tokens": COUNT,
    "prior.*.prime_loss_fraction": FRACTION,
    "prior.*.cfg_drop.artist": DECAY,  # a probability below 1: an input always dropped would never be learned
    "prior.*.cfg_drop.genre": DECAY,
    "prior.*.cfg_drop.lyrics": DECAY,
    "prior.*.prime_width": POSITIVE,
    "prior.*.prime_depth": POSITIVE,
    "prior.*.prime_heads": POSITIVE,
    "prior.*.prime_attn_order": COUNT,
    "prior.*.prime_blocks": optional(POSITIVE),
    "prior.*.prime_m_attn": SCALE,
    "prior.*.prime_m_mlp": SCALE,
    "prior.*.prime_init_scale": SCALE,
    "prior.*.cond_width": POSITIVE,
    "prior.*.cond_depth": POSITIVE,
    "prior.*.cond_m_conv": SCALE,
    "prior.*.cond_dilation_growth_rate": POSITIVE,
    "prior.*.cond_dilation_cycle": optional(POSITIVE),
    "prior.*.alignment_layer": optional(COUNT),
    "prior.*.alignment_head": optional(COUNT),
    "prior.*.batch_size": POSITIVE,
    "prior.*.ema_decay": optional(DECAY),
    **_optim("prior.*"),
}


def _per_level_lists(vqvae: Mapping) -> Problem | None:
    """downs_t, strides_t and multipliers have one entry per level (a shorter list is an IndexError later)."""
    levels = vqvae["levels"]
    for key in ("downs_t", "strides_t", "multipliers"):
        value = vqvae.get(key)
        if value is not None and len(value) != levels:
            return Problem(key, value, f"a list of {levels} items, one per level (vqvae.levels = {levels})")
    return None


def top_hop(downs_t: list[int], strides_t: list[int], limit: int) -> int | None:
    """The top level's hop (the product of strides_t ** downs_t), or None once it exceeds `limit` (so that a
    huge downs_t cannot make the check itself run for ever)."""
    hop = 1
    for down, stride in zip(downs_t, strides_t):
        if down * math.log2(stride) > math.log2(limit) + 1:
            return None
        hop *= stride**down
    return hop if hop <= limit else None


def _crop_fits_hop(vqvae: Mapping) -> Problem | None:
    """The training crop is a whole number of top-level codes (the data and the model both assume it)."""
    length = vqvae["sample_length"]
    hop = top_hop(vqvae["downs_t"], vqvae["strides_t"], length)
    if hop is None:
        return Problem("sample_length", length, f"a multiple of the top level's hop (strides_t ** downs_t > {length})")
    if length % hop:
        return Problem("sample_length", length, f"a multiple of the top level's hop {hop} (strides_t ** downs_t)")
    return None


def _durations_ordered(prior: Mapping) -> Problem | None:
    """The timing embedding bins [min_duration, max_duration): an empty range divides by zero."""
    low, high = prior["min_duration"], prior["max_duration"]
    if high <= low:
        return Problem("max_duration", high, f"a number > min_duration = {show(low)}")
    return None


def _fits_memory(key: str, value: int, need: float, what: str) -> Problem | None:
    """A Problem when `need` bytes (a lower bound of what one training step holds) exceed this machine's memory
    (RAM, or the GPU's when CUDA is already in use: jukebox_pl.machine.memory_limit)."""
    from jukebox_pl.machine import gib, memory_limit

    limit, kind = memory_limit()
    if limit is None or need <= limit:
        return None
    return Problem(key, value, f"small enough to fit: {what} needs at least {gib(need)}, this machine has {gib(limit)} "
                   f"of {kind}")  # fmt: skip


def _vqvae_batch_fits(vqvae: Mapping) -> Problem | None:
    """One step holds at least the crops, their reconstructions and the first layer's activations (width
    channels at full rate), in float32, forward and backward: batch x sample_length x 4 bytes x (2 x channels
    + 2 x width). A batch or crop beyond the machine is refused here, not by the kernel's OOM killer."""
    batch, length = vqvae["batch_size"], vqvae["sample_length"]
    need = 4.0 * batch * length * (2 * vqvae["channels"] + 2 * vqvae["width"])
    what = f"vqvae.batch_size {batch} x vqvae.sample_length {length}"
    one = f"one crop of vqvae.sample_length {length}"
    problem = _fits_memory("sample_length", length, need / batch, one)  # the crop alone is too long
    return problem or _fits_memory("batch_size", batch, need, what)


def _prior_batch_fits(prior: Mapping) -> Problem | None:
    """One step of a prior holds at least one layer's activations and their gradient: batch x n_ctx x width x 4
    bytes x 2 (a bound far below the real need, so that a config that also serves sampling is never refused)."""
    batch, n_ctx, width = prior["batch_size"], prior["n_ctx"], prior["width"]
    need = 8.0 * batch * n_ctx * width
    return _fits_memory("batch_size", batch, need, f"batch_size {batch} x n_ctx {n_ctx} x width {width}")


def _class_choices(trainer: Mapping) -> Problem | None:
    """`trainer.logger` and `trainer.callbacks` hold true/false or `{class_path, init_args}` entries (their classes
    are checked by the loader, `jukebox_pl.config.class_specs`)."""
    from jukebox_pl.config.class_specs import KINDS, shape_problem

    for key, kind in KINDS.items():
        leaf = key.split(".")[1]
        found = shape_problem(kind, trainer.get(leaf)) if leaf in trainer else None
        if found is not None:
            dotted, value, allowed = found
            return Problem(dotted.removeprefix("trainer."), value, allowed)
    return None


# Checked after RULES passed (they rely on the types and ranges), per section pattern.
CROSS_RULES: dict[str, tuple[Callable[[Mapping], Problem | None], ...]] = {
    "trainer": (_class_choices,),
    "vqvae": (_per_level_lists, _crop_fits_hop, _vqvae_batch_fits),
    "prior.*": (_durations_ordered, _prior_batch_fits),
}


def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split(".")) if pattern else ()


def _matches(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    """`*` in the pattern (or in the key, for a section of unknown level) matches any one segment."""
    return len(pattern) == len(key) and all("*" in (p, k) or p == k for p, k in zip(pattern, key))


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key (`prior.top.batch_size`), if it has one."""
    parts = _segments(key)
    return next((rule for pattern, rule in RULES.items() if _matches(_segments(pattern), parts)), None)


def leaves(tree: Mapping, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) for every leaf of a nested mapping (an empty mapping has none)."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from leaves(value, (*path, str(key)))
        else:
            yield (*path, str(key)), value


def _sections(tree: Mapping, pattern: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Mapping]]:
    """The sub-trees of `tree` at a section pattern (`prior.*` -> each level's section), with their paths."""
    if not pattern:
        yield (), tree
        return
    head, rest = pattern[0], pattern[1:]
    for key, value in tree.items():
        if (head == "*" or head == str(key)) and isinstance(value, Mapping):
            yield from (((str(key), *path), sub) for path, sub in _sections(value, rest))


def problems(tree: Mapping, at: str = "") -> Iterator[Problem]:
    """Every value of `tree` outside its rule, then (when the ranges hold) every cross-key problem. `tree` is a
    resolved config, or the section of one found at the pattern `at` (`vqvae`, `prior.*`); keys in the problems
    are relative to `tree`."""
    root = _segments(at)
    found = False
    for path, value in leaves(tree):
        rule = rule_for(".".join((*root, *path)))
        if rule is not None and not rule.accepts(value):
            found = True
            yield Problem(".".join(path), value, rule.allowed)
    if found:
        return
    for pattern, checks in CROSS_RULES.items():
        parts = _segments(pattern)
        if len(parts) < len(root) or not _matches(parts[: len(root)], root):
            continue
        for path, section in _sections(tree, parts[len(root) :]):
            for check in checks:
                problem = check(section)
                if problem is not None:
                    yield Problem(".".join((*path, problem.key)), problem.value, problem.allowed)
