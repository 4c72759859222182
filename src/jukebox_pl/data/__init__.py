"""Data: audio shards (prep), label and lyrics vocabularies, and the DataModule every stage trains on.

Exports are lazy: only `AudioDataModule` / `CodeDataModule` import Lightning, and only when asked for.
"""

from jukebox_pl.lazy import lazy_exports

_EXPORTS = {
    "AudioDataModule": "jukebox_pl.data.datamodule",
    "data_config": "jukebox_pl.config.sections",
    "CodeDataModule": "jukebox_pl.data.code_datamodule",
    "collate": "jukebox_pl.data.pipeline",
    "reference_labels": "jukebox_pl.data.pipeline",
    "PrepOptions": "jukebox_pl.data.prep",
    "PrepRefused": "jukebox_pl.data.prep",
    "prepare_shards": "jukebox_pl.data.prep",
    "LabelVocab": "jukebox_pl.data.vocab",
    "UnknownLabelError": "jukebox_pl.data.vocab",
    "LyricsTokenizer": "jukebox_pl.lyrics",
    "lyric_window": "jukebox_pl.lyrics",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
