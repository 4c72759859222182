"""Load a preset by name, apply `key=value` overrides, validate against the schema, save what was used.

A config is plain data from the user: YAML files hold only standard YAML types (no `!!python/...` tags),
`${other.key}` references stay inside the config (resolver calls such as `${oc.env:HOME}` are refused, so
nothing from the environment ends up in a saved config), and every numeric value is checked against the
table in `jukebox_pl.config.checks`. Each problem is one ConfigError line naming the file or key.

Nothing read from a file picks code to run: shard URLs that a file sets (`data.train_urls`, `data.val_urls`) must
be local paths or brace patterns of them (a `pipe:` URL runs a shell command, `https:`/`gs:`/... run curl or
gsutil); such URLs are accepted only as typed on this invocation's command line (`command_line_urls`). Extra
conditioners a file names are imported only when allowed (`jukebox_pl.prior.conditioning`).
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import os
import re
import weakref
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, grammar_parser
from omegaconf.errors import ConfigKeyError, GrammarParseError, OmegaConfBaseException, ValidationError
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

from jukebox_pl.config.checks import leaves, problems, show
from jukebox_pl.config.class_specs import ClassSpecError, allow_typed, check_class_choices, take_replaced
from jukebox_pl.config.conditioner_targets import allow_conditioners, conditioner_allowed, named_targets, refusal
from jukebox_pl.config.schema import RunConfig
from jukebox_pl.errors import UserValueError
from jukebox_pl.user_files import input_problem

PRESETS = ("tiny", "small", "jukebox")

# Keys that used to exist under `data` but were read per stage: say where the setting lives now.
MOVED_KEYS = {
    "data.batch_size": "vqvae.batch_size / prior.<level>.batch_size",
    "data.val_batch_size": "vqvae.batch_size / prior.<level>.batch_size",
    "data.sample_length": "vqvae.sample_length (a prior's crop is its n_ctx x hop)",
    "data.channels": "vqvae.channels (priors read mono)",
    "data.n_lyric_tokens": "prior.top.n_tokens",
    "data.lyrics_vocab": "prior.top.lyrics_vocab",
    "data.seed": "seed",
}


# Keys that are gone: one key (trainer.max_steps) is a stage's step count. Saved runs and old presets may still
# hold them: a file's value is dropped when trainer.max_steps is set, else named (`_retire_step_keys`).
RETIRED_STEP_KEY = "max_steps"  # under `vqvae` and `prior.<level>`


class ConfigError(UserValueError):
    """A config problem, with the dotted key and the offending value in the message."""


def configs_dir() -> Path:
    """The folder of YAML presets: $JUKEBOX_PL_CONFIGS, else the package's `jukebox_pl/configs` (an installed
    wheel), else `configs/` of the source checkout this module runs from (editable install, PYTHONPATH=src)."""
    env = os.environ.get("JUKEBOX_PL_CONFIGS")
    if env:
        return Path(env)
    packaged = Path(str(resources.files("jukebox_pl") / "configs"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout / "configs"
    return packaged  # absent: preset_path and prior_arch_path report that no preset was found


MAX_CONFIG_BYTES = 16 << 20  # a run's config is a few KB; a bigger file is not a config


def preset_path(preset: str) -> Path:
    """A preset name (`tiny`, `small`, `jukebox`) or a path to a YAML file."""
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml"):
        reason = input_problem(candidate, MAX_CONFIG_BYTES)  # a FIFO would block the read, /dev/zero never end
        if reason:
            raise ConfigError(f"config file {candidate} {reason}")
        return candidate
    path = configs_dir() / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in configs_dir().glob("*.yaml"))
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known) or '(none found)'}")
    return path


def _known_keys(node: DictConfig, dotted: str) -> list[str]:
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    try:
        sub = OmegaConf.select(node, parent) if parent else node
    except OmegaConfBaseException:
        return []
    return list(sub.keys()) if isinstance(sub, DictConfig) else []


def _explain(err: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    if isinstance(err, ConfigKeyError) and str(key) in MOVED_KEYS:
        return ConfigError(
            f"config key {key!r} (from {source}) no longer exists: it is set per stage, as {MOVED_KEYS[str(key)]}"
        )
    if isinstance(err, ConfigKeyError):
        leaf = str(key).rsplit(".", 1)[-1]
        known = _known_keys(schema, str(key))
        close = difflib.get_close_matches(leaf, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys here: {', '.join(known)}"
        return ConfigError(f"unknown config key {key!r} (from {source}){hint}")
    if isinstance(err, ValidationError):
        return ConfigError(f"bad value for config key {key!r} (from {source}): {str(err.msg).splitlines()[0]}")
    return ConfigError(f"config error at {key!r} (from {source}): {str(err).splitlines()[0]}")


def load_config(preset: str = "tiny", overrides: Sequence[str] = (), schema: type = RunConfig) -> DictConfig:
    """Merge schema <- preset YAML <- `key=value` overrides; raise ConfigError naming any bad key or value."""
    base = OmegaConf.structured(schema)
    path = preset_path(preset)
    sources = [(str(path), read_config_file(path))]
    if overrides:
        sources.append((COMMAND_LINE, parse_overrides(overrides)))
    retired = _retire_step_keys(sources)
    merged = _merge(base, sources)
    arch_layers = _prior_arch_layers(merged)
    if arch_layers:
        retired += _retire_step_keys(arch_layers)
        sources = arch_layers + sources
        merged = _merge(base, sources)
    if retired and merged.trainer.max_steps in (-1, None):
        source, key, value = retired[-1]
        raise ConfigError(
            f"config key {key!r} = {show(value)} (from {source}) no longer exists: a stage's step count is the one "
            f"key trainer.max_steps; give trainer.max_steps={show(value)} on the command line (or set it there)"
        )
    merged.preset = path.stem
    try:
        resolved = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise _explain(err, base, "interpolation") from None
    check_values(resolved, sources=sources)
    _check_code_choices(merged, resolved, sources)
    return merged


# -- what only the command line may choose: URLs that run programs, conditioner modules to import -------------

URL_KEYS = ("data.train_urls", "data.val_urls")
COMMAND_LINE = "command line"
_TYPED_URLS: dict[int, frozenset[str]] = {}  # id(config load_config returned, or its typed form) -> URLs typed


def _retire_step_keys(sources: list[tuple[str, DictConfig]]) -> list[tuple[str, str, Any]]:
    """Take the retired per-stage step keys (`vqvae.max_steps`, `prior.<level>.max_steps`) out of every source:
    refused when typed on the command line, returned as (source, key, value) when a file sets one."""
    found = []
    for source, cfg in sources:
        sections = [("vqvae", cfg.get("vqvae"))]
        prior = cfg.get("prior")
        if isinstance(prior, DictConfig):
            sections += [(f"prior.{level}", node) for level, node in prior.items()]
        for name, node in sections:
            if not isinstance(node, DictConfig) or RETIRED_STEP_KEY not in node:
                continue
            key, value = f"{name}.{RETIRED_STEP_KEY}", node.pop(RETIRED_STEP_KEY)
            if source == COMMAND_LINE:
                raise ConfigError(
                    f"config key {key!r} (from command line) no longer exists: a stage's step count is the one key "
                    f"trainer.max_steps; give trainer.max_steps={show(value)}"
                )
            if value is not None:
                found.append((source, key, value))
    return found


def url_schemes(spec: str) -> list[str]:
    """The URLs of a shard spec (brace patterns and '::' lists expanded) that are not local files: WebDataset
    would run a shell command for `pipe:`, curl/gsutil/ais for `https:`, `gs:`, `scp:`, ..., read stdin for `-`."""
    import webdataset as wds

    try:
        urls = wds.shardlists.expand_urls(str(spec))
    except Exception:  # a `${VAR}` with no WDS_VAR in the environment: the DataModule reports it when it expands
        urls = str(spec).split("::")
    return [u for u in urls if runs_or_fetches(u)]


def runs_or_fetches(url: str) -> bool:
    """True for one URL WebDataset would not open as a local file (a scheme other than `file:`, or `-`)."""
    return url == "-" or urlparse(str(url)).scheme not in ("", "file")


def command_line_urls(cfg: Any) -> frozenset[str]:
    """The shard URL specs typed on the command line of the `load_config` call that returned `cfg` (or of its
    typed form, `jukebox_pl.config.typed.run_config`; nothing for any other config: a copy, a section, one built
    from a file): the only ones a DataModule may open when they run a program (`pipe:`) or fetch from a network."""
    return _TYPED_URLS.get(id(cfg), frozenset())


def remember_urls(cfg: Any, typed: set[str] | frozenset[str]) -> None:
    """Allow these URL specs for `cfg` (a config `load_config` returns, or its typed form) while it lives."""
    key = id(cfg)
    if key not in _TYPED_URLS:
        weakref.finalize(cfg, _TYPED_URLS.pop, key, None)
    _TYPED_URLS[key] = frozenset(typed)


def _check_code_choices(merged: DictConfig, resolved: dict, sources: Sequence[tuple[str, DictConfig]]) -> None:
    """Refuse shard URLs that run or fetch (`pipe:`, `https:`, ...) unless typed on this command line, and extra
    conditioners, loggers and callbacks a file names unless allowed; allow the classes the command line names."""
    typed = dict(sources).get(COMMAND_LINE)
    typed_tree = OmegaConf.to_container(typed, resolve=False) if typed is not None else {}
    typed_urls = set()
    for key in URL_KEYS:
        section, leaf = key.split(".")
        value = (resolved.get(section) or {}).get(leaf)  # (a literal `${` in it must not be resolved again)
        if not value or not url_schemes(value):
            continue
        # the command line's own value, resolved within the command line alone (a reference to a file's key is None)
        own = OmegaConf.select(typed, key, default=None, throw_on_resolution_failure=False) if typed else None
        if own != value:  # set by a file (or interpolated from one): the file would choose a program to run
            raise ConfigError(
                f"config key {key!r} = {value!r} (from {_origin(key, sources) or 'a config file'}) is refused: a file "
                f"may name only local shard paths, and {url_schemes(value)[0]!r} would run a program or fetch from "
                f"the network; give it on this command line ({key}=...) if you trust it, or use a local path"
            )
        typed_urls.add(value)
    remember_urls(merged, typed_urls)
    allow_conditioners(*(target for _, target in named_targets(typed_tree)))
    for key, target in named_targets(resolved):
        if not conditioner_allowed(target):
            raise ConfigError(refusal(target, key, _origin(key, sources) or "a config file"))
    allow_typed(typed_tree)  # loggers and callbacks: Lightning's own, typed here, or allowed (--allow-class)
    try:
        check_class_choices(resolved, lambda key: _origin(key, sources))
    except ClassSpecError as err:
        raise ConfigError(str(err)) from None


def _merge(base: DictConfig, sources: list[tuple[str, DictConfig]]) -> DictConfig:
    merged = base
    for source, cfg in sources:
        cfg, replaced = take_replaced(cfg)  # trainer.logger / trainer.callbacks: a later source replaces them whole
        try:
            merged = OmegaConf.merge(merged, cfg)
            for key, value in replaced.items():
                OmegaConf.update(merged, key, value, merge=False)
        except (OmegaConfBaseException, TypeError) as err:  # TypeError: "Cannot merge incompatible container types"
            clash = _shape_clash(base, cfg, source)
            if clash is None and isinstance(err, OmegaConfBaseException):
                raise _explain(err, base, source) from None
            raise ConfigError(clash or f"the config from {source} does not fit the schema: {err}") from None
    return merged


def _shape_clash(base: DictConfig, cfg: DictConfig, source: str) -> str | None:
    """Where `cfg` puts a mapping or list in place of a list or mapping of the schema (OmegaConf names no key)."""
    todo = [((), OmegaConf.to_container(base, resolve=False), OmegaConf.to_container(cfg, resolve=False))]
    while todo:
        path, want, got = todo.pop()
        if isinstance(want, Mapping) and isinstance(got, Mapping):
            todo.extend(((*path, str(k)), want[k], v) for k, v in got.items() if k in want)
        elif isinstance(want, list | Mapping) and isinstance(got, list | Mapping) and type(want) is not type(got):
            kinds = {True: "a list", False: "a mapping"}
            return (
                f"config key {'.'.join(path)!r} (from {source}) is {kinds[isinstance(got, list)]}, "
                f"but the schema holds {kinds[isinstance(want, list)]} there"
            )
    return None


# A `key=value` override: a dotted key (letters, digits, `_`, `.`, `-`), then '='; cli.OVERRIDE_WORD is the same.
OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """`key=value` words as a config (values are YAML: numbers, lists, null); one bad word is named alone."""
    bad = [o for o in overrides if not OVERRIDE.match(o)]
    if bad:
        raise ConfigError(f"overrides must look like key=value with a dotted key (vqvae.batch_size=8), got {bad}")
    for item in overrides:
        try:
            OmegaConf.from_dotlist([item])
        except (yaml.YAMLError, OmegaConfBaseException, ValueError) as err:
            raise ConfigError(f"override {item!r} is not a valid key=value: {_one_line(err)}") from None
    cfg = OmegaConf.from_dotlist(list(overrides))
    refuse_resolvers(cfg, "command line")
    return cfg


# -- config files: plain YAML data only ---------------------------------------------------------------------

# Tags of plain data. SafeLoader resolves untagged scalars to these (timestamps included); anything else
# (`!!python/object`, `!!binary`, `!!set`, a custom `!tag`) was written on purpose and has no place in a config.
PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "seq", "map", "merge", "timestamp")
)


def _one_line(err: BaseException) -> str:
    """A YAML or OmegaConf error as one line, with the line and column of a YAML problem."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        where = err.problem_mark or err.context_mark
        context = f"{err.context}: " if err.context else ""
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        return f"{context}{err.problem}{at}"
    if isinstance(err, OmegaConfBaseException):  # its message, then full_key/object_type lines
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return " ".join(str(err).split())


