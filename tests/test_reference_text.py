"""Lyrics, lyric windows, timing bins and merged-sequence sampling behave exactly as the reference's.

Expectations are written out by hand from the reference's code (`jukebox/data/text_processor.py` `TextProcessor`,
`jukebox/data/labels.py` `get_relevant_lyric_tokens` / `Labeller.set_y_lyric_tokens`,
`jukebox/prior/conditioners.py` `RangeEmbedding`, `jukebox/prior/prior.py` `prior_postprocess`,
`jukebox/prior/autoregressive.py` `primed_sample`, `jukebox/transformer/ops.py` `filter_logits`); where a check
runs over many values, the reference's arithmetic is re-stated here from its formulas, not imported.
"""

from __future__ import annotations

import math
import random
from importlib.metadata import version

import numpy as np
import pytest
import torch

from jukebox_pl.config import load_config
from jukebox_pl.lyrics import LyricsTokenizer, lyric_window
from jukebox_pl.prior.builtin_conditioners import LabelConditioner, RangeEmbedding
from jukebox_pl.prior.logit_filters import filter_logits
from jukebox_pl.prior.model import Conditioning, JukeboxPrior

# -- cleaning --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, v2, v3",
    [
        ("em — dash", "em -- dash", "em -- dash"),  # unidecode writes two hyphens
        ("¿ ¡ × © ™ €", "? ! x (c) (tm) EUR", "? ! x (c) (tm) EUR"),
        ("Café “naïve” ß", 'Cafe "naive" ss', 'Cafe "naive" ss'),
        ("«Ça va?» …", "Ca va? ...", "Ca va? ..."),  # '<<' '>>' are written, then filtered out
        ("Ελληνικά", "Ellenika", "Ellenika"),
        ("Привет мир", "Privet mir", "Privet mir"),
        ("日本語の歌", "Ri Ben Yu noGe ", "Ri Ben Yu noGe "),  # CJK: one syllable and a space each
        ("ラーメン", "ramen", "ramen"),
        ("שלום", "SHlvm", "SHlvm"),
        ("नमस्ते", "nmste", "nmste"),
        ("สวัสดี", "swasdii", "swasdii"),
        ("C++ ¼", "C++  14 ", "C  14 "),  # v3 has no '+'; '¼' -> ' 1/4 ', '/' dropped
        ("tab\there\n", "tab\there\n", "tab\there\n"),
        ("I ♥ you 😀", "I  you ", "I  you "),  # no transliteration: dropped
    ],
)
def test_cleaning_transliterates_then_filters(text, v2, v3):
    assert LyricsTokenizer("v2").clean(text) == v2
    assert LyricsTokenizer("v3").clean(text) == v3


def test_backslashes_become_line_breaks_after_transliteration():
    tok = LyricsTokenizer("v2")
    assert tok.clean("one\\two") == "one\ntwo"
    # the fullwidth reverse solidus is transliterated to a backslash first, so it becomes a line break too
    assert tok.clean("one\uff3ctwo") == "one\ntwo"


def test_unidecode_is_the_reference_release():
    """The reference pins unidecode 1.1.1; later releases spell ~4k characters differently (these among them)."""
    assert version("unidecode") == "1.1.1"
    tok = LyricsTokenizer("v2")
    assert tok.clean("ー") == ""  # 1.4: '-'
    assert tok.clean("♥") == ""  # 1.4: 'hearts'
    assert tok.clean("\u0241") == "[?]"  # 1.1.1 marks characters it has no entry for; the brackets survive
    assert tok.clean("ח") == "KH"  # 1.4: 'H'


def test_token_ids_are_the_reference_vocabulary_positions():
    # ids: 'A'..'Z' 1-26, 'a'..'z' 27-52, '0'..'9' 53-62, then . , : ; ! ? - (63-69), then v2: + ' " ( ) [ ]
    # space tab newline (70-79); v3 has no '+': ' " ( ) [ ] space tab newline (70-78). 0 = unknown.
    assert LyricsTokenizer("v2").encode("Hi, 2+2!\n").tolist() == [8, 35, 64, 77, 55, 70, 55, 67, 79]
    assert LyricsTokenizer("v3").encode("Hi, 2+2!\n").tolist() == [8, 35, 64, 76, 55, 55, 67, 78]
    assert LyricsTokenizer("v2").encode("'\"()[] \t").tolist() == [71, 72, 73, 74, 75, 76, 77, 78]
    assert LyricsTokenizer("v3").encode("'\"()[] \t").tolist() == [70, 71, 72, 73, 74, 75, 76, 77]
    assert LyricsTokenizer("v2").encode("Ωmega").tolist() == LyricsTokenizer("v2").encode("Omega").tolist()
    assert LyricsTokenizer("v2").decode([0, 8, 35, 0]) == "Hi"  # 0 decodes to nothing


# -- lyric windows ---------------------------------------------------------------------------------------


