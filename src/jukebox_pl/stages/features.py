"""`jukebox-pl features`: the top prior's activations at chosen layers for a whole collection, through Lightning's
predict loop (every device of a node, and several nodes, with DDP), one array per track and layer.

    jukebox-pl features --run RUN (--audio FILES... | --data SHARDS | --codes CODES.pt...) --out DIR --layers 36
        [--pool mean] [--seconds 24] [--batch-size N] [--artist NAME --genre NAME --total-seconds S
        --offset-seconds S]

The run folder's settings for OUT are recorded in OUT/.features_state.json: running the same command again skips
every track already written (an interrupted run resumes), and a run with other settings is refused instead of
mixing two kinds of arrays in one folder. Unreadable or too short tracks are listed under `skipped` in
OUT/features.json with the reason, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jukebox_pl.data.resumable_folder import resume_state
from jukebox_pl.errors import RefusedError, UserValueError
from jukebox_pl.features.data import Reading, TrackDataset, collate, file_tracks, shard_tracks
from jukebox_pl.features.extractor import OUTPUTS, JukeboxFeatures, parse_layers
from jukebox_pl.features.lightning import FeaturesModule, FeatureWriter, layer_file, merge_index, read_records
from jukebox_pl.features.pooling import parse_pool
from jukebox_pl.features.recipe import RECIPE_TOTAL_SECONDS, TRACK, Conditioning
from jukebox_pl.hub.folder import resolve_folder
from jukebox_pl.stages.codes import read_codes
from jukebox_pl.user_files import check_input_file, check_output_folder

STATE_FILE = ".features_state.json"
STATE_VERSION = 1
WEIGHTS = ("fp32", "bf16", "fp16", "int8", "int4")


class FeaturesRefused(RefusedError):
    """OUT holds features made with other settings (or other files)."""


@dataclass
class FeaturesOptions:
    """Everything one `features` run needs (the command's flags)."""

    run: str
    out: str
    layers: list[int]
    audio: list[str] = field(default_factory=list)
    data: str | None = None
    codes: list[str] = field(default_factory=list)
    pool: str | float = "mean"
    seconds: float | None = None  # None: one context window of the prior
    min_seconds: float = 1.0
    batch_size: int = 4
    artist: str = "unknown"
    genre: str = "unknown"
    total_seconds: float | str = RECIPE_TOTAL_SECONDS
    offset_seconds: float = 0.0
    output: str = "block"
    weights: str = "fp32"
    normalize: bool = True
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    num_workers: int = 0
    allow_mismatch: bool = False

    def conditioning(self) -> Conditioning:
        return Conditioning(self.artist, self.genre, self.total_seconds, self.offset_seconds)


def _inputs(opts: FeaturesOptions):
    given = [name for name, value in (("--audio", opts.audio), ("--data", opts.data), ("--codes", opts.codes)) if value]
    if len(given) != 1:
        raise UserValueError(f"give exactly one of --audio, --data, --codes (got {', '.join(given) or 'none'})")
    if opts.audio:
        return file_tracks([check_input_file(f, "--audio file") for f in opts.audio], "audio"), "audio"
    if opts.codes:
        return file_tracks([check_input_file(f, "--codes file") for f in opts.codes], "codes"), "codes"
    return shard_tracks(opts.data), "data"


def settings_of(opts: FeaturesOptions, features: JukeboxFeatures, kind: str, seconds: float, pool) -> dict:
    """What defines OUT's arrays: a resumed run must match it exactly."""
    return {
        "run": str(Path(opts.run).resolve()), "input": kind, "layers": features.layers, "pool": pool,
        "output": opts.output, "weights": opts.weights, "seconds": seconds, "normalize": opts.normalize,
        "conditioning": asdict(opts.conditioning()), "min_seconds": opts.min_seconds,
        "sample_rate": features.sample_rate, "hop_length": features.hop_length, "width": features.width,
    }  # fmt: skip


def extract_features(opts: FeaturesOptions, progress: bool = True, log=print) -> dict:
    """Run the extraction; returns the merged index (OUT/features.json) with a `run` summary added."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    out = check_output_folder(opts.out, "--out")
    layers, pool = parse_layers(opts.layers), parse_pool(opts.pool)
    conditioning = opts.conditioning()
    if opts.output not in OUTPUTS:
        raise UserValueError(f"--output {opts.output!r}: choose one of {', '.join(OUTPUTS)}")
    if opts.weights not in WEIGHTS:
        raise UserValueError(f"--weights {opts.weights!r}: choose one of {', '.join(WEIGHTS)}")
    tracks, kind = _inputs(opts)
    opts.run = str(resolve_folder(opts.run))  # a run folder, or a Hub id (owner/name) fetched into the cache
    features = JukeboxFeatures.from_run(opts.run, layers, opts.weights, opts.output, codes_only=kind == "codes",
                                        allow_mismatch=opts.allow_mismatch)  # fmt: skip
    for name, value in (("--artist", conditioning.artist), ("--genre", conditioning.genre)):
        if value != TRACK:  # a typo is refused before any track is read
            conditioning.ids(features.vocab, value if name == "--artist" else "unknown",
                             value if name == "--genre" else "unknown", strict=True)  # fmt: skip
    seconds = opts.seconds if opts.seconds is not None else features.n_ctx * features.hop_length / features.sample_rate
    settings = settings_of(opts, features, kind, seconds, pool)
    state = resume_state(
        out, STATE_FILE, command="features", key="settings", fingerprint=settings, version=STATE_VERSION,
        refused=FeaturesRefused, empty_hint="choose an empty folder",
        contents="features made with other settings", restart="use a new --out, or delete that folder to start over",
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if state is None:  # a fresh folder (on several nodes each writes the same, under a name of its own first)
        tmp = out / f".{STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"version": STATE_VERSION, "settings": settings}, indent=1) + "\n")
        os.replace(tmp, out / STATE_FILE)
    done, _ = read_records(out)
    todo = [t for t in tracks if not (t.key in done and all(layer_file(out, n, t.key).is_file() for n in layers))]
    reading = Reading(features.sample_rate, features.hop_length, seconds, opts.min_seconds, opts.normalize,
                      _top_name(features), read_codes)  # fmt: skip
    writer = FeatureWriter(out)
    start = time.perf_counter()
    if todo:
        loader = DataLoader(TrackDataset(todo, reading), batch_size=opts.batch_size, shuffle=False,
                            num_workers=opts.num_workers, collate_fn=collate)  # fmt: skip
        trainer = pl.Trainer(
            accelerator=opts.accelerator, devices=opts.devices, num_nodes=opts.num_nodes, logger=False,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
            callbacks=[writer], inference_mode=True,
        )  # fmt: skip
        trainer.predict(FeaturesModule(features, pool, conditioning), loader, return_predictions=False)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return {}
    index = merge_index(out, settings)
    written = sum(t.key in index["tracks"] for t in todo)  # by every process, not this one's writer alone
    index["run"] = {"tracks": len(tracks), "already_done": len(tracks) - len(todo), "written": written,
                    "skipped": len(index["skipped"]), "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    log(
        f"features of layers {', '.join(map(str, layers))} for {len(index['tracks'])} track(s) in {out} "
        f"({written} written now, {len(tracks) - len(todo)} already there, {len(index['skipped'])} skipped)"
    )
    for record in index["skipped"].values():
        log(f"  skipped {record['source']}: {record['error']}")
    return index


def _top_name(features: JukeboxFeatures) -> str:
    from jukebox_pl.config.levels import level_name

    return level_name(features.prior.level, features.prior.levels)


def run(args: argparse.Namespace) -> int:
    opts = FeaturesOptions(
        run=args.run, out=args.out, layers=args.layers, audio=args.audio or [], data=args.data,
        codes=args.codes or [], pool=args.pool, seconds=args.seconds, min_seconds=args.min_seconds,
        batch_size=args.batch_size, artist=args.artist, genre=args.genre, total_seconds=args.total_seconds,
        offset_seconds=args.offset_seconds, output=args.output, weights=args.weights,
        normalize=not args.no_normalize, accelerator=args.accelerator, devices=args.devices,
        num_nodes=args.num_nodes, num_workers=args.num_workers, allow_mismatch=args.allow_mismatch,
    )  # fmt: skip
    extract_features(opts, progress=not args.no_progress)
    return 0
