"""The `jukebox-pl` command. Each subcommand only parses its arguments and calls into the library.

Config overrides (`trainer.max_steps=1`) may follow the command anywhere, also right after a flag that takes
several values: a word shaped like `dotted.key=...` (a letter or `_`, then letters, digits, `_`, `.`, `-`, then
`=`) ends such a flag's values, so `train prior --vqvae A B trainer.max_steps=1` gives --vqvae A B and one
override. A file whose name has that shape is written `./name=...`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from jukebox_pl.errors import JukeboxError, StopRequested, UserValueError, is_disk_full

# A config override word: a dotted key, then '='. Paths rarely look like this (and `./a=b` never does).
OVERRIDE_WORD = re.compile(r"^[A-Za-z_][\w.\-]*=")
_MOVED = "_overrides_after_flags"  # where ValuesThenOverrides leaves the words it hands back


class ValuesThenOverrides(argparse.Action):
    """A flag with several values (nargs "+" / "*"): argparse gives it every word up to the next flag, so the
    overrides typed after it would become its values; the override-shaped words are handed back instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        kept = [v for v in values if not OVERRIDE_WORD.match(v)]
        moved = [v for v in values if OVERRIDE_WORD.match(v)]
        if self.nargs == "+" and not kept:
            parser.error(f"argument {option_string}: expected at least one value before {moved[0]}")
        setattr(namespace, self.dest, kept)
        setattr(namespace, _MOVED, [*getattr(namespace, _MOVED, []), *moved])


PATHS = {"nargs": "+", "action": ValuesThenOverrides}  # a flag taking one or more file paths


