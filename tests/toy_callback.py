"""A user's own Lightning callback, written outside the package: it writes the steps it saw to a file.

`tests/test_loggers.py` names it in `trainer.callbacks` (class path `toy_callback.StepMarker`): typed on the
command line it runs; named only by a file it is refused before this module is imported.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class StepMarker(pl.Callback):
    """Appends `global_step` to `path` after every training batch."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with self.path.open("a") as f:
            f.write(f"{trainer.global_step}\n")
