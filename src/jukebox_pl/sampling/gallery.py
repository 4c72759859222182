"""The sample gallery: `index.html` beside the WAVs, with a player, a spectrogram and the labels per sample.

Everything the page needs sits in the output folder (relative links, inline CSS and script), so it works
offline, copied elsewhere, or served by any static file server. When an alignment of lyrics to time is given,
the lyric characters light up as the top level's audio plays.
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
.level { margin: 0.6em 0; } .level img { display: block; width: 100%; max-width: 900px; height: 120px; }
audio { width: 100%; max-width: 900px; } .labels { color: #555; } .lyrics { white-space: pre-wrap; }
.lyrics span.sung { background: #ffe08a; }
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


def spectrogram_png(wav: Path, png: Path) -> Path:
    audio, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    img = spectrogram_image(torch.from_numpy(audio.mean(1)), n_fft=512, hop=128)
    Image.fromarray((img[0].numpy() * 255).astype(np.uint8)).save(png)
    return png


def write_gallery(
    out: Path,
    files: dict[str, list[str]],
    labels: dict,
    sample_rate: int,
    settings: dict,
    alignments: list[dict] | None = None,
) -> Path:
    """`files`: level name -> WAV paths relative to `out` (one per sample, top level first)."""
    out = Path(out)
    n = max((len(v) for v in files.values()), default=0)
    parts = []
    for i in range(n):
        artist = labels["artists"][i] if i < len(labels["artists"]) else "unknown"
        asked = labels.get("genres") or []
        asked = asked[i] if asked and isinstance(asked[0], list) else asked  # per sample, or one list for all
        genres = ", ".join(asked) or "-"
        align = alignments[i] if alignments and i < len(alignments) else None
        rows = []
        for level, paths in files.items():
            if i >= len(paths):
                continue
            png = spectrogram_png(out / paths[i], out / Path(paths[i]).with_suffix(".png"))
            rows.append(
                f'<div class="level"><b>{html.escape(level)}</b>'
                f'<audio controls preload="metadata" data-level="{html.escape(level)}" '
                f'src="{html.escape(paths[i])}"></audio>'
                f'<img alt="spectrogram of {html.escape(level)} sample {i}" '
                f'src="{html.escape(str(png.relative_to(out)))}"></div>'
            )
        lyrics = labels.get("lyrics") or ""
        lyric_html = "".join(f"<span>{html.escape(c)}</span>" for c in lyrics)
        parts.append(
            f'<div class="sample" id="sample-{i}" data-alignment="{html.escape(json.dumps(align))}">'
            f'<h2>Sample {i}</h2><p class="labels">artist: <b>{html.escape(artist)}</b> &middot; genres: '
            f"{html.escape(genres)}</p>{''.join(rows)}"
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
