"""Factorised self-attention of the Jukebox priors, computed with `scaled_dot_product_attention`.

A context of n_ctx tokens is cut into `blocks` rows of `block_ctx = n_ctx / blocks` tokens. Each layer uses one
kind of attention (the reference's attn_func ids in brackets):

- dense [0]: every earlier position (causal).
- row [1]: earlier positions of the same row (causal).
- column [2]: the same offset in every earlier row, and itself.
- prev_row [3]: every position of the previous row (the first row attends to nothing and outputs zero).
- cross [6]: encoder-decoder attention from music queries to lyric keys (`c_enc_kv` projects the encoder).
- prime [7]: attention to the lyric prefix of a merged lyrics+music sequence (causal inside the prefix).

The sparse kinds are computed by reshaping into rows or columns, never with an n_ctx x n_ctx mask. For
sampling, `LayerCache` keeps only what each kind needs (row: the current row; prev_row: the previous and
current rows; dense and column: everything; cross and prime: the encoder / prefix keys) and the same maths
runs on chunks of new tokens, which gives the same outputs as the full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

KIND_IDS = {0: "dense", 1: "row", 2: "column", 3: "prev_row", 6: "cross", 7: "prime"}


def attn_kinds(attn_order: int, depth: int) -> list[str]:
    """The attention kind of every layer for the reference's `attn_order` settings."""
    rcp = [1, 2, 3]
    orders = {
        0: lambda d: 0,
        1: lambda d: [1, 2][d % 2],
        2: lambda d: rcp[d % 3],
        6: lambda d: [1, 2, 3, 6][d % 4],
        7: lambda d: [*rcp * 5, 6][d % 16],
        8: lambda d: [*rcp * 3, 6][d % 10],
        9: lambda d: [1, 2, 3, 0][d % 4],
        10: lambda d: [*rcp * 3, *[*rcp * 3, 6] * 7][d % 79],
        11: lambda d: [6, 6, 0][d % 3] if d % 16 == 15 else rcp[d % 3],
        12: lambda d: [7, 7, 0][d % 3] if d % 16 == 15 else rcp[d % 3],
    }
    if attn_order not in orders:
        raise ValueError(f"unsupported attn_order {attn_order}; supported: {sorted(orders)}")
    return [KIND_IDS[orders[attn_order](d)] for d in range(depth)]


