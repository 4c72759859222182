"""The reference implementation's own sampler path (openai/jukebox `jukebox/sample.py`) for a whole song on this CPU,
for `bench/song.py --reference CHECKOUT`.

Nothing of the reference is copied: it is imported from the checkout with the shims of `reference_cpu.py`. Its
models are built by its own `make_vqvae` / `make_prior` from its released hparam sets (`vqvae`,
`prior_5b_lyrics`, `upsampler_level_1`, `upsampler_level_0`) with the sizes of our config laid over them
(`reference_hparams`, the inverse of `jukebox_pl.interop.openai_hps.PRIOR_KEYS`), so that both sides sample with
the same architecture. A level is sampled by its `sample_level` (its window starts, `sample_single_window`'s
re-priming of each window's overlap through `primed_sample`) and decoded by `SimplePrior.decode`, as its `_sample`
does; writing audio, HTML and the lyric alignment are left out (on both sides).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
import types
from pathlib import Path

import torch
from reference_cpu import install_cpu_factories, single_process, use_reference

from jukebox_pl.interop.openai_hps import PRIOR_KEYS

LYRIC_VOCAB = {"v2": 80, "v3": 79}  # the reference's n_vocab per label set (its `labels` / `labels_v3`)
# what its sample.py uses on the upsamplers (lower_level_chunk_size); the top's is 16 for the 5B models
CHUNK = 32


def load(checkout: str | Path):
    """The reference's modules, importable and runnable on the CPU; its progress bars become plain loops."""
    use_reference(checkout)  # S1-S3
    install_cpu_factories()  # S4
    if importlib.util.find_spec("fire") is None:  # jukebox.sample imports it for its __main__ only
        sys.modules["fire"] = types.ModuleType("fire")
    single_process()  # S5
    import jukebox.prior.autoregressive as ar
    import jukebox.sample as sample

    ar.get_range = lambda items: items  # a tqdm bar per window; ours draws none either
    return sample


def reference_hparams(prior: dict, level: int, max_genres: int) -> dict:
    """The reference's hparams for one of our prior configs (a plain dict), laid over its released set."""
    out = {ref: prior[ours] for ref, ours in PRIOR_KEYS.items() if prior.get(ours) is not None}
    lyrics = prior.get("lyrics", "none")
    out.update(
        level=level, restore_prior="", train=False, prior=True, labels=bool(prior.get("labels")),
        use_tokens=lyrics != "none", single_enc_dec=lyrics == "merged", n_tokens=prior.get("n_tokens", 0) or 0,
        labels_v3=prior.get("lyrics_vocab") == "v3", n_vocab=LYRIC_VOCAB[prior.get("lyrics_vocab", "v2")],
        max_bow_genre_size=max_genres, c_res=0, cond_c_res=0, prime_c_res=0,
    )  # fmt: skip
    if prior.get("y_bins") is not None:
        out["y_bins"] = tuple(prior["y_bins"])
    return out


def build(sample, arch: dict[int, str], priors: dict[int, dict], max_genres: int, total_samples: int,
          sample_rate: int, seed: int = 0) -> tuple[torch.nn.Module, list]:  # fmt: skip
    """Its VQ-VAE (released `vqvae` set, random weights) and its prior of every level (`arch`: level -> its set
    name, `priors`: level -> our prior config as a dict)."""
    from jukebox.hparams import setup_hparams
    from jukebox.make_models import make_prior, make_vqvae

    torch.manual_seed(seed)
    common = dict(sample_length=total_samples, sr=sample_rate, restore_vqvae="")
    with contextlib.redirect_stdout(io.StringIO()):
        vqvae = make_vqvae(setup_hparams("vqvae", dict(common, train=False)), "cpu")
        models = []
        for level in sorted(arch):
            hps = setup_hparams(f"vqvae,{arch[level]}", dict(common, **reference_hparams(priors[level], level,
                                                                                          max_genres)))  # fmt: skip
            models.append(make_prior(hps, vqvae, "cpu").eval())
    return vqvae, models


def labels(priors: list, n_samples: int, total_samples: int, artist: int, genre: int, lyrics: list[int]) -> list:
    """Per level, the label dict its `Labeller.get_batch_labels` makes (y = total length, offset 0, the level's
    sample length, artist, genres padded with -1, lyric slots; info holds the full lyric tokens), built directly:
    the bench's ids are numbers, not names from its id tables."""
    out = []
    for prior in priors:
        genres = [genre] + [-1] * (prior.y_emb.max_bow_genre_size - 1) if prior.y_cond else []
        row = [total_samples, 0, int(prior.sample_length), artist, *genres] + [0] * prior.n_tokens
        y = torch.tensor([row] * n_samples, dtype=torch.long)
        out.append({"y": y, "info": [{"full_tokens": list(lyrics)} for _ in range(n_samples)]})
    return out


def song(sample, vqvae, priors: list, n_samples: int, total_samples: int, hop_fractions: list[float], lyrics) -> dict:
    """Sample every level top down as its `_sample` does, timing the sampling and the decode of each level.
    Returns {level index: {"sample_s": ..., "decode_s": ...}} and the codes under "codes"."""
    labs = labels(priors, n_samples, total_samples, artist=1, genre=1, lyrics=lyrics)
    zs = [torch.zeros(n_samples, 0, dtype=torch.long) for _ in priors]
    out: dict = {}
    for level in reversed(range(len(priors))):
        prior = priors[level]
        kwargs = dict(temp=0.99, fp16=False, chunk_size=CHUNK, max_batch_size=n_samples)
        total_length = total_samples // prior.raw_to_tokens
        hop_length = int(hop_fractions[level] * prior.n_ctx)
        hps = types.SimpleNamespace(n_samples=n_samples)
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # its sampler prints every window
            t0 = time.perf_counter()
            zs = sample.sample_level(zs, labs[level], kwargs, level, prior, total_length, hop_length, hps)
            t1 = time.perf_counter()
            prior.decode(zs[level:], start_level=level, bs_chunks=zs[level].shape[0])
            t2 = time.perf_counter()
        out[level] = {"sample_s": t1 - t0, "decode_s": t2 - t1, "tokens": int(zs[level].shape[1])}
    out["codes"] = zs
    return out