def _foreign_tag(root: yaml.Node) -> yaml.Node | None:
    """The first node carrying a tag outside PLAIN_TAGS (aliases may share and even nest nodes: each is seen once)."""
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in PLAIN_TAGS:
            return node
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            todo.extend(n for pair in node.value for n in pair)
    return None


def _check_yaml_shape(path: Path, text: str) -> None:
    """Refuse, before anything is constructed, text that is not YAML, not a mapping, or tagged with a type."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_one_line(err)}") from None
    if root is None:
        return
    line = root.start_mark.line + 1
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else f"the single value {root.value!r}"
        raise ConfigError(f"config file {path} must hold `key: value` lines (a mapping), not {kind} (line {line})")
    tagged = _foreign_tag(root)
    if tagged is not None:
        tag = tagged.tag.replace("tag:yaml.org,2002:", "!!")
        raise ConfigError(
            f"config file {path}, line {tagged.start_mark.line + 1}: the YAML tag {tag} is not allowed; a config "
            "holds plain values only (numbers, strings, booleans, null, lists, mappings)"
        )


def read_config_file(path: str | Path) -> DictConfig:
    """A YAML config file as a DictConfig of plain values; any problem is one ConfigError naming the file."""
    path = Path(path)
    reason = input_problem(path, MAX_CONFIG_BYTES)
    if reason:
        raise ConfigError(f"config file {path} {reason}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {_one_line(err)}") from None
    _check_yaml_shape(path, text)
    try:
        cfg = OmegaConf.load(io.StringIO(text))
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        key = getattr(err, "full_key", None)
        at = f" at {key!r}" if key else ""
        raise ConfigError(f"config file {path} is not a valid config{at}: {_one_line(err)}") from None
    refuse_resolvers(cfg, str(path))
    return cfg


# -- interpolation: references to other keys only -----------------------------------------------------------


def _strings(tree: Any, path: tuple[str, ...] = ()):
    """(dotted key, text) of every string in a plain tree that OmegaConf would treat as an interpolation."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _strings(value, (*path, str(key)))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from _strings(value, (*path, str(i)))
    elif isinstance(tree, str) and "${" in tree:
        yield ".".join(path), tree


