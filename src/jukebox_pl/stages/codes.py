"""Codes files: `jukebox-pl encode` writes the codes of every level of an audio file, `decode` renders them."""

from __future__ import annotations

from pathlib import Path

import torch

from jukebox_pl.audio import read_audio, resample, to_mono, write_audio
from jukebox_pl.errors import UnsafeFileError, UserKeyError, UserValueError
from jukebox_pl.training.checkpoints import safe_load
from jukebox_pl.vqvae.container import VQVAE
from jukebox_pl.vqvae.model import level_index, level_name

CODES_FORMAT = "jukebox-pl/codes-v1"


def load_vqvae(run: str | None = None, ckpts: list[str] | None = None, levels: list[str] | None = None) -> VQVAE:
    if ckpts:
        return VQVAE.from_checkpoints(ckpts)
    if run:
        return VQVAE.from_run(run, levels)
    raise UserValueError("give a run folder (--run) or level checkpoints (--ckpt)")


def encode_file(
    audio_path: str | Path,
    out: str | Path,
    run: str | None = None,
    ckpts: list[str] | None = None,
    levels: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Encode an audio file (any format/rate; mixed to the model's channels) into a codes file."""
    vqvae = load_vqvae(run, ckpts, levels if run and not ckpts else None)
    audio, sr = read_audio(audio_path)
    audio = resample(audio, sr, vqvae.sample_rate)
    channels = next(iter(vqvae.levels.values())).cfg.channels
    if channels == 1:
        audio = to_mono(audio)
    x = torch.from_numpy(audio)[None]
    wanted = [level_index(n, vqvae.n_levels) for n in levels] if levels else None
    codes = vqvae.encode(x, wanted)
    named = {level_name(i, vqvae.n_levels): c[0].cpu() for i, c in codes.items()}
    torch.save(
        {
            "format": CODES_FORMAT,
            "sample_rate": vqvae.sample_rate,
            "length": x.shape[-1],
            "source": str(audio_path),
            "n_levels": vqvae.n_levels,
            "codes": named,
            "hop_lengths": {level_name(i, vqvae.n_levels): vqvae.hop_length(i) for i in codes},
        },
        out,
    )
    return named


def read_codes(path: str | Path) -> dict:
    try:
        obj = safe_load(path, "codes file")
    except UnsafeFileError:
        raise
    except UserValueError:  # truncated or foreign: not a codes file
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != CODES_FORMAT:
        raise UserValueError(f"{path} is not a codes file written by `jukebox-pl encode`")
    return obj


def decode_file(
    codes_path: str | Path,
    out: str | Path,
    run: str | None = None,
    ckpts: list[str] | None = None,
    level: str | None = None,
) -> list[Path]:
    """Render the codes of one level (or of every level, into a folder) back to audio."""
    obj = read_codes(codes_path)
    names = [level] if level else list(obj["codes"])
    missing = [n for n in names if n not in obj["codes"]]
    if missing:
        raise UserKeyError(f"{codes_path} has no codes for level(s) {missing}; it has {list(obj['codes'])}")
    vqvae = load_vqvae(run, ckpts, names if run and not ckpts else None)
    if vqvae.sample_rate != obj["sample_rate"]:
        raise UserValueError(f"codes are at {obj['sample_rate']} Hz but the VQ-VAE is {vqvae.sample_rate} Hz")
    out = Path(out)
    written = []
    for name in names:
        audio = vqvae.decode(obj["codes"][name], name)[0, :, : obj["length"]]
        target = out if len(names) == 1 and out.suffix else out / f"{Path(codes_path).stem}_{name}.wav"
        written.append(write_audio(target, audio.numpy(), vqvae.sample_rate))
    return written
