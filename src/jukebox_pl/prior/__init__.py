"""Priors: sparse transformers over VQ-VAE codes (factorised attention, KV cache) and their conditioning."""

from importlib import import_module

_EXPORTS = {
    "AutoregressiveTransformer": "jukebox_pl.prior.transformer",
    "Transformer": "jukebox_pl.prior.transformer",
    "JukeboxPrior": "jukebox_pl.prior.model",
    "PriorModule": "jukebox_pl.prior.lightning",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Lazy exports: `from jukebox_pl.prior import PriorModule` without importing Lightning for the maths."""
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jukebox_pl.prior' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
