"""Jukebox as a feature extractor: the top prior's activations at chosen layers, for other projects.

    from jukebox_pl.features import JukeboxFeatures
    features = JukeboxFeatures.from_run("runs/openai_5b", layers=[36])   # only blocks 1..36 are built and loaded
    acts = features(audio)                                              # {36: (batch, codes, 4800)}

`jukebox-pl features` runs it over files, shards or codes files through Lightning's predict loop
(`FeaturesModule`, `FeatureWriter`). Exports are lazy: the plain module does not import Lightning.
"""

from jukebox_pl.lazy import lazy_exports

_EXPORTS = {
    "JukeboxFeatures": "jukebox_pl.features.extractor",
    "OUTPUTS": "jukebox_pl.features.extractor",
    "parse_layers": "jukebox_pl.features.extractor",
    "FeaturesModule": "jukebox_pl.features.lightning",
    "FeatureWriter": "jukebox_pl.features.lightning",
    "parse_pool": "jukebox_pl.features.pooling",
    "pool": "jukebox_pl.features.pooling",
    "Conditioning": "jukebox_pl.features.recipe",
    "prepare_audio": "jukebox_pl.features.recipe",
    "load_truncated_prior": "jukebox_pl.features.truncated",
    "truncate": "jukebox_pl.features.truncated",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
