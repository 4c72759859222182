"""The hierarchical VQ-VAE: encoder/decoder stacks, the codebook bottleneck, one level's autoencoder
(`VQVAELevelModel`), trained levels assembled for inference (`VQVAE`) and the LightningModule that trains a
level (`VQVAELevel`).

Exports are lazy: the torch modules never import Lightning; `VQVAELevel` does, when asked for.
"""

from importlib import import_module

_EXPORTS = {
    "Encoder": "jukebox_pl.vqvae.encdec",
    "Decoder": "jukebox_pl.vqvae.encdec",
    "Bottleneck": "jukebox_pl.vqvae.bottleneck",
    "VQVAELevelModel": "jukebox_pl.vqvae.model",
    "VQVAE": "jukebox_pl.vqvae.container",
    "VQVAELevel": "jukebox_pl.vqvae.lightning",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import the module that defines `name` on first access (then cache it here)."""
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jukebox_pl.vqvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
