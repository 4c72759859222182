"""The gallery a listener can judge: what was asked and heard per song, a real clip beside it, spectrograms in
colour with time and frequency axes; checked in headless chromium."""

import re

import numpy as np
import soundfile as sf
from PIL import Image
from test_sample_cli import page_in_browser

from jukebox_pl.sampling.gallery import annotate_gallery, colour, write_gallery

SR = 22050


def tone(path, freq: float, seconds: float = 2.0):
    t = np.arange(int(seconds * SR)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t), SR)


def test_the_page_says_what_was_asked_and_heard_and_plays_a_real_clip_beside_each_song(tmp_path):
    files = {"top": ["top/sample_0.wav", "top/sample_1.wav"], "bottom": ["bottom/sample_0.wav", "bottom/sample_1.wav"]}
    for i, level in enumerate(("top", "bottom")):
        for k in range(2):
            tone(tmp_path / level / f"sample_{k}.wav", 440.0 * (1 + i + k))
    tone(tmp_path / "reference" / "organ_march.wav", 220.0)
    labels = {"artists": ["Organ Ondine", "Reed Rasmus"], "genres": [["march"], ["waltz", "folk"]], "lyrics": "la"}
    write_gallery(tmp_path, files, labels, SR, {"cfg_scale": [2.0], "seed": 0})
    first = (tmp_path / "index.html").read_text()
    assert "heard:" not in first and "real Organ Ondine" not in first
    heard = [{"artist (timbre)": "Organ Ondine", "genre (rhythm)": "swing"},
             {"artist (timbre)": "Bell Bruno", "genre (rhythm)": "waltz"}]  # fmt: skip
    annotate_gallery(tmp_path, heard, ["reference/organ_march.wav", None])
    dom, log = page_in_browser(tmp_path / "index.html")
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="yes"' in body and 'data-players="5"' in body and 'data-playable="5"' in body, body
    assert "broken" not in body and "CONSOLE" not in log, log[-2000:]
    text = re.sub(r"<[^>]+>", "", dom)
    assert "asked: artist: Organ Ondine · genres: march · lyrics: yes · guidance: 2" in text
    assert "genres: waltz, folk" in text
    assert "heard: artist (timbre): Organ Ondine · genre (rhythm): swing" in text
    assert "heard: artist (timbre): Bell Bruno" in text and "real Organ Ondine (training data)" in text
    # axes: kHz up to the Nyquist frequency (11.025 kHz: ticks 0..10), seconds along the 2 s clips
    assert dom.count('class="yaxis"') == 5 and "kHz" in text and ">10<" in dom and ">2<" in dom
    # the spectrograms are coloured: a quiet pixel is dark purple-black, the tone's line bright
    png = np.asarray(Image.open(tmp_path / "top" / "sample_0.png"))
    assert png.ndim == 3 and png.shape[2] == 3 and (png[..., 0] != png[..., 2]).any()


def test_the_colour_map_runs_dark_to_bright():
    rgb = colour(np.linspace(0, 1, 50)).astype(int)
    lightness = rgb @ np.array([0.299, 0.587, 0.114])
    assert tuple(rgb[0]) == (0, 0, 4) and tuple(rgb[-1]) == (252, 253, 191)
    assert (np.diff(lightness) > 0).all()  # monotonic: louder is always lighter
