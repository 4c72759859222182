"""Jukebox as a feature extractor: the top prior's activations at chosen layers, for other projects.

    from jukebox_pl.features import JukeboxFeatures
    features = JukeboxFeatures.from_run("runs/openai_5b", layers=[36])   # only blocks 1..36 are built and loaded
    acts = features(audio)                                              # {36: (batch, codes, 4800)}

`jukebox-pl features` runs it over files, shards or codes files through Lightning's predict loop.
"""

from jukebox_pl.features.extractor import OUTPUTS, JukeboxFeatures, parse_layers
from jukebox_pl.features.lightning import FeaturesModule, FeatureWriter
from jukebox_pl.features.pooling import parse_pool, pool
from jukebox_pl.features.recipe import Conditioning, prepare_audio
from jukebox_pl.features.truncated import load_truncated_prior, truncate

__all__ = [
    "OUTPUTS",
    "Conditioning",
    "FeatureWriter",
    "FeaturesModule",
    "JukeboxFeatures",
    "load_truncated_prior",
    "parse_layers",
    "parse_pool",
    "pool",
    "prepare_audio",
    "truncate",
]
