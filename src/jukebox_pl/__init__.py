"""jukebox-pl: OpenAI Jukebox as a PyTorch Lightning toolkit.

The public API is exported lazily: `import jukebox_pl` costs nothing; `jukebox_pl.VQVAE` imports its module
(and torch) on first use, and only the Lightning classes (`VQVAELevel`, `PriorModule`, the DataModules)
import Lightning.
"""

from jukebox_pl.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # models (plain torch modules)
    "Encoder": "jukebox_pl.vqvae.encdec",
    "Decoder": "jukebox_pl.vqvae.encdec",
    "Bottleneck": "jukebox_pl.vqvae.bottleneck",
    "VQVAELevelModel": "jukebox_pl.vqvae.model",
    "VQVAE": "jukebox_pl.vqvae.vqvae",
    "AutoregressiveTransformer": "jukebox_pl.prior.transformer",
    "Transformer": "jukebox_pl.prior.transformer",
    "JukeboxPrior": "jukebox_pl.prior.model",
    "build_vqvae_level": "jukebox_pl.vqvae.model",
    "build_prior": "jukebox_pl.prior.model",
    # Lightning modules and data modules
    "VQVAELevel": "jukebox_pl.vqvae.lightning",
    "PriorModule": "jukebox_pl.prior.lightning",
    "AudioDataModule": "jukebox_pl.data.datamodule",
    "CodeDataModule": "jukebox_pl.data.code_datamodule",
    # data preparation and labels
    "prepare_shards": "jukebox_pl.data.prep",
    "PrepOptions": "jukebox_pl.data.prep",
    "LabelVocab": "jukebox_pl.data.vocab",
    "LyricsTokenizer": "jukebox_pl.lyrics",
    # sampling
    "SongSampler": "jukebox_pl.sampling.song_sampler",
    "SampleRequest": "jukebox_pl.stages.sample",
    "sample_song": "jukebox_pl.stages.sample",
    "SamplingModels": "jukebox_pl.sampling.models",
    # features for other projects
    "JukeboxFeatures": "jukebox_pl.features.extractor",
    "FeaturesModule": "jukebox_pl.features.lightning",
    # configuration and errors
    "load_config": "jukebox_pl.config.loader",
    "Levels": "jukebox_pl.config.levels",
    "ConfigError": "jukebox_pl.config.loader",
    "JukeboxError": "jukebox_pl.errors",
    "RunConfig": "jukebox_pl.config.schema",
    "DataConfig": "jukebox_pl.config.schema",
    "VQVAEConfig": "jukebox_pl.config.schema",
    "PriorConfig": "jukebox_pl.config.schema",
    "TrainerConfig": "jukebox_pl.config.schema",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
