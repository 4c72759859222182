"""Priors: sparse transformers over VQ-VAE codes (factorised attention, KV cache) and their conditioning."""
