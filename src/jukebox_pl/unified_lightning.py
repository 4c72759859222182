"""Our LightningModules and DataModules for projects built on the unified `lightning` package.

`pytorch_lightning.Trainer` and `lightning.pytorch.Trainer` each accept only their own package's
LightningModule class, so the training logic lives in base-free classes (`VQVAELevelTraining`,
`PriorTraining`, `AudioData`, `CodeData`) and is bound once to each package: `jukebox_pl.VQVAELevel` etc. for
`pytorch_lightning`, and the classes here for `lightning`:

    import lightning as L
    from jukebox_pl.unified_lightning import AudioDataModule, VQVAELevel

    L.Trainer(max_steps=100).fit(VQVAELevel(vqvae_config(...), "top", 22050), datamodule=AudioDataModule(...))

A class of one package handed to the other's Trainer is refused in one line naming the class to import
(`jukebox_pl.training.lightning_binding`). Needs `pip install lightning` (the dev extra installs it).
"""

from __future__ import annotations

from lightning_utilities.core.imports import RequirementCache

_LIGHTNING = RequirementCache("lightning")
if not _LIGHTNING:
    raise ModuleNotFoundError(
        f"jukebox_pl.unified_lightning needs the unified `lightning` package: {_LIGHTNING.message}"
    )

import lightning.pytorch as L  # noqa: E402

from jukebox_pl.data.code_datamodule import CodeData  # noqa: E402
from jukebox_pl.data.datamodule import AudioData  # noqa: E402
from jukebox_pl.prior.lightning import PriorTraining  # noqa: E402
from jukebox_pl.vqvae.lightning import HierarchicalVQVAETraining, VQVAELevelTraining  # noqa: E402


class VQVAELevel(VQVAELevelTraining, L.LightningModule):
    """`jukebox_pl.vqvae.lightning.VQVAELevelTraining` as a `lightning.pytorch.LightningModule`."""


class HierarchicalVQVAEModule(HierarchicalVQVAETraining, L.LightningModule):
    """`jukebox_pl.vqvae.lightning.HierarchicalVQVAETraining` as a `lightning.pytorch.LightningModule`."""


class PriorModule(PriorTraining, L.LightningModule):
    """`jukebox_pl.prior.lightning.PriorTraining` as a `lightning.pytorch.LightningModule`."""


class AudioDataModule(AudioData, L.LightningDataModule):
    """`jukebox_pl.data.datamodule.AudioData` as a `lightning.pytorch.LightningDataModule`."""


class CodeDataModule(CodeData, L.LightningDataModule):
    """`jukebox_pl.data.code_datamodule.CodeData` as a `lightning.pytorch.LightningDataModule`."""


__all__ = ["AudioDataModule", "CodeDataModule", "HierarchicalVQVAEModule", "PriorModule", "VQVAELevel"]