def prime_keys_len(prime_len: int, blocks: int) -> int:
    """Keys a prime layer sees: the lyric prefix rounded up past a multiple of `blocks` (reference layout)."""
    return (prime_len // blocks + 1) * blocks


@dataclass
class LayerCache:
    """Keys and values one layer keeps between sampling steps, and the number of tokens seen so far."""

    length: int = 0
    key: torch.Tensor | None = None  # (B, H, T, d)
    value: torch.Tensor | None = None
    start: int = 0  # absolute position of key[:, :, 0]
    extra: dict = field(default_factory=dict)


class FactorizedAttention(nn.Module):
    def __init__(
        self,
        width: int,
        n_ctx: int,
        n_state: int,
        heads: int,
        kind: str,
        blocks: int | None = None,
        zero_out: bool = False,
        init_scale: float = 1.0,
        prime_len: int | None = None,
    ):
        super().__init__()
        if n_state % heads:
            raise ValueError(f"attention width {n_state} is not divisible by heads={heads}")
        if kind not in KIND_IDS.values():
            raise ValueError(f"unknown attention kind {kind!r}")
        if kind in ("row", "column", "prev_row", "prime") and (blocks is None or n_ctx % blocks):
            raise ValueError(f"{kind} attention needs n_ctx ({n_ctx}) divisible by blocks ({blocks})")
        self.width, self.n_ctx, self.n_state, self.heads, self.kind = width, n_ctx, n_state, heads, kind
        self.blocks = blocks
        self.block_ctx = n_ctx // blocks if blocks else n_ctx
        self.prime_len = prime_len
        if kind == "cross":
            self.c_attn = nn.Linear(width, n_state)
            self.c_enc_kv = nn.Linear(width, 2 * n_state)
        else:
            self.c_attn = nn.Linear(width, 3 * n_state)
        self.c_proj = nn.Linear(n_state, width)
        for lin in (self.c_attn, self.c_proj, getattr(self, "c_enc_kv", None)):
            if lin is not None:
                nn.init.normal_(lin.weight, std=0.02 * init_scale)
                nn.init.zeros_(lin.bias)
        if zero_out:
            nn.init.zeros_(self.c_proj.weight)
        self.record_attn = False
        self.last_weights: torch.Tensor | None = None

    # -- helpers ------------------------------------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, n_state) -> (..., H, T, d)."""
        *lead, t, _ = x.shape
        return x.view(*lead, t, self.heads, -1).transpose(-3, -2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        *lead, h, t, d = x.shape
        return x.transpose(-3, -2).reshape(*lead, t, h * d)

    def _sdpa(self, q, k, v, causal: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.record_attn:
            scale = q.shape[-1] ** -0.5
            w = (q @ k.transpose(-1, -2)) * scale
            if causal:
                w = w.masked_fill(torch.ones_like(w, dtype=torch.bool).triu(1 + w.shape[-1] - w.shape[-2]), -1e9)
            if mask is not None:
                w = w.masked_fill(~mask, -1e9)
            self.last_weights = w.softmax(-1).detach()
            return self.last_weights.to(v.dtype) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)

    # -- full sequences (training, scoring) ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, encoder_kv: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, width) with L a multiple of block_ctx (L <= n_ctx); returns (B, L, width)."""
        b, length, _ = x.shape
        if self.kind == "cross":
            if encoder_kv is None:
                raise ValueError("cross attention needs encoder_kv (the lyrics encoder output)")
            q = self._heads(self.c_attn(x))
            k, v = (self._heads(t) for t in self.c_enc_kv(encoder_kv.to(x.dtype)).chunk(2, dim=-1))
            return self.c_proj(self._merge(self._sdpa(q, k, v)))
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        bc = self.block_ctx
        if self.kind in ("row", "column", "prev_row") and length % bc:
            raise ValueError(f"{self.kind} attention needs a length that is a multiple of block_ctx {bc}, got {length}")
        if self.kind == "dense":
            a = self._sdpa(self._heads(q), self._heads(k), self._heads(v), causal=True)
        elif self.kind == "row":
            rows = lambda t: self._heads(t.reshape(b * length // bc, bc, -1))  # noqa: E731
            a = self._merge(self._sdpa(rows(q), rows(k), rows(v), causal=True))
            return self.c_proj(a.reshape(b, length, -1))
        elif self.kind == "column":
            cols = lambda t: self._heads(t.reshape(b, length // bc, bc, -1).transpose(1, 2))  # noqa: E731
            a = self._merge(self._sdpa(cols(q), cols(k), cols(v), causal=True))  # (B, bc, rows, n_state)
            return self.c_proj(a.transpose(1, 2).reshape(b, length, -1))
        elif self.kind == "prev_row":
            n_rows = length // bc
            shift = lambda t: F.pad(t.reshape(b, n_rows, bc, -1)[:, :-1], (0, 0, 0, 0, 1, 0))  # noqa: E731
            rows = lambda t: self._heads(t.reshape(b * n_rows, bc, -1))  # noqa: E731
            a = self._sdpa(rows(q), rows(shift(k)), rows(shift(v)))
            a = self._merge(a).reshape(b, length, -1)
            return self.c_proj(a)
        else:  # prime
            n_keys = prime_keys_len(self.prime_len, self.blocks)
            kq, kk, kv = self._heads(q), self._heads(k[:, :n_keys]), self._heads(v[:, :n_keys])
            mask = torch.ones(length, n_keys, dtype=torch.bool, device=x.device).tril(max(n_keys - length, 0))
            a = self._sdpa(kq, kk, kv, mask=mask)
        return self.c_proj(self._merge(a))

    # -- incremental decoding -------------------------------------------------------------------------------
    def forward_cached(
        self, x: torch.Tensor, cache: LayerCache, encoder_kv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next T tokens (B, T, width) given everything this layer cached; updates the cache.

        T = 1 when sampling, larger when a prompt is pushed through in chunks. Same outputs as `forward` on
        the whole sequence.
        """
        b, t, _ = x.shape
        p0 = cache.length
        if self.kind == "cross":
            if "enc" not in cache.extra:
                if encoder_kv is None:
                    raise ValueError("cross attention needs encoder_kv (the lyrics encoder output)")
                cache.extra["enc"] = [self._heads(u) for u in self.c_enc_kv(encoder_kv.to(x.dtype)).chunk(2, dim=-1)]
            k, v = cache.extra["enc"]
            cache.length += t
            return self.c_proj(self._merge(self._sdpa(self._heads(self.c_attn(x)), k, v)))
        q, k, v = (self._heads(u) for u in self.c_attn(x).chunk(3, dim=-1))
        if self.kind in ("row", "prev_row"):
            out = self._rows_cached(q, k, v, cache)
        else:
            keys = k if cache.key is None else torch.cat([cache.key, k], dim=2)
            values = v if cache.value is None else torch.cat([cache.value, v], dim=2)
            if self.kind == "prime":
                n_keys = prime_keys_len(self.prime_len, self.blocks)
                keys, values = keys[:, :, :n_keys], values[:, :, :n_keys]
            cache.key, cache.value = keys, values
            pos = p0 + torch.arange(t, device=x.device)
            if self.kind == "column":
                out = self._column_cached(q, keys, values, pos)
            else:  # dense and prime: key j visible to the query at position p when j <= p
                mask = (
                    None
                    if t == 1 and self.kind == "dense"
                    else torch.arange(keys.shape[2], device=x.device)[None] <= pos[:, None]
                )
                out = self._sdpa(q, keys, values, mask=mask)
        cache.length += t
        return self.c_proj(self._merge(out))

    def _column_cached(self, q, keys, values, pos):
        """Each query attends to the positions of its column up to itself (gathered, no n_ctx mask)."""
        bc = self.block_ctx
        if q.shape[2] == 1:
            p = int(pos[0])
            return self._sdpa(q, keys[:, :, p % bc : p + 1 : bc], values[:, :, p % bc : p + 1 : bc])
        n_rows = int(pos[-1]) // bc + 1
        idx = (pos % bc)[:, None] + bc * torch.arange(n_rows, device=q.device)[None]  # (T, rows)
        valid = idx <= pos[:, None]
        idx = idx.clamp(max=keys.shape[2] - 1)
        k = keys[:, :, idx]  # (B, H, T, rows, d)
        v = values[:, :, idx]
        w = torch.einsum("bhtd,bhtrd->bhtr", q, k) * q.shape[-1] ** -0.5
        w = w.masked_fill(~valid, float("-inf")).softmax(-1)
        return torch.einsum("bhtr,bhtrd->bhtd", w, v)

    def _rows_cached(self, q, k, v, cache: LayerCache):
        """Row and previous-row kinds: walk the chunk row by row, keeping at most the current (and previous) row."""
        bc, outs, start = self.block_ctx, [], 0
        t = q.shape[2]
        while start < t:
            p = cache.length  # advanced segment by segment below
            row_offset = p % bc
            seg = min(t - start, bc - row_offset)
            qs, ks, vs = q[:, :, start : start + seg], k[:, :, start : start + seg], v[:, :, start : start + seg]
            cur_k = ks if cache.key is None else torch.cat([cache.key, ks], dim=2)
            cur_v = vs if cache.value is None else torch.cat([cache.value, vs], dim=2)
            if self.kind == "row":
                mask = None
                if seg > 1:
                    mask = (
                        torch.arange(cur_k.shape[2], device=q.device)[None]
                        <= (row_offset + torch.arange(seg, device=q.device))[:, None]
                    )
                outs.append(self._sdpa(qs, cur_k, cur_v, mask=mask))
            else:
                prev = cache.extra.get("prev")
                outs.append(torch.zeros_like(qs) if prev is None else self._sdpa(qs, prev[0], prev[1]))
            if row_offset + seg == bc:  # the row is complete: it becomes the previous row
                cache.key = cache.value = None
                if self.kind == "prev_row":
                    cache.extra["prev"] = (cur_k, cur_v)
            else:
                cache.key, cache.value = cur_k, cur_v
            cache.length += seg
            start += seg
        cache.length -= t  # forward_cached adds the whole chunk once
        return torch.cat(outs, dim=2)
