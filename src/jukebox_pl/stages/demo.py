"""`make demo`: the whole toolkit on the built-in toy set — three VQ-VAE levels, three priors, one song per toy
artist with lyrics, the gallery, and a check that the songs sound like the artists they were asked for.

Every step is resumable: a finished stage is skipped, an interrupted one continues from its last checkpoint,
and an interrupted sampling run continues from its last window.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jukebox_pl.audio import read_audio, resample, to_mono, write_audio
from jukebox_pl.data.toy import NearestCentroid, rhythm_features, timbre_features
from jukebox_pl.training.checkpoints.read_write import load_any

LEVELS = ("top", "middle", "bottom")
# Chosen with bench/conditioning.py (3 sampling seeds, README): priors trained with label and lyrics dropout and
# sampled with guidance 2 are heard as the artist asked for more often than without (bottom level, codec-aware
# classifier: 4.7 of 8 against 4.0 at scale 1 and 3.3 for priors trained without dropout). Given before the
# user's overrides, which win.
DEMO_OVERRIDES = (
    *(f"prior.top.cfg_drop.{name}=0.2" for name in ("artist", "genre", "lyrics")),
    *(f"prior.{level}.cfg_drop.{name}=0.2" for level in ("middle", "bottom") for name in ("artist", "genre")),
)
DEMO_CFG_SCALE = 2.0
# Steps of each stage (trainer.max_steps on the command line sets every stage's instead): the toy VQ-VAE levels
# reach their plateau by 400, the priors need longer.
DEMO_STEPS = {"vqvae": 400, "prior": 1200}


def stage_state(run: Path, stage: str) -> int | None:
    """The global step of a stage's last checkpoint (None when it never started)."""
    last = run / stage / "checkpoints" / "last.ckpt"
    return load_any(last).get("global_step") if last.is_file() else None


def train_stages(run: Path, data: str, preset: str, overrides: list[str], log) -> dict[str, float]:
    from jukebox_pl.config import load_config
    from jukebox_pl.config.typed import run_config
    from jukebox_pl.stages.train_prior import train_prior
    from jukebox_pl.stages.train_vqvae import train_vqvae

    cfg = run_config(load_config(preset, overrides))
    asked = any(o.split("=", 1)[0].lstrip("+") == "trainer.max_steps" for o in overrides)
    times = {}
    plan = [(kind, lv, cfg.trainer.max_steps if asked else DEMO_STEPS[kind]) for kind in DEMO_STEPS for lv in LEVELS]
    for kind, level, steps in plan:
        stage = f"{kind}_{level}"
        done = stage_state(run, stage)
        if done is not None and steps is not None and done >= steps:
            log(f"{stage}: already trained ({done} steps), skipped")
            continue
        log(f"{stage}: {'resuming at step ' + str(done) if done is not None else 'training'} to {steps} steps")
        t0 = time.perf_counter()
        train = train_vqvae if kind == "vqvae" else train_prior
        train(run, level, preset, data, [f"trainer.max_steps={steps}", *overrides], resume=done is not None)
        times[stage] = time.perf_counter() - t0
    return times


