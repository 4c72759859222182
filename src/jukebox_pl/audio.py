"""Audio input/output: decode with soundfile (libsndfile), resample with soxr, encode FLAC/WAV.

Arrays are float32 shaped (channels, samples) everywhere in the toolkit, the layout that Conv1d and auraloss
expect, so nothing downstream has to guess.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from jukebox_pl.errors import JukeboxError
from jukebox_pl.machine import gib, ram_bytes
from jukebox_pl.user_files import input_problem

AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc"})
# Formats users often have that libsndfile cannot read; reported as skipped instead of silently ignored.
UNSUPPORTED_AUDIO_EXTENSIONS = frozenset({".m4a", ".aac", ".wma", ".mp4", ".alac", ".ape", ".wv", ".mka", ".webm"})
# Sample rates audio is read at: below 4 kHz is no music recording (a header saying 1 Hz is damaged, and
# resampling it to 22 kHz would multiply its size by 22050); 768 kHz is the highest rate audio hardware uses.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 768000


class AudioDecodeError(JukeboxError, RuntimeError):
    """A file that could not be decoded as audio; the message names the file and libsndfile's reason."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | Path) -> AudioInfo:
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises several types; all mean "not readable audio"
        raise AudioDecodeError(f"{path}: {err}") from None
    return AudioInfo(info.samplerate, info.channels, info.frames, info.format)


def read_audio(source: str | Path | bytes, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Decode a file (or its bytes) to float32 (channels, samples); `start`/`frames` read only a slice.

    A path must be a regular file (a FIFO or device would block or never end), and what its header promises
    must fit in memory: both are refused as AudioDecodeError naming the file before anything is decoded."""
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source)
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    if not isinstance(source, bytes | bytearray):
        reason = input_problem(source)
        if reason:
            raise AudioDecodeError(f"{name}: {reason}")
    try:
        with sf.SoundFile(handle) as f:
            if start:
                f.seek(start)
            n = max(0, f.frames - start) if frames < 0 else min(frames, max(0, f.frames - start))
            _check_fits(name, n * f.channels * 4 * 2, f"{n} frames x {f.channels} channels")  # read + transpose
            data = f.read(frames=frames, dtype="float32", always_2d=True)
            sr = f.samplerate
    except AudioDecodeError:
        raise
    except Exception as err:
        raise AudioDecodeError(f"{name}: {err}") from None
    return np.ascontiguousarray(data.T), sr


def _check_fits(name: str, need: float, what: str) -> None:
    """Refuse work on one file whose arrays could not fit in this machine's RAM (a header that lies)."""
    ram = ram_bytes()
    if ram is not None and need > ram:
        raise AudioDecodeError(f"{name}: {what} would need {gib(need)}, more than this machine's {gib(ram)} of RAM")


def resample(audio: np.ndarray, sr_in: int, sr_out: int, quality: str = "HQ", name: str = "audio") -> np.ndarray:
    """Resample (channels, samples) float32 with soxr; a no-op when the rates match. A rate outside
    [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] or a result too big for RAM is an AudioDecodeError naming `name`."""
    if sr_in == sr_out:
        return audio
    for rate in (sr_in, sr_out):
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioDecodeError(
                f"{name}: sample rate {rate} Hz out of range [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
            )
    out_samples = math.ceil(audio.shape[-1] * sr_out / sr_in)
    _check_fits(name, out_samples * audio.shape[0] * 4 * 3, f"resampling to {out_samples} samples")
    out = soxr.resample(audio.T, sr_in, sr_out, quality=quality)
    return np.ascontiguousarray(out.T.astype(np.float32, copy=False))


def limit_channels(audio: np.ndarray, max_channels: int = 2) -> np.ndarray:
    """Keep mono and stereo as they are; fold surround down to its front left/right pair."""
    if audio.shape[0] <= max_channels:
        return audio
    return np.ascontiguousarray(audio[:max_channels])


def encode_audio(audio: np.ndarray, sr: int, fmt: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    """Encode (channels, samples) float audio to bytes, clipping to [-1, 1] first (libsndfile would wrap)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0).T, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def write_audio(path: str | Path, audio: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    """Write (channels, samples) or (samples,) audio; the format follows the file extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio if audio.ndim == 1 else audio.T
    sf.write(str(path), np.clip(data, -1.0, 1.0), sr, subtype=subtype)
    return path


def to_mono(audio: np.ndarray, blend: float | None = None) -> np.ndarray:
    """(channels, samples) -> (1, samples); stereo mixes as blend*L + (1-blend)*R, None = plain average."""
    if audio.shape[0] == 1:
        return audio
    if blend is None or audio.shape[0] != 2:
        return audio.mean(axis=0, keepdims=True)
    return (blend * audio[0:1] + (1.0 - blend) * audio[1:2]).astype(np.float32, copy=False)


def level_dbfs(audio: np.ndarray) -> tuple[float, float]:
    """(peak, RMS) in dBFS, used to tell silent tracks from quiet ones."""
    if audio.size == 0:
        return -np.inf, -np.inf
    peak = float(np.max(np.abs(audio)))
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    to_db = lambda v: 20.0 * np.log10(v) if v > 0 else -np.inf  # noqa: E731
    return to_db(peak), to_db(rms)
