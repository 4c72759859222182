"""Data: audio shards (prep), label and lyrics vocabularies, and the DataModule every stage trains on."""

from jukebox_pl.data.datamodule import AudioDataModule, data_config
from jukebox_pl.data.pipeline import collate, reference_labels
from jukebox_pl.data.prep import PrepOptions, PrepRefused, prepare_shards
from jukebox_pl.data.vocab import LabelVocab, UnknownLabelError
from jukebox_pl.lyrics import LyricsTokenizer, lyric_window

__all__ = [
    "AudioDataModule",
    "LabelVocab",
    "LyricsTokenizer",
    "PrepOptions",
    "PrepRefused",
    "UnknownLabelError",
    "collate",
    "data_config",
    "lyric_window",
    "prepare_shards",
    "reference_labels",
]
