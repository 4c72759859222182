"""jukebox-pl: OpenAI Jukebox as a PyTorch Lightning toolkit."""

from jukebox_pl.config import ConfigError, load_config
from jukebox_pl.data import AudioDataModule, LabelVocab, LyricsTokenizer, PrepOptions, prepare_shards

__version__ = "0.1.0"

__all__ = [
    "AudioDataModule",
    "ConfigError",
    "LabelVocab",
    "LyricsTokenizer",
    "PrepOptions",
    "load_config",
    "prepare_shards",
]
