"""Small VQ-VAE + prior overrides shared by the prior training tests and their DDP subprocess script."""

VQVAE = [
    "vqvae.l_bins=32",
    "vqvae.width=8",
    "vqvae.depth=2",
    "vqvae.sample_length=2048",
    "vqvae.batch_size=2",
    "vqvae.bandwidth_batches=1",
]

PRIOR = [
    # top: 32 codes x hop 128 = 4096 samples, lyrics encoder over 16 characters
    "prior.top.n_ctx=32",
    "prior.top.blocks=4",
    "prior.top.width=32",
    "prior.top.n_tokens=16",
    "prior.top.prime_width=16",
    "prior.top.prime_blocks=4",
    "prior.top.batch_size=2",
    # middle: 64 codes x hop 32 = 2048 samples, conditioned on 16 top codes
    "prior.middle.n_ctx=64",
    "prior.middle.blocks=8",
    "prior.middle.width=32",
    "prior.middle.cond_width=16",
    "prior.middle.cond_depth=2",
    "prior.middle.batch_size=2",
]

COMMON = [
    "trainer.max_steps=2",
    "data.epoch_length=16",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
