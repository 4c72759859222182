"""The sample gallery: `index.html` beside the WAVs, with a player, a spectrogram and the labels per sample.

Everything the page needs sits in the output folder (relative links, inline CSS and script), so it works
offline, copied elsewhere, or served by any static file server. When an alignment of lyrics to time is given,
the lyric characters light up as the top level's audio plays. Per song the page says what was asked (artist,
genres, lyrics, guidance) and, once `annotate_gallery` adds them, what classifiers heard and a real clip of the
asked-for artist for an A/B listen. Spectrograms are drawn in a perceptual colour map (magma) with time and
frequency axes. The inputs are kept in `gallery.json`, so the page can be rewritten with more.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from jukebox_pl.training.callbacks import spectrogram_image

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; color: #222; }
.sample { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 1em; margin-bottom: 1.5em; }
.level { margin: 0.8em 0; } .level .name { font-weight: bold; margin-bottom: 0.2em; }
audio { display: block; width: 100%; max-width: 900px; } .labels, .heard { color: #555; margin: 0.3em 0; }
.lyrics { white-space: pre-wrap; } .lyrics span.sung { background: #ffe08a; }
.spec { display: grid; grid-template-columns: 3.5em minmax(0, 900px); grid-template-rows: 120px 1.4em;
        margin-top: 0.3em; font-size: 0.75em; color: #555; }
.spec img { grid-column: 2; grid-row: 1; width: 100%; height: 120px; display: block; }
.yaxis { grid-column: 1; grid-row: 1; position: relative; } .xaxis { grid-column: 2; grid-row: 2; position: relative; }
.yaxis span { position: absolute; right: 0.4em; transform: translateY(-50%); }
.xaxis span { position: absolute; top: 0.2em; transform: translateX(-50%); }
.yaxis .unit, .xaxis .unit { color: #999; }
"""

SCRIPT = """
document.querySelectorAll('.sample').forEach(function (sample) {
  var align = JSON.parse(sample.dataset.alignment || 'null');
  var chars = sample.querySelectorAll('.lyrics span');
  var audio = sample.querySelector('audio[data-level="top"]') || sample.querySelector('audio');
  if (!align || !audio) return;
  audio.addEventListener('timeupdate', function () {
    var upto = -1;
    for (var i = 0; i < align.times.length && align.times[i] <= audio.currentTime; i++) upto = align.chars[i];
    chars.forEach(function (c, j) { c.classList.toggle('sung', j <= upto); });
  });
});
var players = document.querySelectorAll('audio'), loaded = 0;
players.forEach(function (a) {
  a.addEventListener('loadedmetadata', function () { document.body.dataset.playable = ++loaded; });
  a.addEventListener('error', function () {
    document.body.dataset.broken = (document.body.dataset.broken || '') + a.src + ' ';
  });
});
document.body.dataset.players = players.length;
document.body.dataset.ready = 'yes';
"""


# matplotlib's "magma" sampled at 9 evenly spaced points (perceptually uniform; dark = quiet), interpolated
# linearly in between: the spectrograms need only this one map, not matplotlib.
MAGMA = np.array([
    [0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129], [181, 54, 122], [229, 80, 100], [251, 135, 97],
    [254, 194, 135], [252, 253, 191],
], dtype=np.float32)  # fmt: skip


def colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB bytes through the magma map."""
    x = np.clip(values, 0.0, 1.0) * (len(MAGMA) - 1)
    lo = np.minimum(x.astype(np.int64), len(MAGMA) - 2)
    t = (x - lo)[..., None]
    return ((1 - t) * MAGMA[lo] + t * MAGMA[lo + 1]).round().astype(np.uint8)


def spectrogram_png(wav: Path, png: Path) -> tuple[Path, float, int]:
    """The spectrogram of a WAV as a magma-coloured PNG; returns (png, seconds, sample rate) for its axes."""
    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    img = spectrogram_image(torch.from_numpy(audio.mean(1)), n_fft=512, hop=128)
    Image.fromarray(colour(img[0].numpy())).save(png)
    return png, len(audio) / sr, sr


def axes(seconds: float, sample_rate: int) -> str:
    """Tick labels around a spectrogram: kHz up the side (linear, 0 at the bottom), seconds along the foot."""
    top = sample_rate / 2000
    step = next(s for s in (1, 2, 5, 10, 20) if top / s <= 5)
    ys = (
        "".join(f'<span style="top:{100 * (1 - k / top):.1f}%">{k:g}</span>' for k in np.arange(0, top + 1e-9, step))
        + '<span class="unit" style="top:-8%">kHz</span>'
    )
    tick = next(s for s in (0.5, 1, 2, 5, 10, 30, 60) if seconds / s <= 8)
    xs = (
        "".join(f'<span style="left:{100 * t / seconds:.1f}%">{t:g}</span>' for t in np.arange(0, seconds + 1e-9, tick))
        + '<span class="unit" style="left:calc(100% + 1em)">s</span>'
    )
    return f'<div class="yaxis">{ys}</div><div class="xaxis">{xs}</div>'


def level_block(out: Path, name: str, wav: str, what: str) -> str:
    """A level's (or a reference clip's) name, player and spectrogram with axes."""
    png, seconds, sr = spectrogram_png(out / wav, out / Path(wav).with_suffix(".png"))
    return (
        f'<div class="level"><div class="name">{html.escape(name)}</div>'
        f'<audio controls preload="metadata" data-level="{html.escape(name)}" src="{html.escape(wav)}"></audio>'
        f'<div class="spec"><img alt="spectrogram of {html.escape(what)}" '
        f'src="{html.escape(str(png.relative_to(out)))}">{axes(seconds, sr)}</div></div>'
    )


def write_gallery(
    out: Path,
    files: dict[str, list[str]],
    labels: dict,
    sample_rate: int,
    settings: dict,
    alignments: list[dict] | None = None,
    heard: list[dict[str, str]] | None = None,
    references: list[str | None] | None = None,
) -> Path:
    """`files`: level name -> WAV paths relative to `out` (one per sample, top level first). `heard`: per
    sample, what classifiers made of it ({"artist (timbre)": name, ...}); `references`: per sample, a WAV of
    real music of the asked-for artist (relative to `out`), played beside the sample."""
    out = Path(out)
    kept = {"files": files, "labels": labels, "sample_rate": sample_rate, "settings": settings,
            "alignments": alignments, "heard": heard, "references": references}  # fmt: skip
    (out / "gallery.json").write_text(json.dumps(kept, default=str))
    n = max((len(v) for v in files.values()), default=0)
    parts = []
    for i in range(n):
        artist = labels["artists"][i] if i < len(labels["artists"]) else "unknown"
        asked = labels.get("genres") or []
        asked = asked[i] if asked and isinstance(asked[0], list) else asked  # per sample, or one list for all
        genres = ", ".join(asked) or "-"
        align = alignments[i] if alignments and i < len(alignments) else None
        rows = [level_block(out, level, paths[i], f"{level} sample {i}") for level, paths in files.items()
                if i < len(paths)]  # fmt: skip
        if references and i < len(references) and references[i]:
            rows.append(level_block(out, f"real {artist} (training data)", references[i], f"real {artist}"))
        lyrics = labels.get("lyrics") or ""
        lyric_html = "".join(f"<span>{html.escape(c)}</span>" for c in lyrics)
        guidance = settings.get("cfg_scale") or [1.0]
        said = heard[i] if heard and i < len(heard) else {}
        verdicts = " &middot; ".join(f"{html.escape(k)}: <b>{html.escape(v)}</b>" for k, v in said.items())
        parts.append(
            f'<div class="sample" id="sample-{i}" data-alignment="{html.escape(json.dumps(align))}">'
            f'<h2>Sample {i}</h2><p class="labels">asked: artist: <b>{html.escape(artist)}</b> &middot; genres: '
            f"{html.escape(genres)} &middot; lyrics: {'yes' if lyrics else 'none'} &middot; guidance: "
            f"{html.escape(', '.join(f'{g:g}' for g in guidance))}</p>"
            + (f'<p class="heard">heard: {verdicts}</p>' if verdicts else "")
            + "".join(rows)
            + (f'<p class="lyrics">{lyric_html}</p>' if lyrics else "")
            + "</div>"
        )
    settings_text = html.escape(json.dumps(settings, indent=1, default=str))
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>jukebox-pl samples</title>'
        f"<style>{STYLE}</style></head><body><h1>jukebox-pl samples</h1>"
        f"<p>{n} sample(s), {sample_rate} Hz. Levels: {', '.join(files)}.</p>{''.join(parts)}"
        f"<details><summary>settings</summary><pre>{settings_text}</pre></details>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page)
    return path


def annotate_gallery(out: Path, heard=None, references=None) -> Path:
    """Rewrite `out/index.html` with what classifiers heard and reference clips added (see `write_gallery`)."""
    kept = json.loads((Path(out) / "gallery.json").read_text())
    kept["heard"] = heard if heard is not None else kept.get("heard")
    kept["references"] = references if references is not None else kept.get("references")
    return write_gallery(Path(out), **kept)
