"""Codes files: `jukebox-pl encode` writes the codes of every level of an audio file, `decode` renders them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import soundfile as sf
import torch

from jukebox_pl.audio import read_audio, resample, to_mono, write_audio
from jukebox_pl.config.levels import level_index, level_name
from jukebox_pl.data.code_checks import check_codes
from jukebox_pl.errors import UnsafeFileError, UserKeyError, UserValueError
from jukebox_pl.training.checkpoints.read_write import safe_load
from jukebox_pl.user_files import check_input_file, check_output_file, check_output_folder
from jukebox_pl.vqvae.vqvae import VQVAE

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
    check_input_file(audio_path, "--audio file")  # a FIFO would block the decoder for ever
    check_output_file(out, "--out")
    vqvae = load_vqvae(run, ckpts, levels if run and not ckpts else None)
    audio, sr = read_audio(audio_path)
    audio = resample(audio, sr, vqvae.sample_rate, name=str(audio_path))
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
    """A codes file written by `encode`, its codes checked (check_codes) and its length and rate positive."""
    check_input_file(path, "codes file")
    try:
        obj = safe_load(path, "codes file")
    except UnsafeFileError:
        raise
    except UserValueError:  # truncated or foreign: not a codes file
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != CODES_FORMAT:
        raise UserValueError(f"{path} is not a codes file written by `jukebox-pl encode`")
    for key in ("length", "sample_rate"):
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserValueError(f"{path}: {key!r} is {value!r}, not a positive integer; re-run `jukebox-pl encode`")
    check_codes(path, obj.get("codes"))
    return obj


def vqvae_bins(vqvae: VQVAE) -> Callable[[str], int | None]:
    """A level name's codebook size in this VQ-VAE (None for a level it lacks)."""

    def bins(name: str) -> int | None:
        idx = level_index(name, vqvae.n_levels)
        return int(vqvae.level(idx).cfg.l_bins) if idx in vqvae.available() else None

    return bins


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
    out = Path(out)
    to_file = len(names) == 1 and out.suffix
    if to_file:
        check_output_file(out, "--out")
        if out.suffix[1:].upper() not in sf.available_formats():
            raise UserValueError(f"--out {out}: unknown audio format {out.suffix!r}; use .wav or .flac")
    else:
        check_output_folder(out, "--out")
    vqvae = load_vqvae(run, ckpts, names if run and not ckpts else None)
    if vqvae.sample_rate != obj["sample_rate"]:
        raise UserValueError(f"codes are at {obj['sample_rate']} Hz but the VQ-VAE is {vqvae.sample_rate} Hz")
    check_codes(codes_path, {n: obj["codes"][n] for n in names}, vqvae_bins(vqvae))
    written = []
    for name in names:
        audio = vqvae.decode(obj["codes"][name], name)[0, :, : obj["length"]]
        target = out if to_file else out / f"{Path(codes_path).stem}_{name}.wav"
        written.append(write_audio(target, audio.numpy(), vqvae.sample_rate))
    return written