def toy_songs(toy: Path) -> list[dict]:
    with open(toy / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def first_genre(row: dict) -> str:
    return row["genre"].split(";")[0]


def artist_classifier(toy: Path, sr: int, seconds: float, codec=None) -> NearestCentroid:
    """Nearest-centroid on timbre features of the toy set's real songs, cut into clips as long as the samples.

    With `codec` (a VQ-VAE level), the clips first go through it: the classifier then knows the codec's own
    colouring, so what it measures is whether the prior chose the artist's sound, not the codec's fidelity."""
    return clip_classifier(toy, sr, seconds, codec)


def genre_classifier(toy: Path, sr: int, seconds: float, codec=None) -> NearestCentroid:
    """The same on rhythm features (onset autocorrelation over tempi), labelled with each song's first genre:
    the toy genres differ in tempo, metre and swing."""
    return clip_classifier(toy, sr, seconds, codec, rhythm_features, first_genre)


def song_audio(toy: Path, row: dict, sr: int) -> np.ndarray:
    """One toy song (a metadata row) as mono samples at `sr`."""
    audio, rate = read_audio(toy / "audio" / row["path"])
    return np.ascontiguousarray(to_mono(resample(audio, rate, sr))[0])


def through_codec(codec, mono: np.ndarray) -> np.ndarray:
    """`mono` encoded and decoded by `codec` (a VQ-VAE level), trimmed to its length."""
    with torch.no_grad():
        return codec.decode(codec.encode(torch.from_numpy(mono).reshape(1, 1, -1)))[0, 0, : len(mono)].numpy()


def clip_classifier(toy: Path, sr: int, seconds: float, codec=None, features=None, label=None) -> NearestCentroid:
    """Nearest-centroid on `features` (timbre by default) of clips of the real songs, labelled by `label(row)`
    (the artist by default)."""
    features, label = features or timbre_features, label or (lambda row: row["artist"])
    feats, labels = [], []
    clip = int(seconds * sr)
    for row in toy_songs(toy):
        mono = song_audio(toy, row, sr)
        if codec is not None:
            mono = through_codec(codec, mono)
        for start in range(0, max(1, len(mono) - clip + 1), clip):
            feats.append(features(mono[start : start + clip], sr))
            labels.append(label(row))
    return NearestCentroid().fit(np.stack(feats), labels)


def resynthesised(toy: Path, sr: int, seconds: float, codec) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """The first `seconds` of every toy song (mono, at `sr`), the same re-synthesised by `codec` (a VQ-VAE level),
    and the songs' metadata rows."""
    songs = toy_songs(toy)
    clips = [np.ascontiguousarray(song_audio(toy, row, sr)[: int(seconds * sr)]) for row in songs]
    return clips, [through_codec(codec, c) for c in clips], songs


def ceiling(heard: list[np.ndarray], truth: list[str], sr: int, classifier: NearestCentroid, features=None) -> int:
    """How many of the real songs re-synthesised by the codec (`heard`) `classifier` still names right: generated
    songs decoded by the same codec cannot be recognised more often than real ones."""
    features = features or timbre_features
    return sum(classifier.predict(features(h, sr))[0] == t for h, t in zip(heard, truth))


def recognition(
    samples: Path, asked: list[str], classifier: NearestCentroid, level: str = "bottom", features=None
) -> dict:
    """What `classifier` hears in each sampled song of one level (features: timbre by default)."""
    features = features or timbre_features
    predicted = []
    for i, _ in enumerate(asked):
        audio, sr = sf.read(samples / level / f"sample_{i}.wav", dtype="float32")
        predicted.append(classifier.predict(features(audio, sr))[0])
    hits = sum(p == a for p, a in zip(predicted, asked))
    return {"asked": asked, "heard": predicted, "recognised": hits, "of": len(asked)}


def reference_clips(toy: Path, out: Path, artists, genres, sr: int, seconds: float) -> list[str]:
    """For each sampled song, a real clip of the toy song by the asked artist in the asked genre (the training
    data), `seconds` long at the run's rate, written once under `out/reference/`; paths relative to `out`."""
    songs, paths = toy_songs(toy), []
    for artist, genre in zip(artists, genres):
        row = next(r for r in songs if r["artist"] == artist and first_genre(r) == genre)
        name = f"reference/{artist.lower().replace(' ', '_')}_{genre}.wav"
        if not (out / name).is_file():
            write_audio(out / name, song_audio(toy, row, sr)[None, : int(seconds * sr)], sr)
        paths.append(name)
    return paths


def requested(songs: list[dict], per_artist: int) -> tuple[list[str], list[str]]:
    """The demo's songs: every toy artist `per_artist` times, each time in another of the toy genres."""
    artists = sorted({s["artist"] for s in songs})
    genres = sorted({first_genre(s) for s in songs})
    asked = [(a, genres[(i + k) % len(genres)]) for k in range(per_artist) for i, a in enumerate(artists)]
    return [a for a, _ in asked], [g for _, g in asked]


def summary_rows(run: Path) -> list[tuple[str, str, str]]:
    """(stage, last training figures, validation figures) from each stage's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for kind in ("vqvae", "prior"):
        for level in LEVELS:
            logs = run / f"{kind}_{level}" / "logs"
            if not logs.is_dir():
                continue
            events = EventAccumulator(str(logs)).Reload()
            tags = set(events.Tags()["scalars"])

            def last(tag, fmt="{:.3f}", tags=tags, events=events):
                return fmt.format(events.Scalars(tag)[-1].value) if tag in tags else "-"

            if kind == "vqvae":
                train = f"loss {last('train/loss')}, {last('codebook/codes_in_batch', '{:.0f}')} codes in a batch"
                val = (
                    f"SC {last('val/spectral_convergence_db', '{:.1f} dB')}, {last('val/codes_used', '{:.0f}')} codes"
                    f" (perplexity {last('val/codebook_perplexity', '{:.0f}')})"
                )
            else:
                train = f"music {last('train/music_bits_per_token', '{:.2f}')} bits/token"
                if "train/lyric_bits_per_token" in tags:
                    train += f", lyrics {last('train/lyric_bits_per_token', '{:.2f}')}"
                val = f"music {last('val/music_bits_per_token', '{:.2f}')} bits/token"
            rows.append((f"{kind}_{level}", train, val))
    return rows


def run_demo(
    run: str,
    data: str,
    toy: str,
    preset: str = "tiny",
    seconds: float = 6.0,
    overrides=(),
    per_artist: int = 2,
    log=print,
    cfg_scale: float = DEMO_CFG_SCALE,
) -> dict:
    from rich.console import Console
    from rich.table import Table

    from jukebox_pl.sampling.gallery import annotate_gallery
    from jukebox_pl.sampling.models import SamplingModels
    from jukebox_pl.stages.sample import SampleRequest, sample_song

    t0 = time.perf_counter()
    run_dir, toy_dir = Path(run), Path(toy)
    times = train_stages(run_dir, data, preset, [*DEMO_OVERRIDES, *overrides], log)
    songs = toy_songs(toy_dir)
    artists, genres = requested(songs, per_artist)
    lyrics = next(s["lyrics"] for s in songs if s["lyrics"].strip())
    out = run_dir / "samples"
    models = SamplingModels.from_run(run_dir)
    if not (out / "summary.json").is_file():
        resume = (out / "state.pt").is_file()
        log(
            f"sampling {per_artist} x {seconds:.0f} s songs per artist ({', '.join(sorted(set(artists)))})"
            + (" (resuming)" if resume else "")
        )
        t1 = time.perf_counter()
        req = SampleRequest(out=str(out), artists=artists, genres_each=[[g] for g in genres], lyrics=lyrics,
                            seconds=seconds, resume=resume, seed=0,
                            cfg_scale=[cfg_scale] if cfg_scale != 1.0 else None)  # fmt: skip
        sample_song(models, req)
        times["sampling"] = time.perf_counter() - t1
    plain_judge = artist_classifier(toy_dir, models.sample_rate, seconds)
    codec_judge = artist_classifier(toy_dir, models.sample_rate, seconds, models.vqvae.level(0))
    check, codec = recognition(out, artists, plain_judge), recognition(out, artists, codec_judge)
    genre = recognition(out, genres, genre_classifier(toy_dir, models.sample_rate, seconds), features=rhythm_features)
    _, real_heard, real_rows = resynthesised(toy_dir, models.sample_rate, seconds, models.vqvae.level(0))
    real_artists = [r["artist"] for r in real_rows]
    limit = {"of": len(real_rows), "plain": ceiling(real_heard, real_artists, models.sample_rate, plain_judge),
             "codec": ceiling(real_heard, real_artists, models.sample_rate, codec_judge)}  # fmt: skip
    heard = [{"artist (timbre)": check["heard"][i], "artist (timbre, heard through the codec)": codec["heard"][i],
              "genre (rhythm)": genre["heard"][i]} for i in range(len(artists))]  # fmt: skip
    refs = reference_clips(toy_dir, out, artists, genres, models.sample_rate, seconds)
    annotate_gallery(out, heard, refs)
    console = Console()
    table = Table(title="jukebox-pl demo")
    for col in ("stage", "training (last step)", "validation"):
        table.add_column(col)
    for row in summary_rows(run_dir):
        table.add_row(*row)
    console.print(table)
    for stage, secs in times.items():
        console.print(f"  {stage}: {secs:.0f} s")
    console.print(
        f"artist check (nearest-centroid timbre classifier trained on the toy set's real clips): "
        f"{check['recognised']}/{check['of']} generated songs heard as the artist asked for "
        f"(chance {1 / len(set(artists)):.0%}); asked {check['asked']}, heard {check['heard']}"
    )
    console.print(
        f"  the same check with the classifier trained on the real clips passed through the bottom VQ-VAE level: "
        f"{codec['recognised']}/{codec['of']}; heard {codec['heard']}"
    )
    console.print(
        f"  their ceiling: the toy set's own songs re-synthesised by the bottom VQ-VAE level are heard as their "
        f"artist {limit['plain']}/{limit['of']} (plain) and {limit['codec']}/{limit['of']} (through the codec)"
    )
    console.print(
        f"genre check (the same on rhythm features): {genre['recognised']}/{genre['of']} heard in the genre asked "
        f"for (chance {1 / len(set(genres)):.0%}); asked {genre['asked']}, heard {genre['heard']}"
    )
    console.print(f"total {time.perf_counter() - t0:.0f} s; the gallery: {(out / 'index.html').resolve()}")
    return {"times": times, "check": check, "codec_check": codec, "genre_check": genre, "ceiling": limit,
            "gallery": str(out / "index.html")}  # fmt: skip
