"""The sparse transformer of the priors: pre-LN residual blocks of factorised attention and a quick-GELU MLP.

Module names mirror the reference (`transformer._attn_mods.i.{attn.c_attn, attn.c_proj, ln_0, mlp.c_fc,
mlp.c_proj, ln_1}`, `x_emb`, `start_token`, `pos_emb.pos_emb`, `x_out`) so its checkpoints import by renaming
and transposing its (n_in, n_out) linear weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from jukebox_pl.errors import UserValueError
from jukebox_pl.prior.attention import FactorizedAttention, LayerCache, attn_kinds, linear_rows


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, zero_out: bool = False, init_scale: float = 1.0):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(width, hidden), nn.Linear(hidden, width)
        for lin in (self.c_fc, self.c_proj):
            nn.init.normal_(lin.weight, std=0.02 * init_scale)
            nn.init.zeros_(lin.bias)
        if zero_out:
            nn.init.zeros_(self.c_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))

    def forward_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The same for the few rows of a sampling step (see `linear_rows`)."""
        return linear_rows(self.c_proj, quick_gelu(linear_rows(self.c_fc, x)))


class ResAttnBlock(nn.Module):
    """x + a + m with a = attn(LN(x)), m = mlp(LN(x + a)) (res_scale multiplies a + m when set)."""

    def __init__(
        self,
        width: int,
        n_ctx: int,
        heads: int,
        kind: str,
        blocks: int | None,
        m_attn: float = 0.25,
        m_mlp: float = 1.0,
        zero_out: bool = False,
        init_scale: float = 1.0,
        res_scale: float = 1.0,
        prime_len: int | None = None,
    ):
        super().__init__()
        self.attn = FactorizedAttention(
            width,
            n_ctx,
            int(m_attn * width),
            heads,
            kind,
            blocks,
            zero_out=zero_out or kind == "cross",
            init_scale=init_scale,
            prime_len=prime_len,
        )
        self.ln_0 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(m_mlp * width), zero_out, init_scale)
        self.ln_1 = nn.LayerNorm(width)
        self.res_scale = res_scale

    def _combine(self, x, a, m):
        return x + a + m if self.res_scale == 1.0 else x + self.res_scale * (a + m)

    def forward(self, x: torch.Tensor, encoder_kv: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attn(self.ln_0(x), encoder_kv)
        return self._combine(x, a, self.mlp(self.ln_1(x + a)))

    def forward_cached(self, x, cache: LayerCache, encoder_kv=None) -> torch.Tensor:
        a = self.attn.forward_cached(self.ln_0(x), cache, encoder_kv)
        return self._combine(x, a, self.mlp.forward_rows(self.ln_1(x + a)))

    def forward_static(self, x, cache: LayerCache, pos: torch.Tensor) -> torch.Tensor:
        a = self.attn.forward_static(self.ln_0(x), cache, pos)
        return self._combine(x, a, self.mlp.forward_rows(self.ln_1(x + a)))


class Transformer(nn.Module):
    """The stack of `depth` factorised sparse-attention blocks (the reference's): hidden states (B, L, width) ->
    (B, L, width), L <= `n_ctx` positions; `attn_order` picks the attention pattern of each layer, `blocks` the
    block size of the factorised attention, `m_attn` / `m_mlp` the widths of attention and MLP relative to `width`.
    """

    def __init__(
        self,
        width: int,
        n_ctx: int,
        heads: int,
        depth: int,
        attn_order: int = 2,
        blocks: int | None = None,
        m_attn: float = 0.25,
        m_mlp: float = 1.0,
        zero_out: bool = False,
        init_scale: float = 1.0,
        res_scale: bool = False,
        prime_len: int | None = None,
        checkpoint_res: bool = False,
    ):
        super().__init__()
        self.kinds = attn_kinds(attn_order, depth)
        scale = 1.0 / depth if res_scale else 1.0
        self._attn_mods = nn.ModuleList(
            ResAttnBlock(width, n_ctx, heads, kind, blocks, m_attn, m_mlp, zero_out, init_scale, scale, prime_len)
            for kind in self.kinds
        )
        self.checkpoint_res = checkpoint_res
        self.caches: list[LayerCache] | None = None

    def forward(
        self,
        x: torch.Tensor,
        encoder_kv: torch.Tensor | None = None,
        *,
        return_layers: bool = False,
        depth: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, L, width) -> hidden states (B, L, width); `depth`: only the first `depth` blocks run.

        With `return_layers`, also every block's output: `(x, [out_0, ..., out_{depth-1}])`, `out_{depth-1} is x`.
        """
        layers = []
        for block in self._attn_mods[:depth]:
            if self.checkpoint_res and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, encoder_kv, use_reentrant=False)
            else:
                x = block(x, encoder_kv)
            if return_layers:
                layers.append(x)
        return (x, layers) if return_layers else x

    @contextmanager
    def streaming(self, capacity: int | None = None, static: bool = False) -> Iterator[list[LayerCache]]:
        """KV caches for incremental decoding, sized for `capacity` positions (default n_ctx), always cleared on
        exit (even after an error). `static`: zero-filled buffers, as `forward_static` needs."""
        self.caches = [LayerCache(capacity=capacity, zeroed=static) for _ in self._attn_mods]
        try:
            yield self.caches
        finally:
            self.caches = None

    def forward_cached(self, x: torch.Tensor, encoder_kv: torch.Tensor | None = None) -> torch.Tensor:
        if self.caches is None:
            raise RuntimeError("forward_cached needs `with transformer.streaming():`")
        for block, cache in zip(self._attn_mods, self.caches):
            x = block.forward_cached(x, cache, encoder_kv)
        return x

    def forward_static(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One token at device-side position `pos` through every block (see `FactorizedAttention.forward_static`)."""
        for block, cache in zip(self._attn_mods, self.caches):
            x = block.forward_static(x, cache, pos)
        return x


class AutoregressiveTransformer(nn.Module):
    """Tokens -> next-token logits: embedding, start/conditioning token, learned positions, transformer, head.

    With `only_encode` it returns the hidden states (B, L, width) instead (the lyrics encoder). Any model gives
    its final hidden states with `hidden(...)` (every block's too with `all_layers=True`) or beside the logits
    with `forward(..., return_hidden=True)`; `head(hidden)` turns them into the logits `forward` returns.
    `y_cond` (B, 1, width) replaces the learned start token with the label embedding; `x_cond` (B, L or 1,
    width) is added to the input (and again to the output, as the reference does unless the decoder is
    merged); `encoder_kv` feeds the cross-attention layers.
    """

    def __init__(
        self,
        bins: int,
        n_ctx: int,
        width: int,
        depth: int,
        heads: int,
        attn_order: int = 2,
        blocks: int | None = None,
        m_attn: float = 0.25,
        m_mlp: float = 1.0,
        init_scale: float = 1.0,
        zero_out: bool = False,
        res_scale: bool = False,
        y_cond: bool = False,
        merged_decoder: bool = False,
        prime_len: int | None = None,
        checkpoint_res: bool = False,
        tie_embeddings: bool | None = None,
        only_encode: bool = False,
    ):
        super().__init__()
        self.bins, self.n_ctx, self.width = bins, n_ctx, width
        self.x_emb = nn.Embedding(bins, width)
        nn.init.normal_(self.x_emb.weight, std=0.02 * init_scale)
        self.y_cond = y_cond
        if not y_cond:
            self.start_token = nn.Parameter(torch.randn(1, width) * 0.01 * init_scale)
        self.pos_emb = nn.Module()
        self.pos_emb.pos_emb = nn.Parameter(torch.randn(n_ctx, width) * 0.01 * init_scale)
        self.transformer = Transformer(
            width,
            n_ctx,
            heads,
            depth,
            attn_order,
            blocks,
            m_attn,
            m_mlp,
            zero_out,
            init_scale,
            res_scale,
            prime_len,
            checkpoint_res,
        )
        self.add_cond_after_transformer = not merged_decoder
        self.only_encode = only_encode
        if only_encode:  # a lyrics encoder: its hidden states are the output, it has no head
            return
        self.x_out = nn.Linear(width, bins, bias=False)
        # Tied to the input embedding unless the decoder is merged (the released prior_5b keeps its own head).
        if (not merged_decoder) if tie_embeddings is None else tie_embeddings:
            self.x_out.weight = self.x_emb.weight

    def _start(self, n: int, y_cond: torch.Tensor | None) -> torch.Tensor:
        if self.y_cond:
            if y_cond is None:
                raise UserValueError("this prior is conditioned on labels: pass y_cond")
            return y_cond.reshape(n, 1, self.width)
        return self.start_token.expand(n, 1, self.width)

    def hidden(
        self,
        tokens: torch.Tensor,
        x_cond=None,
        y_cond=None,
        encoder_kv=None,
        *,
        all_layers: bool = False,
        depth: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens (B, L) -> final hidden states (B, L, width), the input of the head; position i has seen
        tokens[:, :i] only. With `all_layers`, also every transformer block's output (a list of `depth`
        (B, L, width) tensors, before `x_cond` is added back). `depth`: stop after that many blocks (what a prior
        built with that depth returns, as feature extraction reads a layer)."""
        n, length = tokens.shape
        if length > self.n_ctx:
            raise UserValueError(f"{length} tokens exceed the context n_ctx={self.n_ctx}")
        x = torch.cat([self._start(n, y_cond), self.x_emb(tokens[:, :-1])], dim=1)
        cond = 0.0 if x_cond is None else x_cond[:, :length] if x_cond.shape[1] > 1 else x_cond
        x = (x + self.pos_emb.pos_emb[:length] + cond).to(self.pos_emb.pos_emb.dtype)  # weights in bf16/fp16
        out = self.transformer(x, encoder_kv, return_layers=all_layers, depth=depth)
        x, layers = out if all_layers else (out, None)
        if self.add_cond_after_transformer:
            x = x + cond
        return (x, layers) if all_layers else x

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., width) -> logits (..., bins)."""
        if self.only_encode:
            raise UserValueError("this transformer is an encoder (only_encode=True): it has no head")
        return self.x_out(hidden)

    def forward(
        self, tokens: torch.Tensor, x_cond=None, y_cond=None, encoder_kv=None, *, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> logits (B, L, bins); position i predicts tokens[:, i] from tokens[:, :i].

        With `return_hidden`, `(logits, hidden)` where `hidden` (B, L, width) are the final hidden states and
        `logits == self.head(hidden)`. An `only_encode` transformer (no head) returns the hidden states.
        """
        if self.only_encode and return_hidden:
            raise UserValueError("this transformer is an encoder (only_encode=True): forward() already returns hidden")
        x = self.hidden(tokens, x_cond, y_cond, encoder_kv)
        if self.only_encode:
            return x
        logits = self.x_out(x)
        return (logits, x) if return_hidden else logits

    @staticmethod
    def bits_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1)) / math.log(2.0)

    # -- incremental decoding -------------------------------------------------------------------------------
    def streaming(self, capacity: int | None = None, static: bool = False):
        """KV caches for `step` (see `Transformer.streaming`); `capacity`: the positions the stream will reach;
        `static`: buffers `step_static` can read whole."""
        return self.transformer.streaming(capacity, static)

    def step(
        self, prev_tokens: torch.Tensor | None, start: int, n: int, x_cond=None, y_cond=None, encoder_kv=None
    ) -> torch.Tensor:
        """Logits for positions [start, start + T) given the tokens before them (inside `streaming()`).

        `prev_tokens` (B, T) are the tokens at positions start-1 .. start+T-2 (None at start == 0 with T == 1,
        where the start/label token is the input).
        """
        parts = []
        if start == 0:
            parts.append(self._start(n, y_cond))
            if prev_tokens is not None and prev_tokens.shape[1] > 0:
                parts.append(self.x_emb(prev_tokens))
        else:
            parts.append(self.x_emb(prev_tokens))
        x = torch.cat(parts, dim=1)
        t = x.shape[1]
        if x_cond is None:
            cond = 0.0
        elif x_cond.shape[1] > 1:
            cond = x_cond[:, start : start + t]
        else:
            cond = x_cond
        x = (x + self.pos_emb.pos_emb[start : start + t] + cond).to(self.pos_emb.pos_emb.dtype)
        x = self.transformer.forward_cached(x, encoder_kv)
        if self.add_cond_after_transformer:
            x = x + cond
        return x if self.only_encode else linear_rows(self.x_out, x)

    def step_static(self, prev_token: torch.Tensor, pos: torch.Tensor, x_cond=None, encoder_kv=None) -> torch.Tensor:
        """Logits (B, 1, bins) for position `pos` (a 0-dim long tensor, >= 1) given `prev_token` (B, 1), the
        token at pos - 1, inside `streaming(capacity, static=True)` after the stream was primed with `step`.

        The fixed-shape twin of `step` for one token: positions are gathered with index ops on the device, so
        the call can be captured once and replayed (see `prior.decoding.StaticDecoder`)."""
        at = pos.view(1)
        cond = 0.0 if x_cond is None else x_cond.index_select(1, at) if x_cond.shape[1] > 1 else x_cond
        x = (self.x_emb(prev_token) + self.pos_emb.pos_emb.index_select(0, at) + cond).to(self.pos_emb.pos_emb.dtype)
        x = self.transformer.forward_static(x, pos)
        if self.add_cond_after_transformer:
            x = x + cond
        return x if self.only_encode else linear_rows(self.x_out, x)
