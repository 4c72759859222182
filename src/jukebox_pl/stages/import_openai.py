"""`jukebox-pl import-openai`: the reference's checkpoint files -> a self-contained jukebox-pl run folder.

RUN/vqvae_<level>/export.pt (the reference's one three-level VQ-VAE split into our level files),
RUN/prior_<level>/export.pt, a config.yaml per stage, RUN/vocab.json (from the reference's id tables, with
--ids) and RUN/import.json (what came from where). `jukebox-pl sample --run RUN`, `train prior --init` and
fine-tuning read these directly; nothing in the run points outside it. Reading and converting the files is
`jukebox_pl.interop.reference_files`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jukebox_pl.config.loader import save_config
from jukebox_pl.config.schema import DataConfig, RunConfig
from jukebox_pl.config.sections import prior_config, vqvae_config
from jukebox_pl.config.typed import plain
from jukebox_pl.errors import RefusedError, UserValueError
from jukebox_pl.interop.openai_hps import ModelSpec, read_hps, spec_from_hps
from jukebox_pl.interop.reference_files import convert_prior, convert_vqvae, read_reference_file
from jukebox_pl.training.checkpoints.read_write import (
    EXPORT_FORMAT,
    atomic_torch_save,
)
from jukebox_pl.vqvae.fingerprint import codes_fingerprint, level_print


# -- writing the run -------------------------------------------------------------------------------------------
def stage_config(spec: ModelSpec) -> RunConfig:
    """A full run config for one imported stage (what `train prior --init` and fine-tuning start from)."""
    cfg = RunConfig(preset="imported", data=DataConfig(sample_rate=spec.sample_rate), vqvae=vqvae_config(spec.vqvae))
    if spec.prior is not None:
        setattr(cfg.prior, spec.level, prior_config(spec.prior))
    return cfg


def write_vqvae(run: Path, levels: dict[int, dict], spec: ModelSpec, source: str) -> list[Path]:
    written = []
    vq_levels = spec.levels
    vcfg = plain(vqvae_config(spec.vqvae))
    for level, state in levels.items():
        name = vq_levels.name(level)
        export = {
            "format": EXPORT_FORMAT,
            "kind": "vqvae-level",
            "hparams": {"vqvae": vcfg, "level": level, "sample_rate": spec.sample_rate, "config": None},
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "meta": {"kind": "vqvae-level", "level": level, "level_name": name, "sample_rate": spec.sample_rate,
                     "hop_length": vq_levels.hop(level), "imported_from": source, "hps": spec.source},
        }  # fmt: skip
        written.append(atomic_torch_save(export, run / f"vqvae_{name}" / "export.pt"))
        save_config(stage_config(spec), run / f"vqvae_{name}" / "config.yaml")
    return written


def write_prior(run: Path, state: dict, spec: ModelSpec, source: str, vocab, fingerprint: dict | None = None) -> Path:
    v = spec.vqvae
    idx = spec.levels.index(spec.level)
    hp = {
        "prior": plain(prior_config(spec.prior)),
        "level": idx,
        "vqvae_cfg": plain(vqvae_config(v)),
        "sample_rate": spec.sample_rate,
        "y_bins": spec.prior.get("y_bins"),
        "vqvae_checkpoints": None,
        "config": None,
        "vocab": vocab.to_dict() if vocab is not None else None,
    }
    export = {
        "format": EXPORT_FORMAT,
        "kind": "prior",
        "hparams": hp,
        "state_dict": {f"model.{k}": t for k, t in state.items()},
        "meta": {"kind": "prior", "level": idx, "level_name": spec.level, "levels": v["levels"],
                 "sample_rate": spec.sample_rate, "n_ctx": spec.prior["n_ctx"], "imported_from": source,
                 "hps": spec.source, "vqvae_fingerprint": fingerprint},
    }  # fmt: skip
    path = atomic_torch_save(export, run / f"prior_{spec.level}" / "export.pt")
    save_config(stage_config(spec), run / f"prior_{spec.level}" / "config.yaml")
    return path


def imported_fingerprint(run: Path, spec: ModelSpec, codebooks: dict[int, dict]) -> dict | None:
    """The fingerprint of the VQ-VAE levels an imported prior reads: from the VQ-VAE imported with it, else from
    the one already in the run folder; None (sampling then warns) when the run has none yet."""
    levels = spec.levels
    idx = levels.index(spec.level)
    needed = [i for i in (idx, levels.above(idx)) if i is not None]
    if not all(i in codebooks for i in needed):
        if not all((run / f"vqvae_{levels.name(i)}" / "export.pt").is_file() for i in needed):
            return None
        from jukebox_pl.vqvae.vqvae import VQVAE

        vqvae = VQVAE.from_checkpoints([run / f"vqvae_{levels.name(i)}" / "export.pt" for i in needed])
        return codes_fingerprint(vqvae, idx)
    return {levels.name(i): codebooks[i] for i in needed}


@dataclass
class ImportItem:
    """One file to import: `kind` "vqvae" or "prior", its `--hps` (None: the file's own), a prior's level."""

    kind: str
    path: str
    hps: str | None = None
    level: str | None = None


@dataclass
class ImportReport:
    run: Path
    written: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def resolve_spec(item: ImportItem, file_hps: dict | None) -> ModelSpec:
    if item.hps is None and file_hps is None:
        raise UserValueError(
            f"{item.path} carries no hparams: say which set it is with --hps NAME (vqvae, 5b, 5b_lyrics, "
            "1b_lyrics, upsampler_level_0, upsampler_level_1) or --hps FILE.json"
        )
    hps = read_hps(item.hps) if item.hps is not None else file_hps
    spec = spec_from_hps(hps, item.kind, item.path)
    if item.level is not None and spec.kind == "prior" and item.level != spec.level:
        raise UserValueError(f"--level {item.level} for {item.path}, but its hparams ({spec.source}) make it the "
                             f"{spec.level} prior")  # fmt: skip
    return spec


def import_openai(
    out: str | Path, items: list[ImportItem], ids: str | Path | None = None, trust_pickle: bool = False,
    overwrite: bool = False,
) -> ImportReport:  # fmt: skip
    """Convert every item into the run folder `out` (see the module docstring)."""
    run = Path(out)
    if not items:
        raise UserValueError("nothing to import: give --vqvae FILE and/or --prior FILE")
    taken = [p for p in run.glob("*/export.pt")] if run.is_dir() else []
    if taken and not overwrite:
        raise RefusedError(f"{run} already holds imported or trained models ({taken[0]}); choose another --out")
    report = ImportReport(run)
    levels_seen: dict[str, str] = {}
    tables: dict[str, Any] = {}  # label version -> the reference's id tables, read once
    top_vocab = (-1, None)  # (level index, vocabulary) of the highest prior: the run's vocab.json
    codebooks: dict[int, dict] = {}  # level -> its fingerprint entry, from the VQ-VAE imported here
    # the VQ-VAE first, so that every prior records the codebooks it is paired with (`vqvae.fingerprint`)
    for item in sorted(items, key=lambda i: i.kind != "vqvae"):
        state, file_hps = read_reference_file(item.path, trust_pickle)
        spec = resolve_spec(item, file_hps)
        if spec.kind == "vqvae":
            converted = convert_vqvae(state, spec, item.path)
            codebooks.update({lv: level_print(st, spec.levels.hop(lv)) for lv, st in converted.items()})
            report.written += write_vqvae(run, converted, spec, str(item.path))
            report.lines.append(f"{item.path}: VQ-VAE ({spec.source}), {len(state)} keys -> {len(converted)} levels")
            continue
        if spec.level in levels_seen:
            raise UserValueError(f"two priors for the {spec.level} level: {levels_seen[spec.level]} and {item.path}")
        levels_seen[spec.level] = item.path
        vocab = None
        if ids is not None and spec.prior.get("labels"):
            from jukebox_pl.interop.ids import read_reference_ids

            version = "v3" if spec.prior.get("lyrics_vocab") == "v3" else "v2"  # the 1B model's labels are v3
            if version not in tables:
                tables[version] = read_reference_ids(ids, version)
            vocab = tables[version]
            idx = spec.levels.index(spec.level)
            top_vocab = max(top_vocab, (idx, vocab), key=lambda pair: pair[0])
        mapped = convert_prior(state, spec, item.path)
        fingerprint = imported_fingerprint(run, spec, codebooks)
        report.written.append(write_prior(run, mapped, spec, str(item.path), vocab, fingerprint))
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in mapped.values()})
        report.lines.append(
            f"{item.path}: {spec.level} prior ({spec.source}), {len(state)} keys placed, weights {'/'.join(dtypes)}"
            + (f", {len(vocab.artists)} artist and {len(vocab.genres)} genre names" if vocab is not None else "")
        )
    if top_vocab[1] is not None:  # the names `sample --artist` is checked against: the top prior's
        top_vocab[1].save(run / "vocab.json")
    record = {"items": [vars(i) for i in items], "ids": str(ids) if ids else None,
              "written": [str(p.relative_to(run)) for p in report.written]}  # fmt: skip
    (run / "import.json").write_text(json.dumps(record, indent=2) + "\n")
    return report