def _resolver_called(text: str) -> str | None:
    """The first resolver `text` calls ('oc.env' in '${oc.env:HOME}'), None when it only references keys.
    Text that does not parse as an interpolation is refused like a resolver call (as '')."""
    try:
        todo = [grammar_parser.parse(text)]
    except GrammarParseError:
        return ""
    while todo:
        node = todo.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            return node.resolverName().getText()
        todo.extend(getattr(node, "children", None) or [])
    return None


def refuse_resolvers(cfg: Any, source: str, prefix: str = "") -> None:
    """Resolvers (`${oc.env:...}`, `${oc.decode:...}`, any `${name:...}`) read outside the config, and their
    results would be saved with the run: refuse them; `${other.key}` references stay allowed."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig | ListConfig) else cfg
    for key, text in _strings(tree):
        name = _resolver_called(text)
        if name is None:
            continue
        key = f"{prefix}.{key}" if prefix else key
        what = f"calls the resolver {name!r}" if name else "is not a valid interpolation (write \\${ for a literal ${)"
        raise ConfigError(
            f"config key {key!r} (from {source}) = {text!r} {what}; only references to other keys such as "
            "${vqvae.optim.lr} are allowed"
        )


# -- value ranges -------------------------------------------------------------------------------------------


_ABSENT = object()


def _origin(key: str, sources: Sequence[tuple[str, DictConfig]]) -> str | None:
    """The last source that sets a dotted key (the one whose value won the merge)."""
    for source, cfg in reversed(sources):
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False) is not _ABSENT:
            return source
    return None


def check_values(
    cfg: DictConfig | Mapping,
    at: str = "",
    shown: str | None = None,
    sources: Sequence[tuple[str, DictConfig]] = (),
) -> None:
    """Raise ConfigError for the first value outside the allowed ranges of `jukebox_pl.config.checks`.

    `cfg` is a whole config, or the section of one at the pattern `at` (`vqvae`, `prior.*`), then named
    `shown.<key>` in the message; `sources` ([(name, config)], in merge order) say where the value came from."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as err:  # a reference to a key outside this section
        raise _explain(err, cfg, "interpolation") from None
    problem = next(problems(tree, at), None)
    if problem is None:
        return
    key = f"{shown}.{problem.key}" if shown else problem.key
    origin = _origin(problem.key, sources)
    where = f" (from {origin})" if origin else ""
    raise ConfigError(f"config key {key!r} = {show(problem.value)}{where} is not allowed: must be {problem.allowed}")


