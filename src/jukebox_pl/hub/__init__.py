"""Models in the Hugging Face Hub layout: a folder holding `model.safetensors` (tensors only), `config.json`
(plain data, checked like any config) and a model card (`README.md`); read from a local folder or a Hub id.

It sits just above `training/` so that the plain models (`vqvae/`, `prior/`) can take their `save_pretrained` /
`from_pretrained` from here; whole runs in this layout are read and written by `jukebox_pl.sampling.pretrained_run`.
"""
