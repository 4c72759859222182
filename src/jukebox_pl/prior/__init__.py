"""Priors: sparse transformers over VQ-VAE codes (factorised attention, KV cache) and their conditioning."""

from jukebox_pl.lazy import lazy_exports

_EXPORTS = {
    "AutoregressiveTransformer": "jukebox_pl.prior.transformer",
    "Transformer": "jukebox_pl.prior.transformer",
    "JukeboxPrior": "jukebox_pl.prior.model",
    "build_prior": "jukebox_pl.prior.model",
    "PriorModule": "jukebox_pl.prior.lightning",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
