"""The hierarchical VQ-VAE: encoder/decoder stacks, the codebook bottleneck, one level's autoencoder
(`VQVAELevelModel`), trained levels assembled for inference (`VQVAE`) and the LightningModule that trains a
level (`VQVAELevel`); the paper's combined-model ablation (`HierarchicalVQVAE`, `HierarchicalVQVAEModule`).

Exports are lazy: the torch modules never import Lightning; `VQVAELevel` does, when asked for.
"""

from jukebox_pl.lazy import lazy_exports

_EXPORTS = {
    "Encoder": "jukebox_pl.vqvae.encdec",
    "Decoder": "jukebox_pl.vqvae.encdec",
    "Bottleneck": "jukebox_pl.vqvae.bottleneck",
    "VQVAELevelModel": "jukebox_pl.vqvae.model",
    "build_vqvae_level": "jukebox_pl.vqvae.model",
    "VQVAE": "jukebox_pl.vqvae.vqvae",
    "VQVAELevel": "jukebox_pl.vqvae.lightning",
    "HierarchicalVQVAE": "jukebox_pl.vqvae.hierarchical",
    "HierarchicalVQVAEModule": "jukebox_pl.vqvae.lightning",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
