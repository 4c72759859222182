"""`jukebox-pl sample`: resolve labels and lyrics, plan the levels of a mode, run, save after every window, decode.

Output folder: `state.pt` (resumable state, rewritten after every window), then `codes.pt` (every level's codes
with the labels, lyrics, settings and seed needed to continue them), `<level>/sample_<i>.wav` and `index.html`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from jukebox_pl.audio import read_audio, resample, to_mono, write_audio
from jukebox_pl.data.code_checks import check_codes
from jukebox_pl.errors import MissingInputError, RefusedError, UserValueError
from jukebox_pl.lyrics import LyricsTokenizer
from jukebox_pl.prior.guidance import GUIDED_INPUTS
from jukebox_pl.sampling.models import SamplingModels
from jukebox_pl.sampling.song_sampler import SongSampler, SongSpec
from jukebox_pl.training.checkpoints.read_write import (
    INTERRUPTED_SAVE,
    atomic_torch_save,
    clean_interrupted_saves,
    safe_load,
)
from jukebox_pl.training.run_lock import LOCK_FILE, holds, lock_folder, release
from jukebox_pl.user_files import check_input_file

MODES = ("ancestral", "continue", "primed", "upsample")
STATE_FILE, CODES_FILE = "state.pt", "codes.pt"


@dataclass
class SampleRequest:
    """What one `sample` run asks for, as the CLI's flags name it (`--cfg-scale` -> `cfg_scale`).

    A guidance scale, followed by name: `--cfg-scale` (parsed, each >= 0) -> `cfg_scale` -> `guidance_scales`
    (fitted to the sampled levels: one for all or one per level, only priors that learned their nulls) ->
    `SongSpec.cfg_scales[level]` (saved with the codes) -> `JukeboxPrior.sample(cfg_scale=...)`, whose
    `guided_condition` is the model's own guard for callers that skip this path."""

    out: str
    artists: list[str] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)
    genres_each: list[list[str]] | None = None  # one genre list per sample (cycled), instead of `genres` for all
    lyrics: str = ""
    seconds: float = 10.0
    n_samples: int = 1
    mode: str = "ancestral"
    prompt: str | None = None
    prompt_seconds: float = 0.0
    codes: str | None = None
    temperature: float = 0.99
    top_k: int = 0
    top_p: float = 0.0
    hop_fraction: list[float] | None = None  # top, middle, bottom (the levels sampled, top first)
    levels: int | None = None
    seed: int = 0
    max_batch: int = 16
    resume: bool = False
    # classifier-free guidance: one scale for every level whose prior learned its nulls, or one per level (top
    # first); which inputs the null-conditioned rows drop (default: all the prior learned to do without)
    cfg_scale: list[float] | None = None
    cfg_inputs: list[str] | None = None
    decode: str = "auto"  # per-token steps: auto, dynamic, static, graph (CUDA), compile (`prior.decoding`)
    # values of extra conditioners' batch keys, e.g. {"tempo": [120.0]} (one per sample or one for all)
    labels: dict[str, list[float]] = field(default_factory=dict)


def labels_in(
    vocab, names: list[str], genres: list[str], n: int, strict: bool = True, each: list[list[str]] | None = None
) -> tuple[list[int], list[list[int]]]:
    """Artist and genre names -> one vocabulary's ids (unknown names: an error with close matches). Every
    --genre may give several ids (a bag of words in the reference's v2 vocabulary); together they form each
    sample's genre list, no longer than the vocabulary allows. `each`: one genre list per sample instead (cycled
    like the artists)."""
    artists = [vocab.artist_id(names[i % len(names)], strict=strict) for i in range(n)]
    lists = [each[i % len(each)] for i in range(n)] if each else [genres] * n
    out = []
    for asked in lists:
        genre_ids = [i for g in asked for i in vocab.genre_ids(g, strict=strict)]
        limit = vocab.max_genres
        if limit is not None and len(genre_ids) > limit:
            raise UserValueError(
                f"--genre {asked} gives {len(genre_ids)} genre ids; {vocab.style} labels hold at most {limit}"
            )
        out.append(genre_ids)
    return artists, out


