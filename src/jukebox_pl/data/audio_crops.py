"""Audio shards (`jukebox-pl prep`) as a `ShardFormat`: FLAC tracks -> seek-decoded crops of fixed length.

A crop decodes only its own window (a 24 s crop of a 5 min song decodes 24 s); stereo tracks are blended to
mono at a random balance for training (the reference's aug_blend) or averaged for validation.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import torch

from jukebox_pl.audio import AudioDecodeError, read_audio, to_mono
from jukebox_pl.data.pipeline import SkipTrack, train_offsets, val_offsets

AUDIO_MEMBERS = ("flac", "wav", "ogg", "mp3")


def fit_channels(audio: np.ndarray, channels: int, blend: float | None) -> np.ndarray:
    """Mono (blended or averaged) or `channels` channels (mono tracks duplicated)."""
    if channels == 1:
        return to_mono(audio, blend)
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    return audio[:channels]


@dataclass
class AudioCrops:
    """Crops of `sample_length` samples in `channels` channels (picklable, sent to DataLoader workers)."""

    sample_length: int
    sample_rate: int
    channels: int = 1
    aug_shift: bool = True
    aug_blend: bool = True

    def parse(self, sample: dict) -> dict:
        audio = next(sample[k] for k in AUDIO_MEMBERS if k in sample)
        info = json.loads(sample["json"]) if isinstance(sample.get("json"), bytes | str) else sample["json"]
        return {"audio": audio, "info": info, "samples": int(info["samples"])}

    def offsets(self, track: dict, rng: random.Random | None, n_val: int) -> list[int]:
        total = track["samples"]
        if rng is None:
            return val_offsets(total, self.sample_length, n_val)
        return train_offsets(total, self.sample_length, rng, self.aug_shift)

    def example(self, crop: dict, rng: random.Random | None) -> dict:
        try:
            audio, _ = read_audio(crop["audio"], start=crop["offset"], frames=self.sample_length)
        except AudioDecodeError as err:
            raise SkipTrack(str(err)) from None
        blend = rng.random() if (rng is not None and self.aug_blend) else None
        audio = fit_channels(audio, self.channels, blend)
        valid = audio.shape[1]
        if valid < self.sample_length:
            audio = np.pad(audio, ((0, 0), (0, self.sample_length - valid)))
        return {"audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), "length": valid}