def reference_window(full: list[int], n_tokens: int, total, offset, duration) -> tuple[list[int], int]:
    """The reference's window, re-stated: left-pad short lyrics; else centre int(len * (offset + duration / 2)
    / total), kept n_tokens // 2 from both ends, window [centre - n_tokens // 2, centre + n_tokens // 2).
    Python numbers give its training arithmetic; 0-dim int64 tensors its sampling arithmetic."""
    if len(full) < n_tokens:
        return [0] * (n_tokens - len(full)) + full, len(full) - n_tokens
    centre = int(len(full) * (offset + duration / 2.0) / total)
    centre = min(max(centre, n_tokens // 2), len(full) - n_tokens // 2)
    return full[centre - n_tokens // 2 : centre + n_tokens // 2], centre - n_tokens // 2


def test_short_lyrics_are_left_padded():
    window, start = lyric_window(np.arange(1, 6), 8, total_length=100, offset=0, duration=10)
    assert window.tolist() == [0, 0, 0, 1, 2, 3, 4, 5] and start == -3
    same, start = lyric_window(np.arange(1, 9), 8, total_length=100, offset=90, duration=10)
    assert same.tolist() == list(range(1, 9)) and start == 0


def test_window_centre_and_clamping_by_hand():
    tokens = np.arange(1000)
    # 1000 * (4500 + 1000 / 2) / 10000 = 500 -> [450, 550)
    assert lyric_window(tokens, 100, 10_000, 4_500, 1_000)[1] == 450
    # 1000 * (0 + 50) / 10000 = 5 -> clamped to 50 -> [0, 100)
    assert lyric_window(tokens, 100, 10_000, 0, 100)[1] == 0
    # 1000 * (9900 + 50) / 10000 = 995 -> clamped to 950 -> [900, 1000)
    window, start = lyric_window(tokens, 100, 10_000, 9_900, 100)
    assert start == 900 and window[-1] == 999
    # 1000 * (3 + 0.5) / 7 = 500.0 -> [495, 505); truncation, not rounding: 1000 * (2 + 1) / 7 = 428.57 -> 428
    assert lyric_window(tokens, 10, 7, 3, 1)[1] == 495
    assert lyric_window(tokens, 10, 7, 2, 2)[1] == 423


def test_sampling_windows_use_the_references_float32_arithmetic():
    """2598 characters, a 423 s song (18658908 samples), a 5B top window (1048576 samples) at 15728640:
    2598 * (15728640 + 524288) / 18658908 = 2262.99990 -> 2262 in float64 (training labels), but in float32
    the product 42225106944 rounds to 42225106944 (a multiple of 4096) and the quotient 2262.9999 rounds to
    2263.0 (spacing 1/8192) -> 2263 (sampling labels, int64 tensors). Windows of 384 start 192 earlier."""
    tokens = np.arange(2598)
    args = (384, 18_658_908, 15_728_640, 1_048_576)
    assert lyric_window(tokens, *args)[1] == 2070
    assert lyric_window(tokens, *args, float32=True)[1] == 2071
    as_tensors = [torch.tensor(v, dtype=torch.int64) for v in args[1:]]
    assert reference_window(tokens.tolist(), args[0], *args[1:])[1] == 2070
    assert reference_window(tokens.tolist(), args[0], *as_tensors)[1] == 2071


def test_windows_equal_the_references_over_many_songs():
    rng = random.Random(0)
    for _ in range(3000):
        n_tokens = rng.choice([384, 512, 16])
        full = list(range(1, rng.randint(1, 3000)))
        total = rng.randint(17 * 44100, 600 * 44100)
        duration = rng.choice([8192 * 128, 6144 * 128, 1_000])
        offset = rng.randrange(total)
        for float32, numbers in ((False, (total, offset, duration)), (True, None)):
            numbers = numbers or [torch.tensor(v, dtype=torch.int64) for v in (total, offset, duration)]
            want, want_start = reference_window(full, n_tokens, *numbers)
            got, start = lyric_window(np.array(full), n_tokens, total, offset, duration, float32=float32)
            assert got.tolist() == want and start == want_start, (n_tokens, len(full), total, offset, duration)


# -- timing ----------------------------------------------------------------------------------------------


def test_range_bins_normalise_before_scaling():
    """float32 1.8 is 1.79999995: the reference's bins * ((x - 0) / 3) = 10 * 0.59999998 = 5.9999998 -> bin 5;
    (bins * x) / 3 rounds 17.9999995 to 18.0 first -> bin 6."""
    r = RangeEmbedding(n_time=1, bins=10, low=0.0, high=3.0, width=1)
    with torch.no_grad():
        r.emb.weight.copy_(torch.arange(10.0)[:, None])
    x = torch.tensor([1.8])
    assert (10 * x / 3.0).floor().item() == 6  # the other order, for contrast
    assert r(x)[0, 0, 0].item() == 5.0
    assert r.bin_of(torch.tensor([0.0, 2.9999998])).tolist() == [0, 9]


def test_window_end_is_summed_in_int64_before_float32():
    """offset 16777217 (2^24 + 1) + length 1: the reference adds in int64 (16777218, exact in float32);
    adding after float32 would lose the 1 twice (16777216)."""
    cond = LabelConditioner(2, 2, 4, n_time=2, max_genres=1, t_bins=8, sample_rate=1, min_duration=1,
                            max_duration=2**26)  # fmt: skip
    seen = []
    cond.absolute_pos_emb.register_forward_pre_hook(lambda module, args: seen.append(args))
    cond(torch.tensor([1]), torch.tensor([[1]]), torch.tensor([2**25]), torch.tensor([2**24 + 1]), 1)
    start, end = seen[0]
    assert start.item() == 2**24 and end.item() == 2**24 + 2


# -- merged-sequence sampling ----------------------------------------------------------------------------

N_VOCAB, BINS, N_TOKENS = 80, 32, 16


def merged_prior() -> JukeboxPrior:
    cfg = load_config("tiny").prior["top"]
    cfg.merge_with({"n_ctx": 64, "blocks": 10, "n_tokens": N_TOKENS, "width": 32, "lyrics": "merged",
                    "attn_order": 12, "depth": 16})  # fmt: skip
    torch.manual_seed(0)
    return JukeboxPrior(cfg, 2, 3, BINS, 128, 22050, y_bins=(4, 6)).eval()


def scripted(model: JukeboxPrior, rows) -> list:
    """Replace the transformer's incremental step by logits from `rows(position) -> (V,)` for the position
    being predicted; returns the list the fed-back tokens are recorded in."""
    fed = []

    def step(prev, start, n, *conditioning):
        if prev is not None:
            fed.append(prev.clone())
        position = start + (1 if prev is None else prev.shape[1]) - 1
        return rows(position).expand(n, 1, -1).clone()

    model.prior.step = step
    return fed


def no_conditioning(n: int) -> Conditioning:
    return Conditioning(None, None, None, torch.full((n, N_TOKENS), 7, dtype=torch.long))


def test_merged_greedy_draws_from_characters_and_codes():
    model = merged_prior()
    # music position -> the joint id with the highest logit: characters are ids 0..79, code c is 80 + c
    best = {2: 5, 3: N_VOCAB + 7, 4: 79, 5: N_VOCAB + 0, 6: N_VOCAB + 31, 7: 1}

    def rows(position):
        logits = torch.zeros(N_VOCAB + BINS)
        logits[best.get(position - N_TOKENS, N_VOCAB + 9)] = 10.0
        return logits

    fed = scripted(model, rows)
    prompt = torch.tensor([[3, 4]])
    codes = model.sample(no_conditioning(1), 1, prompt=prompt, length=8, temperature=0.0, chunk_size=32)
    assert codes.tolist() == [[3, 4, 0, 7, 0, 0, 31, 0]]  # drawn characters are code 0
    pushed = torch.cat(fed, dim=1)[0].tolist()
    # the lyric prefix and the prompt (shifted) first, then every drawn token as drawn, characters included
    assert pushed == [7] * N_TOKENS + [N_VOCAB + 3, N_VOCAB + 4] + [5, N_VOCAB + 7, 79, N_VOCAB, N_VOCAB + 31]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_merged_sampling_keeps_the_probability_of_characters(temperature):
    """Only character 3 (logit 1) and code 5 (logit 0) are possible: code 0 comes out with the character's
    probability e^(1/T) / (e^(1/T) + 1) (the reference); sampling codes alone would always give 5."""
    model = merged_prior()
    logits = torch.full((N_VOCAB + BINS,), -math.inf)
    logits[3], logits[N_VOCAB + 5] = 1.0, 0.0
    scripted(model, lambda position: logits)
    g = torch.Generator().manual_seed(0)
    codes = model.sample(no_conditioning(64), 64, temperature=temperature, generator=g)
    assert set(codes.unique().tolist()) == {0, 5}
    p_char = math.exp(1 / temperature) / (math.exp(1 / temperature) + 1)
    assert abs((codes == 0).float().mean().item() - p_char) < 0.03


def test_merged_top_k_and_top_p_filter_over_characters_too():
    model = merged_prior()
    logits = torch.full((N_VOCAB + BINS,), -math.inf)
    logits[3], logits[N_VOCAB + 5] = 1.0, 0.0  # probabilities 0.73 and 0.27
    scripted(model, lambda position: logits)
    g = torch.Generator().manual_seed(0)
    assert (model.sample(no_conditioning(8), 8, top_k=1, generator=g) == 0).all()  # the character only
    assert (model.sample(no_conditioning(8), 8, top_p=0.6, generator=g) == 0).all()
    mixed = model.sample(no_conditioning(8), 8, top_p=0.8, generator=g)
    assert set(mixed.unique().tolist()) == {0, 5}


def test_top_p_keeps_the_token_that_reaches_it_exactly():
    """The reference drops a token when the tokens before it already hold more than top_p (strictly)."""
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    first = torch.sort(logits, descending=True).values.softmax(-1)[0, 0].item()
    assert filter_logits(logits, top_p=first).isfinite().tolist() == [[True, True, False]]
    assert filter_logits(logits, top_p=first - 1e-3).isfinite().tolist() == [[True, False, False]]