def resolve_labels(models: SamplingModels, req: SampleRequest) -> tuple[list[int], list[list[int]], list[str]]:
    """The names' ids in the run's (top prior's) vocabulary, and the sample's artist names."""
    names = req.artists or ["unknown"]
    n = max(req.n_samples, len(req.artists))
    artists, genres = labels_in(models.vocab, names, req.genres, n, each=req.genres_each)
    return artists, genres, [names[i % len(names)] for i in range(n)]


def level_labels(models: SamplingModels, req: SampleRequest, n: int) -> dict[int, dict]:
    """The same names in the vocabulary of each prior that has its own (another table, another style). A name
    that level does not know (an artist only the fine-tuned top prior learned) is its unknown label, 0."""
    names = req.artists or ["unknown"]
    out = {}
    for level, vocab in models.vocabs.items():
        if vocab.to_dict() != models.vocab.to_dict():
            artists, genres = labels_in(vocab, names, req.genres, n, strict=False, each=req.genres_each)
            out[level] = {"artists": artists, "genres": genres}
    return out


def known_codes(models: SamplingModels, req: SampleRequest, n: int) -> tuple[dict[int, torch.Tensor], int | None]:
    """Codes the chosen mode starts from, per level, and (upsample) the song length they fix in samples."""
    top = models.n_levels - 1
    if req.mode == "ancestral":
        return {}, None
    if req.mode in ("continue", "upsample"):
        if not req.codes:
            raise UserValueError(f"--mode {req.mode} needs --codes (a codes.pt written by `jukebox-pl sample`)")
        saved = safe_load(check_input_file(req.codes, "--codes file"), "codes file")
        if not isinstance(saved, dict):
            raise UserValueError(f"--codes file {req.codes} is not a codes.pt written by `jukebox-pl sample`")
        check_codes(req.codes, saved.get("codes"), _prior_bins(models))
        codes = {models.level(name): c for name, c in saved["codes"].items()}
        codes = {k: (v if v.shape[0] == n else v[:1].repeat(n, 1)) for k, v in codes.items()}
        if top not in codes:
            raise UserValueError(f"{req.codes} has no top-level codes")
        if req.mode == "upsample":
            return {top: codes[top]}, codes[top].shape[1] * models.vqvae.hop_length(top)
        return codes, None
    if not req.prompt:
        raise UserValueError("--mode primed needs --prompt AUDIO (and --prompt-seconds)")
    audio, sr = read_audio(check_input_file(req.prompt, "--prompt file"))
    mono = to_mono(resample(audio, sr, models.sample_rate, name=req.prompt))
    hop_top = models.vqvae.hop_length(top)
    keep = int(req.prompt_seconds * models.sample_rate) // hop_top * hop_top if req.prompt_seconds else mono.shape[-1]
    keep = min(keep, mono.shape[-1] // hop_top * hop_top)
    if keep <= 0:
        raise UserValueError(f"the prompt {req.prompt} is shorter than one top-level code ({hop_top} samples)")
    x = torch.from_numpy(np.ascontiguousarray(mono[..., :keep], dtype=np.float32)).reshape(1, 1, -1)
    encoded = models.vqvae.encode(x, levels=[i for i in models.vqvae.available()])
    return {k: v.repeat(n, 1) for k, v in encoded.items()}, None


def _prior_bins(models: SamplingModels):
    """A level name's codebook size, as its prior (or VQ-VAE level) reads it; None for a level the run lacks."""

    def bins(name: str) -> int | None:
        level = models.level(name)
        if level in models.vqvae.available():
            return int(models.vqvae.level(level).cfg.l_bins)
        prior = models.priors.get(level)
        return getattr(prior, "bins", None)

    return bins


def guidance_scales(models, levels: list[int], scales: list[float] | None, inputs: list[str] | None) -> dict:
    """Level -> guidance scale, checked before anything is sampled. One value applies to every sampled level
    whose prior learned its nulls (`cfg_drop`; the others sample without guidance, and say so); one value per
    level (top first) is taken as given, and a level that cannot be guided is refused by name."""
    if not scales:
        return {}
    if len(scales) not in (1, len(levels)):
        raise UserValueError(f"--cfg-scale takes one value or one per sampled level ({len(levels)}), got {scales}")
    bad = sorted(set(inputs or []) - set(GUIDED_INPUTS))
    if bad:
        raise UserValueError(f"--cfg-inputs: unknown input(s) {bad}; choose among {', '.join(GUIDED_INPUTS)}")
    out = {}
    for i, level in enumerate(levels):
        prior, scale = models.priors[level], float(scales[i if len(scales) > 1 else 0])
        if scale == 1.0:
            continue
        if prior.guidable(inputs):
            out[level] = scale
        elif len(scales) == 1:
            print(f"the {models.name(level)} prior samples without guidance: it did not learn to do without "
                  f"{', '.join(inputs or GUIDED_INPUTS)} (cfg_drop)")  # fmt: skip
        else:
            raise UserValueError(
                f"--cfg-scale {scale} for the {models.name(level)} prior, which did not learn to do without "
                f"{', '.join(inputs or GUIDED_INPUTS)} (its cfg_drop: {prior.cfg_drop or 'none'}): no learned null "
                "to contrast; fine-tune it with prior.<level>.cfg_drop.artist=0.2 (and genre, lyrics) or give it 1"
            )
    return out


def plan_levels(models: SamplingModels, req: SampleRequest) -> list[int]:
    top = models.n_levels - 1
    wanted = sorted(models.priors, reverse=True)
    if req.mode == "upsample":
        wanted = [i for i in wanted if i != top]
        if not wanted:
            raise UserValueError("--mode upsample needs --levels 2 or more (the levels below the top)")
    return wanted


def owned_by_sample(name: str) -> bool:
    """The lock and what an interrupted save left: files of `sample`'s own even before its state exists."""
    return name == LOCK_FILE or INTERRUPTED_SAVE.match(name) is not None


def check_out(out: Path, resume: bool) -> None:
    """`--out` is a new or empty folder, or (with --resume) one of this command's own, recognised by the
    sampling state it writes before anything else: a folder holding other files is never written into."""
    if out.exists() and not out.is_dir():
        raise RefusedError(f"--out {out} is a file, not a folder; give a new or empty folder for the sample")
    state_path = out / STATE_FILE
    if state_path.is_file() and not resume:
        raise RefusedError(f"{out} holds an interrupted or finished sample; pass --resume or choose another --out")
    if resume and not state_path.is_file():
        raise MissingInputError(f"nothing to resume in {out} (no {STATE_FILE})")
    listed = out.iterdir() if out.is_dir() and not resume else ()
    foreign = sorted(p.name for p in listed if not owned_by_sample(p.name))
    if foreign:
        raise RefusedError(
            f"--out {out} is not empty and was not written by `jukebox-pl sample` (it holds {foreign[0]}"
            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); give a new or empty folder"
        )