def _number(kind: type, low: float, high: float | None = None, above: bool = False, below: bool = False):
    """An argparse type: a finite `kind` in the range, else argparse's one-line error naming flag and value
    (a batch of 0 or a negative length would otherwise fail deep inside a run)."""
    left, right = ("(" if above else "["), (")" if below else "]")
    allowed = f"{'an integer' if kind is int else 'a number'} " + (
        f"in {left}{low:g}, {high:g}{right}" if high is not None else f"{'>' if above else '>='} {low:g}"
    )

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        ok = value == value and abs(value) != float("inf") and (value > low if above else value >= low)
        if high is not None:
            ok = ok and (value < high if below else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: must be {allowed}")
        return value

    return parse


COUNT, POSITIVE = _number(int, 0), _number(int, 1)
SECONDS, LENGTH = _number(float, 0), _number(float, 0, above=True)
# A sampled song: 4 hours is far beyond what any prior was trained for (the reference's max_duration is 600 s),
# and the codes of every level for it fit in memory; more is a typo (1e9 s would plan years of windows).
MAX_SONG_SECONDS = 4 * 3600.0
SONG_SECONDS = _number(float, 0, MAX_SONG_SECONDS, above=True)
PREP_RATE = 44100  # prep's rate when neither --sr nor --preset is given: the reference's (the jukebox preset's)


def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prep", help="turn a folder of music into WebDataset shards + vocab + manifest")
    p.add_argument("--src", required=True, help="folder of audio (searched recursively)")
    p.add_argument("--out", required=True, help="folder for the shards (created; resumable)")
    p.add_argument("--metadata", help="CSV or JSONL keyed by path relative to --src: artist, genre(s), lyrics")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--sr", type=POSITIVE, help=f"target sample rate (default: the --preset's, else {PREP_RATE})")
    rate.add_argument(
        "--preset", help="make shards at this preset's data.sample_rate (tiny | small | jukebox | a config.yaml, "
        "e.g. the base run's RUN/prior_top/config.yaml when fine-tuning)",
    )  # fmt: skip
    share = _number(float, 0, 1, below=True)
    p.add_argument("--val-fraction", type=share, default=0.05, help="share of tracks for validation")
    p.add_argument("--min-seconds", type=SECONDS, default=1.0, help="skip tracks shorter than this")
    p.add_argument("--max-seconds", type=LENGTH, default=None, help="skip tracks longer than this")
    p.add_argument("--silence-db", type=float, default=-60.0, help="skip tracks whose RMS is below this dBFS")
    p.add_argument("--bits", type=int, default=16, choices=(16, 24), help="FLAC bit depth in the shards")
    p.add_argument("--shard-mb", type=LENGTH, default=512.0, help="target shard size in MB")
    p.add_argument("--shard-tracks", type=POSITIVE, default=500, help="at most this many tracks per shard")
    p.add_argument("--base-vocab", help="extend this vocab.json (keeps a pretrained model's label ids)")
    p.add_argument("--seed", type=COUNT, default=0, help="salt of the train/val split")
    p.add_argument("--workers", type=COUNT, default=2, help="decoding processes (0 or 1: in this process)")
    p.add_argument("--overwrite", action="store_true", help="delete shards already in --out and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def _run_prep(args: argparse.Namespace) -> int:
    from jukebox_pl.data.prep import PrepOptions, prepare_shards

    sr = args.sr or PREP_RATE
    if args.preset:
        from jukebox_pl.config import load_config

        sr = int(load_config(args.preset).data.sample_rate)
        print(f"shards at {sr} Hz, the data.sample_rate of --preset {args.preset}")
    opts = PrepOptions(
        src=args.src, out=args.out, metadata=args.metadata, sr=sr, val_fraction=args.val_fraction,
        min_seconds=args.min_seconds, max_seconds=args.max_seconds, silence_db=args.silence_db, bits=args.bits,
        shard_mb=args.shard_mb, shard_tracks=args.shard_tracks, base_vocab=args.base_vocab, seed=args.seed,
        workers=args.workers, overwrite=args.overwrite,
    )  # fmt: skip
    manifest = prepare_shards(opts, progress=not args.no_progress and sys.stderr.isatty())
    print_manifest_summary(manifest, args.out)
    return 0


def print_manifest_summary(manifest: dict, out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    c = manifest["counts"]
    table = Table(title=f"shards in {out}", show_header=True)
    for col in ("split", "tracks", "hours", "shards"):
        table.add_column(col)
    for split in ("train", "val"):
        table.add_row(split, str(c["tracks"][split]), f"{manifest['hours'][split]:.3f}", str(c["shards"][split]))
    console = Console()
    console.print(table)
    console.print(
        f"{c['audio_files_found']} audio files found, {c['skipped']} skipped, "
        f"{manifest['vocab']['artists']} artist ids, {manifest['vocab']['genres']} genre ids "
        f"({manifest['sample_rate']} Hz)"
    )
    for item in manifest["skipped"][:20]:
        console.print(f"  skipped {item['path']}: {item['reason']}", markup=False, soft_wrap=True)  # one line each
    if len(manifest["skipped"]) > 20:
        console.print(f"  ... and {len(manifest['skipped']) - 20} more (see manifest.json)")
    orphans = manifest["metadata"]["rows_without_audio"]
    if orphans:
        console.print(
            f"  metadata: {len(orphans)} row(s) name files not found under --src: {orphans[:5]}", markup=False
        )
    for problem in manifest["metadata"]["problems"][:20]:
        console.print(f"  metadata: {problem}", markup=False, soft_wrap=True)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config of a preset with overrides")
    p.add_argument("--preset", default="tiny", help="tiny | small | jukebox | path/to/config.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. vqvae.batch_size=8")


def _run_config(args: argparse.Namespace) -> int:
    from jukebox_pl.config import load_config, to_yaml

    print(to_yaml(load_config(args.preset, args.overrides)), end="")
    return 0


def _add_toy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy-data", help="write the synthetic toy music set (audio + metadata.csv)")
    p.add_argument("--out", required=True)
    p.add_argument("--songs-per-pair", type=POSITIVE, default=2)
    p.add_argument("--seconds", type=LENGTH, nargs=2, default=(8.0, 14.0), metavar=("MIN", "MAX"))
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--sr", type=POSITIVE, default=22050)


def _run_toy(args: argparse.Namespace) -> int:
    from jukebox_pl.data.toy import make_toy_dataset

    meta = make_toy_dataset(
        args.out, songs_per_pair=args.songs_per_pair, seconds=tuple(args.seconds), seed=args.seed,
        sample_rate=args.sr,
    )  # fmt: skip
    print(f"toy set written; metadata: {meta}")
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect-data", help="pull a few batches exactly as a stage is fed and describe them")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", required=True, help="shards folder written by `jukebox-pl prep` or `encode-shards`")
    p.add_argument("--stage", choices=("vqvae", "prior"), default="vqvae", help="whose batches to show")
    p.add_argument("--level", default="top", help="bottom | middle | top")
    p.add_argument("--batches", type=POSITIVE, default=2)
    p.add_argument("overrides", nargs="*")


def _run_inspect(args: argparse.Namespace) -> int:
    from jukebox_pl.config import load_config
    from jukebox_pl.stages.datamodules import inspect_data

    cfg = load_config(args.preset, [f"data.shards={args.data}", *args.overrides])
    inspect_data(cfg, args.stage, args.level, args.batches)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one stage: a VQ-VAE level (or a prior) through the Lightning Trainer")
    p.add_argument("stage", choices=("vqvae", "prior"), help="what to train")
    p.add_argument("--level", required=True, help="bottom | middle | top")
    p.add_argument("--preset", default="tiny", help="tiny | small | jukebox | path/to/config.yaml")
    p.add_argument("--data", help="shards folder written by `jukebox-pl prep` (sets data.shards)")
    p.add_argument("--run", required=True, help="run folder; each stage gets RUN/<stage>_<level>")
    p.add_argument("--resume", action="store_true", help="continue RUN/<stage>_<level>/checkpoints/last.ckpt")
    p.add_argument("--vqvae", **PATHS, help="prior: VQ-VAE level checkpoints to use instead of RUN/vqvae_<level>")
    p.add_argument("--init", help="prior: start from this prior checkpoint/export of the same level (fine-tuning)")
    p.add_argument("--print-config", action="store_true", help="print the whole resolved config, not only the changes")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (trainer.devices=2, vqvae.optim.lr=...)")


def _run_train(args: argparse.Namespace) -> int:
    if args.stage == "prior":
        from jukebox_pl.stages.train_prior import train_prior

        train_prior(
            args.run, args.level, args.preset, args.data, args.overrides, args.resume, vqvae=args.vqvae, init=args.init,
            print_config=args.print_config,
        )  # fmt: skip
        return 0
    if args.vqvae or args.init:
        raise UserValueError("--vqvae and --init are options of `train prior`")
    from jukebox_pl.stages.train_vqvae import train_vqvae

    train_vqvae(
        args.run, args.level, args.preset, args.data, args.overrides, args.resume, print_config=args.print_config
    )
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="a weights-only file (no optimizer) from a training checkpoint, or (--format hub) a run or "
        "model as a Hugging Face Hub folder: safetensors, config.json, model card",
    )  # fmt: skip
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a .ckpt written by training (e.g. RUN/vqvae_top/checkpoints/last.ckpt)")
    source.add_argument("--run", help="a run folder (with --format hub: every trained level)")
    p.add_argument("--out", required=True, help="output .pt file (a folder with --format hub)")
    p.add_argument("--format", choices=("pt", "hub"), default="pt", help="a .pt export or the Hub folder layout")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even if an EMA copy exists")
    p.add_argument("--merge", action="store_true", help="fold a LoRA fine-tuning run's adapters into plain weights")
    p.add_argument("--license", default="other", help="hub: the model card's licence id (e.g. apache-2.0, mit)")
    p.add_argument("--levels", type=POSITIVE, help="hub, --run: only the top N levels' priors")
    p.add_argument("--allow-mismatch", action="store_true", help="hub: export a prior with another VQ-VAE anyway")
    p.add_argument(
        "--push-to", metavar="OWNER/NAME", help="hub: upload the folder (token: HF_TOKEN or `hf auth login`)"
    )
    p.add_argument("--private", action="store_true", help="hub, --push-to: a private repository")


def _run_export(args: argparse.Namespace) -> int:
    from jukebox_pl.training.checkpoints.read_write import export_weights
    from jukebox_pl.user_files import check_output_file

    if args.format == "hub":
        from jukebox_pl.stages.export_hub import export_hub

        folder, url = export_hub(args.out, run=args.run, ckpt=args.ckpt, license=args.license, levels=args.levels,
                                 allow_mismatch=args.allow_mismatch, push_to=args.push_to,
                                 private=args.private or None)  # fmt: skip
        print(f"wrote {folder}" + (f"; pushed: {url}" if url else ""))
        return 0
    if args.run:
        raise UserValueError("--run needs --format hub (a .pt export is written from one --ckpt)")
    check_output_file(args.out, "--out")
    transform = None
    if args.merge:
        from jukebox_pl.prior.lora import merge_lora_state

        transform = merge_lora_state
    print(f"wrote {export_weights(args.ckpt, args.out, use_ema=not args.no_ema, transform=transform)}")
    return 0


def _add_vqvae_source(p: argparse.ArgumentParser) -> None:
    """Where trained VQ-VAE levels come from: a run folder or explicit checkpoints."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder with trained vqvae_<level> stages")
    src.add_argument("--ckpt", **PATHS, help="checkpoints or exports of the levels to use")


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="audio file -> codes of every trained VQ-VAE level (a .pt file)")
    p.add_argument("--audio", required=True)
    p.add_argument("--out", required=True, help="codes file (.pt)")
    _add_vqvae_source(p)
    p.add_argument("--levels", nargs="*", action=ValuesThenOverrides, help="only these levels (bottom/middle/top)")


def _run_encode(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.codes import encode_file

    codes = encode_file(args.audio, args.out, run=args.run, ckpts=args.ckpt, levels=args.levels)
    for name, c in codes.items():
        print(f"{name}: {tuple(c.shape)} codes")
    print(f"wrote {args.out}")
    return 0


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="codes file -> audio of one level (WAV/FLAC by extension)")
    p.add_argument("--codes", required=True)
    p.add_argument("--out", required=True, help="audio file to write (or a folder: one file per level)")
    _add_vqvae_source(p)
    p.add_argument("--level", help="which level's codes to decode (default: every level in the file)")


def _run_decode(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.codes import decode_file

    for path in decode_file(args.codes, args.out, run=args.run, ckpts=args.ckpt, level=args.level):
        print(f"wrote {path}")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample songs from trained levels: top first, then the upsamplers; resumable")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder with trained vqvae_<level> and prior_<level> stages")
    src.add_argument("--prior", **PATHS, help="explicit prior checkpoints (with --vqvae)")
    p.add_argument("--vqvae", **PATHS, help="explicit VQ-VAE level checkpoints (with --prior)")
    p.add_argument("--out", required=True, help="output folder (WAVs, codes.pt, index.html)")
    p.add_argument("--artist", action="append", default=[], help="artist name (repeat: one per sample)")
    p.add_argument("--genre", action="append", default=[], help="genre name (repeat for several)")
    p.add_argument("--genre-each", action="append", default=[], metavar="NAMES",
                   help="one sample's genres, comma-separated (repeat: one per sample, cycled)")  # fmt: skip
    p.add_argument("--lyrics", help="text file with the lyrics")
    p.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE",
        help="value of an extra conditioner's key, e.g. --label tempo=120 (repeat; comma-separate one per sample)",
    )  # fmt: skip
    p.add_argument("--seconds", type=SONG_SECONDS, default=10.0,
                   help=f"song length (at most {MAX_SONG_SECONDS:g} s)")  # fmt: skip
    p.add_argument("--n-samples", type=POSITIVE, default=1)
    p.add_argument("--mode", choices=("ancestral", "continue", "primed", "upsample"), default="ancestral")
    p.add_argument("--prompt", help="primed: audio file to continue")
    p.add_argument("--prompt-seconds", type=SECONDS, default=0.0, help="primed: seconds of the prompt to keep")
    p.add_argument("--codes", help="continue / upsample: a codes.pt written by an earlier `sample`")
    p.add_argument("--temperature", type=SECONDS, default=0.99)
    p.add_argument("--top-k", type=COUNT, default=0)
    p.add_argument("--top-p", type=_number(float, 0, 1), default=0.0)
    p.add_argument("--hop-fraction", help="window hop per sampled level, top first, e.g. 0.125,0.5,0.5")
    p.add_argument("--levels", type=int, choices=(1, 2, 3), help="how many levels to sample, from the top")
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--max-batch", type=POSITIVE, default=16, help="samples per forward pass (memory cap)")
    p.add_argument("--weights", choices=("fp32", "int8", "int4", "fp16", "bf16"), default="fp32",
                   help="prior weights: int8 = faster CPU sampling; int4 = faster still at batch 1, coarser (4-bit "
                   "groups of 128); bf16 = AVX-512 bf16 / AMX on a CPU, half the memory on a GPU; fp16 = a GPU's "
                   "(the released 5B priors are stored in fp16)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--cfg-scale",
        metavar="S[,S,S]",
        help="classifier-free guidance: one scale for every level whose prior learned its nulls (cfg_drop), or one "
        "per sampled level, top first (1 = none, 0 = unconditional, 2-5 = labels and lyrics pushed harder)",
    )
    p.add_argument(
        "--cfg-inputs",
        metavar="NAMES",
        help="what the unconditional rows drop, comma-separated among artist, genre, lyrics (default: every input "
        "the prior learned to do without)",
    )
    p.add_argument(
        "--decode", choices=("auto", "dynamic", "static", "graph", "compile"), default="auto",
        help="per-token steps: auto = graph on CUDA (the step recorded once as a CUDA graph and replayed), "
        "dynamic on the CPU; static / compile: the fixed-shape step, eager / through torch.compile",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue an interrupted output folder")
    p.add_argument(
        "--allow-mismatch", action="store_true", help="use a prior with another VQ-VAE than the one it learned"
    )
    p.add_argument("--no-progress", action="store_true")


def _run_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jukebox_pl.lyrics import read_lyrics
    from jukebox_pl.sampling.models import SamplingModels, to_device
    from jukebox_pl.sampling.progress import TokenProgress
    from jukebox_pl.stages.sample import SampleRequest, sample_song
    from jukebox_pl.user_files import check_output_folder

    if args.prior and not args.vqvae:
        raise UserValueError("--prior needs --vqvae (the VQ-VAE level checkpoints)")
    check_output_folder(args.out, "--out")
    lyrics = read_lyrics(args.lyrics) if args.lyrics else ""  # before any model is loaded
    if args.run and not Path(args.run).exists() and looks_like_hub_id(args.run):  # owner/name on the Hub
        models = SamplingModels.from_pretrained(args.run, args.levels, args.weights, args.allow_mismatch)
    elif args.run:
        models = SamplingModels.from_run(args.run, args.levels, args.weights, args.allow_mismatch)
    else:
        models = SamplingModels.from_checkpoints(args.vqvae, args.prior, args.weights, args.allow_mismatch)
    to_device(models, args.device)
    req = SampleRequest(
        out=args.out, artists=args.artist, genres=args.genre,
        genres_each=[g.split(",") for g in args.genre_each] or None,
        lyrics=lyrics, seconds=args.seconds,
        n_samples=args.n_samples, mode=args.mode, prompt=args.prompt, prompt_seconds=args.prompt_seconds,
        codes=args.codes, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        hop_fraction=[float(x) for x in args.hop_fraction.split(",")] if args.hop_fraction else None,
        levels=args.levels, seed=args.seed, max_batch=args.max_batch, resume=args.resume,
        labels=_parse_labels(args.label), decode=args.decode, cfg_scale=_numbers(args.cfg_scale, "--cfg-scale"),
        cfg_inputs=args.cfg_inputs.split(",") if args.cfg_inputs else None,
    )  # fmt: skip
    with TokenProgress(models, enabled=not args.no_progress and sys.stderr.isatty()) as progress:
        summary = sample_song(models, req, progress=progress.advance, totals=progress.set_totals)
    print(f"sampled {summary['samples']} x {summary['seconds']:.1f} s ({', '.join(summary['levels'])}) in "
          f"{summary['sampling_s']:.1f} s; gallery: {Path(summary['out']) / 'index.html'}")  # fmt: skip
    return 0


def _add_encode_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode-shards", help="audio shards -> VQ-VAE code shards for prior training (resumable)")
    p.add_argument("--shards", required=True, help="audio shard folder written by `jukebox-pl prep`")
    p.add_argument("--out", required=True, help="folder for the code shards (created; resumable)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder with trained vqvae_<level> stages")
    source.add_argument("--vqvae", **PATHS, metavar="CKPT", help="checkpoints or exports of the levels")
    p.add_argument("--levels", help="comma-separated levels to encode: names (bottom,middle,top) or indices")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def _run_encode_shards(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.encode_shards import run

    return run(args)


def looks_like_hub_id(text: str) -> bool:
    """`owner/name` that is not a path here (no folder `owner` beside us): a run on the Hugging Face Hub. A
    mistyped local path (`runs/tiyn`) stays local and is reported missing, never fetched."""
    from jukebox_pl.hub.folder import HUB_ID

    return bool(HUB_ID.match(text)) and not Path(text).parent.exists()


def _parse_labels(items: list[str]) -> dict[str, list[float]]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = [float(v) for v in value.split(",")]
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UserValueError(f"--label {item!r}: expected KEY=VALUE with numeric values (e.g. tempo=120)")
    return out


def _numbers(text: str | None, flag: str) -> list[float] | None:
    """'2' or '3,1.5,1' -> [floats], each >= 0; None stays None."""
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = [-1.0]
    if any(v < 0 for v in values):
        raise UserValueError(f"{flag} {text!r}: expected numbers >= 0, one or comma-separated (e.g. 3 or 3,1,1)")
    return values


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train every level of the tiny preset on the toy set, sample, check (make demo)")
    p.add_argument("--run", default="runs/demo", help="run folder (resumable)")
    p.add_argument("--data", default="data/toy_shards", help="toy-set shards")
    p.add_argument("--toy", default="data/toy", help="toy-set folder (audio + metadata.csv) for the artist check")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seconds", type=LENGTH, default=6.0, help="length of each sampled song")
    p.add_argument("--per-artist", type=POSITIVE, default=2, help="songs sampled per toy artist")
    p.add_argument("--cfg-scale", type=float, default=2.0, help="classifier-free guidance scale for every level "
                   "whose prior was trained with cfg_drop (1 = none; the demo trains them with it)")  # fmt: skip
    p.add_argument("overrides", nargs="*")


def _run_demo(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.demo import run_demo

    run_demo(args.run, args.data, args.toy, args.preset, args.seconds, args.overrides, args.per_artist,
             cfg_scale=args.cfg_scale)  # fmt: skip
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a run's prior on a new artist's shards, into a new run")
    p.add_argument("--from", dest="source", required=True, help="base run folder (or its prior checkpoint)")
    p.add_argument("--data", required=True, help="shards of the new songs (`jukebox-pl prep`; val = held out)")
    p.add_argument("--run", required=True, help="the new run folder (links the base's other stages)")
    p.add_argument("--level", default="top", choices=("top", "middle", "bottom"), help="which prior")
    p.add_argument("--train", default="all", help="all | embeddings | top-layers:N | lora:RANK")
    p.add_argument("--init-artist", help="start the new artists' rows from this known artist's row")
    p.add_argument("--patience", type=POSITIVE, default=5, help="validations without improvement before stopping")
    p.add_argument("--resume", action="store_true", help="continue RUN/prior_<level>/checkpoints/last.ckpt")
    p.add_argument("--print-config", action="store_true", help="print the whole resolved config, not only the changes")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides (trainer.max_steps=..., trainer.val_check_interval=...)"
    )


def _run_finetune(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.finetune import finetune

    finetune(args.source, args.data, args.run, args.level, args.train, args.init_artist, args.overrides,
             args.resume, args.patience, print_config=args.print_config)  # fmt: skip
    print(f"fine-tuned prior in {args.run}/prior_{args.level} (before and best held-out figures: "
          f"{args.run}/prior_{args.level}/finetune.json); sample with: jukebox-pl sample --run {args.run}")  # fmt: skip
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="a prior's held-out bits/token on the validation split of any shards")
    p.add_argument("--from", dest="source", required=True, help="run folder (or a prior checkpoint/export in one)")
    p.add_argument("--data", required=True, help="shards to measure on (`jukebox-pl prep`; their val split)")
    p.add_argument("--level", default="top", choices=("top", "middle", "bottom"), help="which prior")
    p.add_argument("--batches", type=POSITIVE, help="only the first N validation batches (default: all)")
    p.add_argument("--weights", choices=("fp32", "int8", "int4", "bf16"), default="fp32",
                   help="the prior's weights stored as `sample --weights` stores them: what int8 / int4 / bf16 "
                   "cost in bits per token")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a line per figure")
    p.add_argument("overrides", nargs="*", help="key=value overrides (data.val_crops_per_track=..., ...)")


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    from jukebox_pl.stages.evaluate import evaluate_prior

    figures = evaluate_prior(args.source, args.data, args.level, args.overrides, args.batches, weights=args.weights)
    if args.json:
        print(json.dumps(figures))
    for name, value in () if args.json else figures.items():
        print(f"{name}: {value:.4f}")
    return 0


class ImportFile(argparse.Action):
    """--vqvae FILE / --prior FILE add a file to import; --hps and --level apply to the file named before them
    (a --hps before any file applies to every file without its own), so one command imports a whole set."""

    def __call__(self, parser, namespace, value, option_string=None):
        from jukebox_pl.stages.import_openai import ImportItem

        items = getattr(namespace, "items", None) or []
        if option_string in ("--vqvae", "--prior"):
            items.append(ImportItem(option_string[2:], value))
        elif option_string == "--level":
            if not items or items[-1].kind != "prior":
                parser.error("--level applies to the --prior FILE before it")
            items[-1].level = value
        elif items and items[-1].hps is None:
            items[-1].hps = value
        elif items:
            parser.error(f"{items[-1].path} already has --hps {items[-1].hps}")
        else:
            namespace.default_hps = value
        namespace.items = items


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-openai",
        help="the reference's (OpenAI's) checkpoint files -> a run folder that sample / train prior --init read",
        description="Each --hps (a released set: vqvae, 5b, 5b_lyrics, 1b_lyrics, upsampler_level_0, "
        "upsampler_level_1; or a JSON file of the reference's hparams) and --level applies to the file before it.",
    )
    p.add_argument("--out", required=True, help="run folder to write (RUN/vqvae_<level>, RUN/prior_<level>, ...)")
    p.add_argument("--vqvae", action=ImportFile, metavar="FILE", help="the reference's vqvae.pth.tar")
    p.add_argument("--prior", action=ImportFile, metavar="FILE", help="a prior file (repeat, one per level)")
    p.add_argument("--level", action=ImportFile, choices=("top", "middle", "bottom"), help="the prior's level")
    p.add_argument("--hps", action=ImportFile, metavar="NAME|FILE.json", help="hparams of the file before it")
    p.add_argument("--ids", help="the reference's jukebox/data/ids folder (artist and genre names -> ids)")
    p.add_argument("--trust-pickle", action="store_true", help="allow files that need pickle (the reference's)")
    p.set_defaults(items=[], default_hps=None)


def _run_import(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.import_openai import import_openai

    for item in args.items:
        item.hps = item.hps if item.hps is not None else args.default_hps
    report = import_openai(args.out, args.items, ids=args.ids, trust_pickle=args.trust_pickle)
    for line in report.lines:
        print(line)
    print(f"wrote {len(report.written)} model files to {report.run}; sample with: jukebox-pl sample --run {report.run}")
    return 0


def _add_download(sub: argparse._SubParsersAction) -> None:
    from jukebox_pl.stages.download import add_parser

    add_parser(sub)


def _run_download(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.download import run

    return run(args)


def _total_seconds(text: str) -> float | str:
    """--total-seconds: a song length in seconds, or `track` (each track's own)."""
    if text == "track":
        return text
    return LENGTH(text)


def _devices(text: str) -> int | str:
    return text if text == "auto" else POSITIVE(text)


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="the top prior's activations at chosen layers, per track (MIR features)")
    p.add_argument("--run", required=True, help="run folder (trained, imported, or Hub layout) or a Hub id")
    p.add_argument("--audio", **PATHS, default=[], help="audio files")
    p.add_argument("--data", help="a shard folder written by `jukebox-pl prep` (both splits)")
    p.add_argument("--codes", **PATHS, default=[], help="codes files from `jukebox-pl encode` (skips the VQ-VAE)")
    p.add_argument("--out", required=True, help="output folder (layer<L>/<track>.npy and features.json)")
    p.add_argument("--layers", nargs="+", required=True, help="layer numbers, 1 = the first block (e.g. 36)")
    p.add_argument("--pool", default="mean", help="mean, none, or a window length in seconds (one mean each)")
    p.add_argument("--seconds", type=LENGTH, help="seconds of each track to read (default: one context window)")
    p.add_argument("--min-seconds", type=SECONDS, default=1.0, help="shorter tracks are skipped and reported")
    p.add_argument("--batch-size", type=POSITIVE, default=4)
    p.add_argument("--artist", default="unknown", help="artist label (a name of the run's vocabulary, or 'track')")
    p.add_argument("--genre", default="unknown", help="genre label (a name of the run's vocabulary, or 'track')")
    p.add_argument("--total-seconds", type=_total_seconds, default=62.0,
                   help="song length the timing signal reads, or 'track' (each track's own)")  # fmt: skip
    p.add_argument("--offset-seconds", type=SECONDS, default=0.0, help="where the clip starts in that song")
    p.add_argument("--output", choices=("block", "prior"), default="block",
                   help="block: block L's output (jukemirlib); prior: a depth-L prior's output (JukeMIR)")  # fmt: skip
    p.add_argument("--weights", choices=("fp32", "bf16", "fp16", "int8", "int4"), default="fp32",
                   help="precision of the prior's weights")  # fmt: skip
    p.add_argument("--no-normalize", action="store_true", help="keep the audio's level (the recipe scales to peak 1)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", type=_devices, default="auto", help="devices per node (auto: all)")
    p.add_argument("--num-nodes", type=POSITIVE, default=1)
    p.add_argument("--num-workers", type=COUNT, default=0, help="data loader workers reading audio")
    p.add_argument("--allow-mismatch", action="store_true", help="use a prior with a VQ-VAE it did not learn")
    p.add_argument("--no-progress", action="store_true")


def _run_features(args: argparse.Namespace) -> int:
    from jukebox_pl.stages.features import run

    return run(args)


COMMANDS = {"prep": (_add_prep, _run_prep), "config": (_add_config, _run_config),
            "toy-data": (_add_toy, _run_toy), "inspect-data": (_add_inspect, _run_inspect),
            "train": (_add_train, _run_train), "export": (_add_export, _run_export),
            "encode": (_add_encode, _run_encode), "decode": (_add_decode, _run_decode),
            "encode-shards": (_add_encode_shards, _run_encode_shards), "sample": (_add_sample, _run_sample),
            "demo": (_add_demo, _run_demo), "import-openai": (_add_import, _run_import),
            "finetune": (_add_finetune, _run_finetune), "evaluate": (_add_evaluate, _run_evaluate),
            "download": (_add_download, _run_download), "features": (_add_features, _run_features)}  # fmt: skip


class DefaultsShown(argparse.HelpFormatter):
    """`--help` lists each flag's default, except where there is none to tell (unset, off, an empty list)."""

    @staticmethod
    def tells(default) -> bool:
        return default not in (None, False, [], (), argparse.SUPPRESS)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or not self.tells(action.default) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every `jukebox-pl` parser shows defaults in its `--help`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsShown)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jukebox-pl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add, _ in COMMANDS.values():
        add(sub)
    for command in sub.choices.values():  # a file's hparams or config may name an extra conditioner to import
        command.add_argument(
            "--allow-class", "--allow-conditioner", dest="allow_conditioner", action="append", default=[],
            metavar="MODULE.CLASS",
            help="import this class (a conditioner, logger or callback) when a config or checkpoint names it",
        )  # fmt: skip
        for action in command._actions:  # a flag without a help text still shows its default
            if action.help is None and action.option_strings and DefaultsShown.tells(action.default):
                action.help = "default: %(default)s"
    return parser


def _in_typed_order(argv: Sequence[str], words: list[str]) -> list[str]:
    """`words` (collected from the positionals, from multi-value flags and from the leftovers) in the order
    they were typed, so that of two overrides of one key the later one still wins."""
    left = Counter(words)
    ordered = []
    for word in argv:
        if left[word] > 0:
            ordered.append(word)
            left[word] -= 1
    return ordered


def parse_args(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse a command line: `key=value` overrides may sit between or after the flags, also right after a flag
    with several values; anything else unknown is an error (exit 2)."""
    parser = parser or build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    moved = vars(args).pop(_MOVED, [])
    if not hasattr(args, "overrides"):
        words = _in_typed_order(argv, extra + moved)
        if words:
            note = f" (`{args.command}` takes no key=value overrides)" if any("=" in w for w in words) else ""
            parser.error(f"unrecognized arguments: {' '.join(words)}{note}")
        return args
    bad = [e for e in extra if e.startswith("-") or "=" not in e]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra or moved:
        args.overrides = _in_typed_order(argv, [*args.overrides, *moved, *extra])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        if args.allow_conditioner:
            from jukebox_pl.config.conditioner_targets import allow_conditioners

            allow_conditioners(*args.allow_conditioner)
        return COMMANDS[args.command][1](args)
    except JukeboxError as err:  # the library's own user errors; anything else keeps its traceback
        print(f"jukebox-pl {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except StopRequested as stop:  # SIGTERM / SIGINT: saved, and the shell's exit code for the signal
        print(f"jukebox-pl {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except OSError as err:  # a full disk or quota is the user's to fix, not a bug: one line, what was written
        if not is_disk_full(err):
            raise
        what = f" while writing {err.filename}" if err.filename else ""
        print(
            f"jukebox-pl {args.command}: error: no space left on the disk{what} ({err.strerror or err}); files "
            "completed before it are kept: free space (or raise the quota) and run the same command again",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
