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

Two ways to take a sampling step: `forward_cached` (any number of tokens, reads exactly the slots written so
far: shapes change every token) and `forward_static` (one token at a position held in a device tensor, reads
the whole preallocated cache under a mask: every shape fixed and no host sync, so the step can be captured
in a CUDA graph or compiled once). Both write the same cache layout, so a prompt primed in chunks by the first
continues token by token with the second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from jukebox_pl.errors import UserValueError

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
        raise UserValueError(f"unsupported attn_order {attn_order}; supported: {sorted(orders)}")
    return [KIND_IDS[orders[attn_order](d)] for d in range(depth)]


def linear_rows(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)` for the few rows of a sampling step, computed as (W @ x^T)^T on CPU from 8 rows up.

    CPU BLAS picks a slow kernel for x @ W^T when x has ~8-256 rows; the transposed product gives the same
    numbers 2-4x faster for batched sampling (measured by bench/prior.py). Anything else goes to `linear`."""
    rows = x.numel() // x.shape[-1]
    if not isinstance(linear, nn.Linear) or x.device.type != "cpu" or not 8 <= rows <= 256 or torch.is_grad_enabled():
        return linear(x)
    x2 = x.reshape(rows, x.shape[-1]).t()
    y = linear.weight @ x2 if linear.bias is None else torch.addmm(linear.bias[:, None], linear.weight, x2)
    return y.t().contiguous().reshape(*x.shape[:-1], linear.out_features)


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
    # Fill new buffers with NaN: a test that any read of a slot not written yet shows up in the outputs.
    poison: bool = False
    # Fill new buffers with zeros: `forward_static` reads every slot (masked), and uninitialised memory can hold
    # NaN, which a zero attention weight does not cancel.
    zeroed: bool = False
    # Positions this stream will reach (the window being sampled): the column and dense caches are allocated for
    # that many, not for n_ctx (a short window or a 64-token continuation at batch 16 needs a fraction of the
    # memory), and grow by doubling if a stream goes further. None: n_ctx.
    capacity: int | None = None

    def empty(self, like: torch.Tensor, *shape: int) -> torch.Tensor:
        if self.zeroed:
            return like.new_zeros(shape)
        buf = like.new_empty(shape)
        return buf.fill_(float("nan")) if self.poison else buf

    def slots(self, needed: int, limit: int, have: int = 0, per_slot: int = 1) -> int:
        """Slots to allocate for `needed` of them now, up to `limit`: the stream's capacity at first (`have` 0),
        then double what there is (so a stream that outgrows its capacity reallocates only log-many times)."""
        want = 2 * have if have else -(-(self.capacity or limit * per_slot) // per_slot)
        return min(limit, max(needed, want))

    def grow(self, dim: int, slots: int) -> None:
        """Reallocate key and value with `slots` along `dim`, keeping what they hold."""
        for name in ("key", "value"):
            old = getattr(self, name)
            shape = list(old.shape)
            shape[dim] = slots
            new = self.empty(old, *shape)
            new.narrow(dim, 0, old.shape[dim]).copy_(old)
            setattr(self, name, new)


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
            raise UserValueError(f"attention width {n_state} is not divisible by heads={heads}")
        if kind not in KIND_IDS.values():
            raise UserValueError(f"unknown attention kind {kind!r}")
        if kind in ("row", "column", "prev_row", "prime") and (blocks is None or n_ctx % blocks):
            raise UserValueError(f"{kind} attention needs n_ctx ({n_ctx}) divisible by blocks ({blocks})")
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
    # `_heads` / `_merge` serve the cached path, called per layer and token when sampling: plain views there, as
    # einops' pattern handling (~10 us a call) would slow sampling of small priors by 10-20%. `forward` reads
    # the same layouts as einops patterns.
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, n_state) -> (..., H, T, d), i.e. '... t (h d) -> ... h t d'."""
        *lead, t, _ = x.shape
        return x.view(*lead, t, self.heads, -1).transpose(-3, -2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, T, d) -> (..., T, n_state), i.e. '... h t d -> ... t (h d)'."""
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
        length = x.shape[1]
        if self.kind == "cross":
            if encoder_kv is None:
                raise UserValueError("cross attention needs encoder_kv (the lyrics encoder output)")
            k, v = self.c_enc_kv(encoder_kv.to(x.dtype)).chunk(2, dim=-1)
            heads = lambda t: rearrange(t, "b t (h d) -> b h t d", h=self.heads)  # noqa: E731
            a = self._sdpa(heads(self.c_attn(x)), heads(k), heads(v))
            return self.c_proj(rearrange(a, "b h t d -> b t (h d)"))
        if self.kind in ("row", "column", "prev_row") and length % self.block_ctx:
            raise UserValueError(
                f"{self.kind} attention needs a length that is a multiple of block_ctx {self.block_ctx}, got {length}"
            )
        return self.c_proj(self._attend(*self.c_attn(x).chunk(3, dim=-1)))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries, keys, values (B, L, n_state) of a whole sequence -> attention output (B, L, n_state); the
        sparse kinds as plain attention over blocks: r rows of c = block_ctx tokens each (L a multiple of c)."""
        b, length, _ = q.shape
        bc = self.block_ctx
        heads = lambda t: rearrange(t, "b t (h d) -> b h t d", h=self.heads)  # noqa: E731
        if self.kind == "dense":
            a = self._sdpa(heads(q), heads(k), heads(v), causal=True)
        elif self.kind == "row":  # each row on its own, causal inside it
            rows = lambda t: rearrange(t, "b (r c) (h d) -> (b r) h c d", c=bc, h=self.heads)  # noqa: E731
            a = self._sdpa(rows(q), rows(k), rows(v), causal=True)
            return rearrange(a, "(b r) h c d -> b (r c) (h d)", b=b)
        elif self.kind == "column":  # each offset c inside a row, causal over the rows
            cols = lambda t: rearrange(t, "b (r c) (h d) -> b c h r d", c=bc, h=self.heads)  # noqa: E731
            a = self._sdpa(cols(q), cols(k), cols(v), causal=True)
            return rearrange(a, "b c h r d -> b (r c) (h d)")
        elif self.kind == "prev_row":  # row r sees all of row r - 1; row 0 sees zeros
            rows = lambda t: rearrange(t, "b (r c) n -> b r c n", c=bc)  # noqa: E731
            shift = lambda t: F.pad(rows(t)[:, :-1], (0, 0, 0, 0, 1, 0))  # noqa: E731
            blocks = lambda t: rearrange(t, "b r c (h d) -> (b r) h c d", h=self.heads)  # noqa: E731
            a = self._sdpa(blocks(rows(q)), blocks(shift(k)), blocks(shift(v)))
            return rearrange(a, "(b r) h c d -> b (r c) (h d)", b=b)
        else:  # prime: key j (of the lyric prefix's keys) visible to query i when j <= i
            n_keys = min(prime_keys_len(self.prime_len, self.blocks), length)
            mask = torch.arange(n_keys, device=q.device)[None] <= torch.arange(length, device=q.device)[:, None]
            a = self._sdpa(heads(q), heads(k[:, :n_keys]), heads(v[:, :n_keys]), mask=mask)
        return rearrange(a, "b h t d -> b t (h d)")

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
                    raise UserValueError("cross attention needs encoder_kv (the lyrics encoder output)")
                cache.extra["enc"] = [self._heads(u) for u in self.c_enc_kv(encoder_kv.to(x.dtype)).chunk(2, dim=-1)]
            k, v = cache.extra["enc"]
            cache.length += t
            return linear_rows(self.c_proj, self._merge(self._sdpa(self._heads(linear_rows(self.c_attn, x)), k, v)))
        qkv = linear_rows(self.c_attn, x).chunk(3, dim=-1)
        if p0 == 0 and t > 1:  # a fresh stream's prompt: one pass of the full-sequence maths, then the cache
            out = self._prime(*qkv, cache)
            cache.length += t
            return linear_rows(self.c_proj, out)
        q, k, v = (self._heads(u) for u in qkv)
        if self.kind in ("row", "prev_row"):
            out = self._rows_cached(q, k, v, cache)
        elif self.kind == "column":
            out = self._column_cached(q, k, v, cache)
        else:  # dense and prime: key j visible to the query at position p when j <= p
            capacity = self.n_ctx if self.kind == "dense" else prime_keys_len(self.prime_len, self.blocks)
            needed = min(p0 + t, capacity)
            if cache.key is None:  # allocated for the stream, written in place (no copy of the cache per token)
                slots = cache.slots(needed, capacity) if self.kind == "dense" else capacity
                cache.key = cache.empty(k, b, self.heads, slots, k.shape[-1])
                cache.value = cache.empty(v, b, self.heads, slots, v.shape[-1])
            elif needed > cache.key.shape[2]:
                cache.grow(2, cache.slots(needed, capacity, have=cache.key.shape[2]))
            end = min(p0 + t, capacity)
            if p0 < capacity:
                cache.key[:, :, p0:end] = k[:, :, : end - p0]
                cache.value[:, :, p0:end] = v[:, :, : end - p0]
            keys, values = cache.key[:, :, :end], cache.value[:, :, :end]
            mask = None  # a single query sees every key cached so far (prime: the prefix up to itself)
            if t > 1:
                pos = p0 + torch.arange(t, device=x.device)
                mask = torch.arange(end, device=x.device)[None] <= pos[:, None]
            out = self._sdpa(q, keys, values, mask=mask)
        cache.length += t
        return linear_rows(self.c_proj, self._merge(out))

    def _prime(self, q, k, v, cache: LayerCache) -> torch.Tensor:
        """The first T tokens of a stream, (B, T, n_state) each: the attention of `forward` (fused SDPA per kind,
        padded to whole rows: later positions never change earlier outputs), and the cache each kind keeps."""
        b, t, _ = q.shape
        bc = self.block_ctx
        pad = (-t) % bc if self.kind in ("row", "column", "prev_row") else 0
        out = self._attend(*(F.pad(u, (0, 0, 0, pad)) for u in (q, k, v)))[:, :t]
        key, value = self._heads(k), self._heads(v)  # (B, H, T, d)
        h, d = key.shape[1], key.shape[-1]
        if self.kind in ("dense", "prime"):
            capacity = self.n_ctx if self.kind == "dense" else prime_keys_len(self.prime_len, self.blocks)
            end = min(t, capacity)
            slots = cache.slots(end, capacity) if self.kind == "dense" else capacity
            cache.key, cache.value = cache.empty(key, b, h, slots, d), cache.empty(value, b, h, slots, d)
            cache.key[:, :, :end], cache.value[:, :, :end] = key[:, :, :end], value[:, :, :end]
        elif self.kind == "row":  # the last row, when it is not complete
            cache.key, cache.value = cache.empty(key, b, h, bc, d), cache.empty(value, b, h, bc, d)
            done = t - t % bc
            cache.key[:, :, : t - done], cache.value[:, :, : t - done] = key[:, :, done:], value[:, :, done:]
        elif self.kind == "prev_row":  # the last two rows, row r in slot r % 2
            cache.key, cache.value = cache.empty(key, b, h, 2, bc, d), cache.empty(value, b, h, 2, bc, d)
            last = (t - 1) // bc
            for r in range(max(last - 1, 0), last + 1):
                n = min(bc, t - r * bc)
                cache.key[:, :, r % 2, :n] = key[:, :, r * bc : r * bc + n]
                cache.value[:, :, r % 2, :n] = value[:, :, r * bc : r * bc + n]
        else:  # column: every position, as (B, H, column, row, d)
            rows = (t + pad) // bc
            slots = cache.slots(rows, self.n_ctx // bc, per_slot=bc)
            cache.key, cache.value = cache.empty(key, b, h, bc, slots, d), cache.empty(value, b, h, bc, slots, d)
            by_column = lambda u: F.pad(u, (0, 0, 0, pad)).view(b, h, rows, bc, d).transpose(2, 3)  # noqa: E731
            cache.key[:, :, :, :rows], cache.value[:, :, :, :rows] = by_column(key), by_column(value)
        return out

    def _column_cached(self, q, k, v, cache: LayerCache):
        """Column kind: keys kept as (B, H, column, row, d), so a query reads its column contiguously."""
        bc, (b, h, t, d) = self.block_ctx, q.shape
        rows_needed = (cache.length + t - 1) // bc + 1
        if cache.key is None:  # rows for the stream's capacity (n_ctx // bc at most), grown if it goes further
            rows = cache.slots(rows_needed, self.n_ctx // bc, per_slot=bc)
            cache.key = cache.empty(k, b, h, bc, rows, d)
            cache.value = cache.empty(v, b, h, bc, rows, d)
        elif rows_needed > cache.key.shape[3]:
            cache.grow(3, cache.slots(rows_needed, self.n_ctx // bc, have=cache.key.shape[3], per_slot=bc))
        if t == 1:  # the sampling step: plain slices, no index tensors
            col, row = divmod(cache.length, bc)[::-1]
            cache.key[:, :, col, row] = k[:, :, 0]
            cache.value[:, :, col, row] = v[:, :, 0]
            return self._sdpa(q, cache.key[:, :, col, : row + 1], cache.value[:, :, col, : row + 1])
        pos = cache.length + torch.arange(t, device=q.device)
        cols, rows = pos % bc, pos // bc
        cache.key[:, :, cols, rows] = k
        cache.value[:, :, cols, rows] = v
        n_rows = int(rows[-1]) + 1
        keys, values = cache.key[:, :, cols, :n_rows], cache.value[:, :, cols, :n_rows]  # (B, H, T, rows, d)
        valid = torch.arange(n_rows, device=q.device)[None] <= rows[:, None]
        w = torch.einsum("bhtd,bhtrd->bhtr", q, keys) * d**-0.5
        w = w.masked_fill(~valid, float("-inf")).softmax(-1)
        values = values.masked_fill(~valid[..., None], 0.0)  # rows not written yet hold uninitialised memory
        return torch.einsum("bhtr,bhtrd->bhtd", w, values)

    def _rows_cached(self, q, k, v, cache: LayerCache):
        """Row and previous-row kinds: walk the chunk row by row. Row keeps one row (B, H, bc, d); previous row
        keeps two, (B, H, 2, bc, d), row r in slot r % 2, so the previous row is the other slot."""
        bc, outs, start = self.block_ctx, [], 0
        b, h, t, d = q.shape
        if cache.key is None:
            shape = (b, h, bc, d) if self.kind == "row" else (b, h, 2, bc, d)
            cache.key, cache.value = cache.empty(k, *shape), cache.empty(v, *shape)
        p = cache.length
        while start < t:
            row, row_offset = divmod(p, bc)
            seg = min(t - start, bc - row_offset)
            end = row_offset + seg
            qs = q[:, :, start : start + seg]
            if self.kind == "row":
                cache.key[:, :, row_offset:end] = k[:, :, start : start + seg]
                cache.value[:, :, row_offset:end] = v[:, :, start : start + seg]
                mask = None
                if seg > 1:
                    mask = (
                        torch.arange(end, device=q.device)[None]
                        <= (row_offset + torch.arange(seg, device=q.device))[:, None]
                    )
                outs.append(self._sdpa(qs, cache.key[:, :, :end], cache.value[:, :, :end], mask=mask))
            else:
                cur = row % 2
                cache.key[:, :, cur, row_offset:end] = k[:, :, start : start + seg]
                cache.value[:, :, cur, row_offset:end] = v[:, :, start : start + seg]
                if row == 0:  # the first row sees nothing
                    outs.append(torch.zeros_like(qs))
                else:
                    outs.append(self._sdpa(qs, cache.key[:, :, 1 - cur], cache.value[:, :, 1 - cur]))
            p += seg
            start += seg
        return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

    # -- fixed-shape decoding -------------------------------------------------------------------------------
    def forward_static(self, x: torch.Tensor, cache: LayerCache, pos: torch.Tensor) -> torch.Tensor:
        """One token (B, 1, width) at position `pos` (a 0-dim long tensor on x's device), on a cache allocated
        for the whole stream with zeroed buffers (`LayerCache.zeroed`) and already primed by `forward_cached`.

        Every tensor has the same shape at every position and nothing is read back to the host, so the step
        can be captured once (CUDA graph, `torch.compile`) and replayed with `pos` advanced on the device. Each
        kind writes its slot with an index op and attends over its whole buffer under a mask: the same outputs
        as `forward_cached`. `cache.length` is the caller's to advance."""
        if self.kind == "cross":
            k, v = cache.extra["enc"]
            return linear_rows(self.c_proj, self._merge(self._sdpa(self._heads(linear_rows(self.c_attn, x)), k, v)))
        q, k, v = (self._heads(u) for u in linear_rows(self.c_attn, x).chunk(3, dim=-1))  # (B, H, 1, d)
        bc, (b, h, _, d) = self.block_ctx, q.shape
        if self.kind in ("dense", "prime"):
            slots = cache.key.shape[2]
            slot = pos.clamp(max=slots - 1).view(1)
            if self.kind == "prime":  # positions past the lyric prefix's keys write nothing
                inside = pos < slots
                k = torch.where(inside, k, cache.key.index_select(2, slot))
                v = torch.where(inside, v, cache.value.index_select(2, slot))
            cache.key.index_copy_(2, slot, k)
            cache.value.index_copy_(2, slot, v)
            keys, values, visible = cache.key, cache.value, torch.arange(slots, device=x.device) <= pos
        elif self.kind == "row":
            offset = (pos % bc).view(1)
            cache.key.index_copy_(2, offset, k)
            cache.value.index_copy_(2, offset, v)
            keys, values, visible = cache.key, cache.value, torch.arange(bc, device=x.device) <= offset
        elif self.kind == "prev_row":  # slots (2 * bc): row r at r % 2; the previous row is the other slot
            row, offset = pos // bc, pos % bc
            flat = lambda t: t.view(b, h, 2 * bc, d)  # noqa: E731
            flat(cache.key).index_copy_(2, ((row % 2) * bc + offset).view(1), k)
            flat(cache.value).index_copy_(2, ((row % 2) * bc + offset).view(1), v)
            prev = ((row + 1) % 2).view(1)  # row 0 reads the untouched zero slot: an output of exactly zero
            keys, values = cache.key.index_select(2, prev)[:, :, 0], cache.value.index_select(2, prev)[:, :, 0]
            visible = None
        else:  # column: (B, H, bc, rows, d); the query reads its column, rows up to its own
            rows = cache.key.shape[3]
            row, col = pos // bc, (pos % bc).view(1)
            flat = lambda t: t.view(b, h, bc * rows, d)  # noqa: E731
            flat(cache.key).index_copy_(2, (col * rows + row).view(1), k)
            flat(cache.value).index_copy_(2, (col * rows + row).view(1), v)
            keys, values = cache.key.index_select(2, col)[:, :, 0], cache.value.index_select(2, col)[:, :, 0]
            visible = torch.arange(rows, device=x.device) <= row
        mask = None if visible is None else visible.view(1, -1)
        return linear_rows(self.c_proj, self._merge(self._sdpa(q, keys, values, mask=mask)))
