"""The vector-quantisation bottleneck of one level: nearest code, straight-through gradient, EMA codebook.

The codebook is learned only by exponential moving averages of per-code sums and counts (no gradient), is
initialised from encoder outputs of the first batch, and every code whose EMA count falls under
`threshold` is restarted on a random encoder output of the current batch. All EMA state lives in buffers,
so a checkpoint resumes exactly. Under data parallelism the batch statistics are all-reduced and the restart
candidates come from rank 0, so every rank computes the same codebook (and DDP's buffer broadcast, which
should be off anyway, cannot disagree with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass
class QuantiseOutput:
    codes: torch.Tensor  # (N, T) int64
    quantised: torch.Tensor  # (N, emb_width, T), straight-through in training
    commit_loss: torch.Tensor  # scalar
    metrics: dict[str, torch.Tensor]


class Bottleneck(nn.Module):
    """The codebook of one level: `l_bins` vectors of `emb_width`, learned by EMA with restarts of unused codes.

    Latents (N, emb_width, T) float -> codes (N, T) int64 in [0, l_bins) (`encode`) and back to the nearest code
    vectors (N, emb_width, T) (`decode`); T counts codes (audio samples / hop). `mu` is the EMA decay; a code whose
    EMA count falls under `threshold` (or `relative_threshold` x the average count) is restarted.
    """

    def __init__(
        self,
        l_bins: int,
        emb_width: int,
        mu: float = 0.99,
        threshold: float = 1.0,
        relative_threshold: float | None = None,
    ):
        super().__init__()
        self.l_bins, self.emb_width, self.mu, self.threshold = l_bins, emb_width, mu, threshold
        self.relative_threshold = relative_threshold
        self.register_buffer("k", torch.zeros(l_bins, emb_width))
        self.register_buffer("k_sum", torch.zeros(l_bins, emb_width))
        self.register_buffer("k_elem", torch.zeros(l_bins))
        self.register_buffer("initialised", torch.tensor(False))

    # -- codebook state -------------------------------------------------------------------------------------
    def _known_initialised(self) -> bool:
        """Whether the codebook is initialised, reading the buffer (a device sync) only until it is."""
        if not getattr(self, "_initialised_seen", False):
            self._initialised_seen = bool(self.initialised)
        return self._initialised_seen

    def _load_from_state_dict(self, *args, **kwargs):
        self._initialised_seen = False  # the loaded buffer decides again
        super()._load_from_state_dict(*args, **kwargs)

    def on_state_restored(self) -> None:
        """The buffers were copied back from a snapshot (a rolled-back training step, `FiniteGuard`): the buffer
        decides again whether the codebook is initialised."""
        self._initialised_seen = False

    def _random_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """`l_bins` random rows of x (tiled with a little noise when x has fewer rows), taken from rank 0."""
        n, width = x.shape
        if n < self.l_bins:
            x = x.repeat((self.l_bins + n - 1) // n, 1)
            x = x + torch.randn_like(x) * (0.01 / math.sqrt(width))
        picked = x[torch.randperm(x.shape[0], device=x.device)][: self.l_bins].contiguous()
        if _distributed():
            dist.broadcast(picked, 0)
        return picked

    @torch.no_grad()
    def init_codebook(self, x: torch.Tensor) -> None:
        """The codebook from random encoder outputs; a batch holding NaN or infinity is not used (the next
        finite one is), so a diverged first step cannot poison the codebook."""
        picked = self._random_vectors(x)
        if not bool(torch.isfinite(picked).all()):
            return
        self.k.copy_(picked)
        self.k_sum.copy_(self.k)
        self.k_elem.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def restore_ema(self, num_tokens: int | None = None) -> None:
        """Restart EMA statistics from the current codebook (after loading a codebook without them)."""
        scale = 1.0 if num_tokens is None else num_tokens / self.l_bins
        self.k_sum.copy_(self.k * scale)
        self.k_elem.fill_(scale)
        self.initialised.fill_(True)

    @torch.no_grad()
    def update_codebook(self, x: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        batch_sum = torch.zeros_like(self.k_sum).index_add_(0, codes, x)
        batch_elem = torch.bincount(codes, minlength=self.l_bins).to(x.dtype)
        candidates = self._random_vectors(x)
        if _distributed():
            dist.all_reduce(batch_sum)
            dist.all_reduce(batch_elem)
        old_k = self.k.clone()
        # A batch holding NaN or infinity (a diverging step) leaves the codebook as it was; decided on the
        # device (no host sync) and identically on every rank (the sums are all-reduced, candidates broadcast).
        finite = torch.isfinite(batch_sum).all() & torch.isfinite(candidates).all()
        k_sum = self.k_sum * self.mu + batch_sum * (1.0 - self.mu)
        k_elem = self.k_elem * self.mu + batch_elem * (1.0 - self.mu)
        threshold = self.threshold
        if self.relative_threshold is not None:  # a share of the average count per code at this batch size
            threshold = self.relative_threshold * batch_elem.sum() / self.l_bins
        alive = (k_elem >= threshold).to(x.dtype)[:, None]
        k = alive * (k_sum / k_elem[:, None]) + (1.0 - alive) * candidates
        self.k_sum.copy_(torch.where(finite, k_sum, self.k_sum))
        self.k_elem.copy_(torch.where(finite, k_elem, self.k_elem))
        self.k.copy_(torch.where(finite, k, self.k))
        prob = batch_elem / batch_elem.sum()
        return {
            "entropy": -(prob * torch.log(prob + 1e-8)).sum(),
            "used_curr": (batch_elem >= threshold).sum().to(x.dtype),
            "usage": alive.sum(),
            "restarts": (1.0 - alive).sum(),
            "dk": torch.linalg.vector_norm(self.k - old_k) / math.sqrt(old_k.numel()),
        }

    # -- quantisation ---------------------------------------------------------------------------------------
    @staticmethod
    def _flatten(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1).reshape(-1, x.shape[1])

    def nearest(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of the nearest code (L2) for each row, and the mean squared distance to it."""
        k = self.k.to(flat.dtype)
        distance = (flat**2).sum(-1, keepdim=True) - 2 * flat @ k.t() + (k**2).sum(-1)[None]
        min_distance, codes = distance.min(dim=-1)
        return codes, min_distance.mean()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, emb_width, T) latents -> (N, T) code indices."""
        codes, _ = self.nearest(self._flatten(x.float()))
        return codes.view(x.shape[0], x.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, T) code indices -> (N, emb_width, T) code vectors."""
        return F.embedding(codes, self.k).permute(0, 2, 1).contiguous()

    def forward(self, x: torch.Tensor, update: bool | None = None) -> QuantiseOutput:
        """Quantise (N, emb_width, T); in training also update the codebook (EMA + restarts)."""
        update = self.training if update is None else update
        n, _, t = x.shape
        flat = self._flatten(x.float())
        metrics: dict[str, torch.Tensor] = {
            "pn": torch.linalg.vector_norm(flat - flat.mean()).detach() / math.sqrt(flat.numel())
        }
        if update and not self._known_initialised():
            self.init_codebook(flat.detach())
        codes, fit = self.nearest(flat.detach() if update else flat)
        metrics["fit"] = fit.detach()
        quant = F.embedding(codes, self.k)
        if update:
            metrics.update(self.update_codebook(flat.detach(), codes))
        commit = torch.sum((quant.detach() - flat) ** 2) / flat.numel()
        quant = flat + (quant - flat).detach()  # straight-through
        quantised = quant.view(n, t, -1).permute(0, 2, 1).contiguous()
        if not self.training:
            quantised = quantised.detach()
        return QuantiseOutput(codes.view(n, t), quantised, commit, metrics)
