"""`VQVAE`: trained levels assembled for inference — audio -> codes per level, codes -> audio."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jukebox_pl.config.levels import level_index, level_name
from jukebox_pl.errors import MissingInputError, UserKeyError, UserValueError
from jukebox_pl.training.checkpoints.read_write import load_any
from jukebox_pl.vqvae.model import VQVAELevelModel, build_vqvae_level


def load_level(path: str | Path) -> tuple[VQVAELevelModel, int]:
    """A level model (eval mode) and its sample rate from a training checkpoint, an export or a folder in the
    Hub layout (`save_pretrained`)."""
    if Path(path).is_dir():
        model = VQVAELevelModel.load_folder(path)
        if model.sample_rate is None:
            raise UserValueError(f"{Path(path) / 'config.json'} records no sample_rate; save the level from a VQVAE")
        return model, int(model.sample_rate)
    info = load_any(path)
    if info["kind"] != "vqvae-level":
        raise UserValueError(f"{path} holds a {info['kind']} checkpoint, not a VQ-VAE level")
    hp = info["hparams"]
    model = build_vqvae_level(hp["vqvae"], hp["level"])
    state = {k[len("model.") :]: v for k, v in info["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=False)
    missing = [k for k in model.state_dict() if k not in state and not k.startswith("spectral.")]
    if missing:
        raise UserValueError(f"{path} lacks weights for {missing[:5]}")
    model.sample_rate = int(hp["sample_rate"])
    return model.eval(), int(hp["sample_rate"])


def level_checkpoint(run_dir: str | Path, name: str) -> Path:
    """Where `jukebox-pl train vqvae --level NAME --run RUN` leaves its weights (an export wins over last.ckpt),
    or the level's folder itself in a run in the Hub layout (`export --format hub`)."""
    stage = Path(run_dir) / f"vqvae_{name}"
    for candidate in (stage / "export.pt", stage / "checkpoints" / "last.ckpt"):
        if candidate.is_file():
            return candidate
    if (stage / "model.safetensors").is_file():
        return stage
    raise MissingInputError(
        f"no trained VQ-VAE {name} level in {run_dir} (looked for {stage}/export.pt, "
        f"{stage}/checkpoints/last.ckpt and {stage}/model.safetensors); train it with "
        f"`make train-level LEVEL={name} STAGE=vqvae`"
    )


class VQVAE(nn.Module):
    """Separately trained levels, bottom (index 0) to top, all at one sample rate."""

    def __init__(self, levels: dict[int, VQVAELevelModel], sample_rate: int):
        super().__init__()
        if not levels:
            raise UserValueError("a VQVAE needs at least one trained level")
        counts = {m.cfg.levels for m in levels.values()}
        if len(counts) != 1:
            raise UserValueError(f"levels come from VQ-VAEs with different level counts: {sorted(counts)}")
        self.n_levels = counts.pop()
        self.levels = nn.ModuleDict({str(i): m for i, m in sorted(levels.items())})
        self.sample_rate = sample_rate
        for model in levels.values():  # what a level's save_pretrained records
            model.sample_rate = sample_rate

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path]) -> VQVAE:
        levels, rates = {}, set()
        for path in paths:
            model, sr = load_level(path)
            if model.level in levels:
                raise UserValueError(f"two checkpoints for level {model.level}: {path}")
            levels[model.level] = model
            rates.add(sr)
        if len(rates) > 1:
            raise UserValueError(f"levels trained at different sample rates: {sorted(rates)}")
        return cls(levels, rates.pop())

    @classmethod
    def from_run(cls, run_dir: str | Path, levels: list[str] | None = None) -> VQVAE:
        """Load every trained level of a run folder (or just `levels`)."""
        run_dir = Path(run_dir)
        names = levels or [p.name.removeprefix("vqvae_") for p in sorted(run_dir.glob("vqvae_*")) if p.is_dir()]
        if not names:
            raise MissingInputError(f"no VQ-VAE levels in {run_dir}; train one with `make train-level STAGE=vqvae`")
        return cls.from_checkpoints([level_checkpoint(run_dir, n) for n in names])

    def available(self) -> list[int]:
        return [int(k) for k in self.levels]

    def level(self, level: int | str) -> VQVAELevelModel:
        idx = level_index(level, self.n_levels)
        if str(idx) not in self.levels:
            have = ", ".join(level_name(i, self.n_levels) for i in self.available())
            raise UserKeyError(f"level {level_name(idx, self.n_levels)} is not loaded (have: {have})")
        return self.levels[str(idx)]

    def hop_length(self, level: int | str) -> int:
        return self.level(level).hop_length

    @torch.no_grad()
    def encode(self, audio: torch.Tensor, levels: list[int | str] | None = None) -> dict[int, torch.Tensor]:
        """Audio (N, C, T), (C, T) or (T,) -> {level index: codes (N, ceil(T / hop))}; `levels` may be given as
        indices or names (bottom/middle/top), the keys are always indices."""
        x = audio if audio.dim() == 3 else audio.reshape(1, -1, audio.shape[-1])
        wanted = self.available() if levels is None else [level_index(lv, self.n_levels) for lv in levels]
        return {idx: self.level(idx).encode(x) for idx in wanted}

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, level: int | str) -> torch.Tensor:
        """Codes (N, T') (or (T',)) of one level -> audio (N, C, T' * hop)."""
        return self.level(level).decode(codes if codes.dim() == 2 else codes[None])
