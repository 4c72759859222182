"""Checkpoint files, all in one place: writing them (atomically, finite weights only, with a checksum of every
tensor) and reading them (tensors and plain data only), Lightning's checkpoint IO, and which file a resumed run
starts from.

- `read_write`: training checkpoints (`.ckpt`) and weights-only exports (`.pt`): save, load, describe, export;
- `checksums`: the CRC-32 of each tensor written beside it and compared on load;
- `lightning_io`: the Trainer's checkpoint writer and reader built on them;
- `resume`: `last.ckpt`, or the newest intact numbered checkpoint when it is damaged.
"""