def prior_arch_path(arch: str) -> Path:
    """`configs/priors/<arch>.yaml`: a named prior architecture (prior_5b_lyrics, small_prior, tiny_prior, ...)."""
    folder = configs_dir() / "priors"
    known = sorted(p.stem for p in folder.glob("*.yaml"))
    path = folder / f"{arch}.yaml"
    if arch not in known or not path.is_file():  # a name only: never a path to a YAML elsewhere (../../x)
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown prior arch {arch!r}; {hint}known: {', '.join(known)}")
    return path


def _prior_arch_layers(merged: DictConfig) -> list[tuple[str, DictConfig]]:
    """The architecture files named by `prior.<level>.arch`, to merge beneath the preset and the overrides."""
    layers = []
    if "prior" not in merged:
        return layers
    for level, section in merged.prior.items():
        arch = section.get("arch")
        if arch:
            path = prior_arch_path(arch)
            layers.append((str(path), OmegaConf.create({"prior": {level: read_config_file(path)}})))
    return layers


def _escape_literals(tree: Any) -> Any:
    """A resolved tree whose strings may contain a literal `${` (written `\\${` in the config): escaped again, so
    that loading the saved text gives the same string instead of an interpolation (which could resolve `oc.env`
    on a resumed run). Backslashes right before `${` are doubled, as OmegaConf's grammar reads them."""
    if isinstance(tree, dict):
        return {k: _escape_literals(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_escape_literals(v) for v in tree]
    if isinstance(tree, str) and "${" in tree:
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", tree)
    return tree


def to_yaml(cfg: Any) -> str:
    """The fully resolved config (a DictConfig or its typed `RunConfig`) as YAML text (what runs print and save);
    it loads back to the same values."""
    tree = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.to_yaml(OmegaConf.create(_escape_literals(tree)))


def changes(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, value before, value after) for every leaf two configs (DictConfig or `RunConfig`) set
    differently, in key order: what a run changes from its preset (a key only one side has is None there)."""

    def tree(cfg: Any) -> dict:
        return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else OmegaConf.to_container(cfg, resolve=True)

    old, new = ({".".join(path): v for path, v in leaves(tree(cfg))} for cfg in (before, after))
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config next to a run so that it can be resumed or reproduced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))
    return path