def sample_song(models: SamplingModels, req: SampleRequest, progress=None, totals=None) -> dict:
    """Run (or resume) one request; returns a summary. `progress(level, n)` is told of every n sampled tokens,
    `totals({level: tokens})` of the plan before sampling starts. `req.out` is locked while it runs: a second
    process on the same folder is refused, naming this one."""
    if req.mode not in MODES:
        raise UserValueError(f"unknown mode {req.mode!r}; choose one of {', '.join(MODES)}")
    out = Path(req.out)
    check_out(out, req.resume)
    held, new = holds(out), not out.exists()
    lock_folder(out, "--out")  # creates the folder
    clean_interrupted_saves(out)  # what a killed save left: held now, so no save of ours is under way
    try:
        return _sample_song(models, req, out, progress, totals)
    finally:
        if not held:
            release(out)
        if new and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_FILE}:  # refused: leave no trace
            (out / LOCK_FILE).unlink(missing_ok=True)
            out.rmdir()


def _sample_song(models: SamplingModels, req: SampleRequest, out: Path, progress, totals) -> dict:
    state_path = out / STATE_FILE
    artists, genres, artist_names = resolve_labels(models, req)
    out.mkdir(parents=True, exist_ok=True)
    n, top = len(artists), models.n_levels - 1
    top_prior = models.priors.get(top)
    lyric_ids: list[int] = []
    if req.lyrics and top_prior is not None and top_prior.n_tokens:
        lyric_ids = LyricsTokenizer(top_prior.cfg.lyrics_vocab).encode(req.lyrics).tolist()
    codes, fixed_length = known_codes(models, req, n)
    hop_top = models.vqvae.hop_length(top)
    total = fixed_length or math.ceil(req.seconds * models.sample_rate / hop_top) * hop_top
    have = max((c.shape[1] * models.vqvae.hop_length(k) for k, c in codes.items()), default=0)
    if req.mode in ("continue", "primed") and have >= total:
        raise UserValueError(f"--seconds {req.seconds} is not longer than the {have / models.sample_rate:.1f} s given")
    levels = plan_levels(models, req)
    fractions = {}
    for level, frac in zip(levels, req.hop_fraction or []):
        fractions[level] = float(frac)
    scales = guidance_scales(models, levels, req.cfg_scale, req.cfg_inputs)
    spec = SongSpec(
        artists=artists, genres=genres, lyrics=[lyric_ids] * n, total_samples=total, temperature=req.temperature,
        top_k=req.top_k, top_p=req.top_p, hop_fractions=fractions, seed=req.seed, max_batch=req.max_batch,
        labels={k: [float(x) for x in v] for k, v in req.labels.items()}, level_labels=level_labels(models, req, n),
        cfg_scales=scales, cfg_inputs=list(req.cfg_inputs or []),
    )  # fmt: skip
    sampler = SongSampler(
        models, spec, levels, codes=codes, on_window=lambda s: atomic_torch_save(s.state(), state_path),
        on_tokens=progress, decode=req.decode,
    )  # fmt: skip
    if req.resume:
        sampler.restore(safe_load(state_path, "sampling state"))
    else:
        atomic_torch_save(sampler.state(), state_path)
    if totals is not None:
        totals(sampler.planned_tokens())
    t0 = time.perf_counter()
    result = sampler.run()
    elapsed = time.perf_counter() - t0
    for level, c in codes.items():  # levels given but not sampled (upsample: the top) are part of the song too
        result.setdefault(level, c)
    alignments = None
    top_prior = models.priors.get(top)
    if top_prior is not None and top_prior.n_tokens and lyric_ids and top in result:
        from jukebox_pl.sampling.alignment import lyric_alignment

        # characters of the page's lyrics = the cleaned text the tokenizer kept
        alignments = lyric_alignment(sampler, top, [len(lyric_ids)] * n)
    files = write_outputs(models, req, spec, result, artist_names, out, alignments)
    summary = {
        "out": str(out), "mode": req.mode, "seconds": total / models.sample_rate, "samples": n,
        "levels": [models.name(i) for i in sorted(result, reverse=True)], "sampling_s": elapsed, "files": files,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_outputs(models, req, spec, codes, artist_names, out: Path, alignments=None) -> dict:
    """WAVs per level and sample, the continuable codes file and the gallery page."""
    from jukebox_pl.sampling.gallery import write_gallery

    files: dict[str, list[str]] = {}
    for level in sorted(codes, reverse=True):
        name = models.name(level)
        if level not in models.vqvae.available():
            continue
        audio = models.vqvae.decode(codes[level], level)[..., : spec.total_samples].cpu().numpy()
        folder = out / name
        folder.mkdir(exist_ok=True)
        files[name] = []
        for i, clip in enumerate(audio):
            path = write_audio(folder / f"sample_{i}.wav", np.clip(clip, -1, 1), models.sample_rate)
            files[name].append(str(path.relative_to(out)))
    lyrics = req.lyrics
    top = models.priors.get(models.n_levels - 1)
    if lyrics and top is not None and top.n_tokens:  # the page shows exactly the characters the prior read
        tok = LyricsTokenizer(top.cfg.lyrics_vocab)
        lyrics = tok.decode(tok.encode(lyrics))
    n = len(artist_names)
    genres = [req.genres_each[i % len(req.genres_each)] for i in range(n)] if req.genres_each else [req.genres] * n
    labels = {"artists": artist_names, "genres": genres, "lyrics": lyrics}
    settings = {k: v for k, v in vars(req).items() if k not in ("out", "resume")}
    atomic_torch_save(
        {"codes": {models.name(k): v for k, v in codes.items()}, "labels": labels, "settings": settings,
         "spec": spec.to_dict(), "sample_rate": models.sample_rate},
        out / CODES_FILE,
    )  # fmt: skip
    write_gallery(out, files, labels, models.sample_rate, settings, alignments)
    return files
