"""How a sampling stream takes its per-token steps: shapes that change every token, or one fixed-shape step
captured once and replayed.

A 5B prior decoding at batch 1 on a GPU should be bound by reading its weights once per token, but a step is
~10 kernels per layer (720 for 72 layers), and launching them from Python costs more than running them. With
the KV cache preallocated for the whole stream and the position held in a device tensor
(`AutoregressiveTransformer.step_static`), a step is the same kernel sequence at every position: a CUDA graph
records it once and replays it with one launch, or `torch.compile` compiles it once.

Modes (`--decode` of `jukebox-pl sample`):
- dynamic: `step` with slices of the cache written so far (the CPU's fastest: it reads no unwritten slot).
- static: `step_static`, eager; the reference for the two below, and what they run on.
- graph: `static` captured in a CUDA graph (CUDA only).
- compile: `static` through `torch.compile(fullgraph=True)`; mode "reduce-overhead" (CUDA graphs) on CUDA.
- auto: graph on CUDA, dynamic elsewhere.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch

from jukebox_pl.errors import UserValueError

DECODE_MODES = ("auto", "dynamic", "static", "graph", "compile")


def resolve_decode(mode: str, device: torch.device) -> str:
    """The mode a stream on `device` uses for `mode` (auto: graph on CUDA, dynamic elsewhere)."""
    if mode not in DECODE_MODES:
        raise UserValueError(f"decode={mode!r}; choose one of {', '.join(DECODE_MODES)}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else "dynamic"
    if mode == "graph" and device.type != "cuda":
        raise UserValueError(f"decode=graph records a CUDA graph: the prior is on {device}; use static or dynamic")
    return mode


def prime_chunk(chunk_size: int | None, n: int, device: torch.device) -> int | None:
    """Prompt tokens per priming pass (0 or None returned: the whole prompt in one). Unless set (None): one
    pass on a GPU, and on a
    CPU for one stream; several CPU streams prime in passes of 128 tokens, since one large pass there runs
    out of cache (measured on the small preset's two priors: batch 1, one pass 1.25-1.5x faster than chunks
    of 128; batch 8, chunks of 128 1.35-1.5x faster than one pass)."""
    if chunk_size is not None:
        return chunk_size or None
    return None if device.type == "cuda" or n == 1 else 128


def own_code(model: torch.nn.Module, fn: Callable) -> Callable:
    """`fn` remade around a code object that belongs to `model`.

    torch.compile keeps its compiled graphs per code object, at most `torch._dynamo.config.recompile_limit` (8) of
    them, and with fullgraph=True one more is an error. Every prior's step is the same lambda, so the three levels
    of a song at three batch sizes (or four weight formats at two) would have been nine graphs on one code object
    and stopped the ninth. With a code object per model, each model holds only its own (one per batch size), and a
    song's windows, which are new decoders over the same model, still share theirs."""
    code = model.__dict__.get("_static_step_code")
    if code is None or code.co_freevars != fn.__code__.co_freevars:
        code = fn.__code__.replace()  # an equal code object, not the same one
        model.__dict__["_static_step_code"] = code
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class StaticDecoder:
    """Fixed-shape steps of one primed stream: `decoder(prev_token)` -> logits (B, bins) of the next position.

    Built inside `model.streaming(capacity, static=True)` once the stream is primed up to position `first`
    (the position the first call predicts). The returned logits are a buffer the next call overwrites."""

    def __init__(
        self,
        model,
        first: int,
        batch: int,
        x_cond: torch.Tensor | None = None,
        encoder_kv: torch.Tensor | None = None,
        mode: str = "static",
        compile_options: dict | None = None,
    ):
        caches = model.transformer.caches
        if caches is None or any(c.key is None and "enc" not in c.extra for c in caches):
            raise RuntimeError("StaticDecoder needs a stream primed with `step` inside `streaming(static=True)`")
        if not all(c.zeroed for c in caches):
            raise RuntimeError("StaticDecoder needs `streaming(capacity, static=True)`: zero-filled caches")
        self.caches = caches
        self.end = self._reach(model)
        if first < 1 or first >= self.end or caches[0].length != first:
            raise UserValueError(
                f"static decoding from position {first}: the stream is primed to {caches[0].length} and its caches "
                f"hold positions < {self.end}"
            )
        device = model.x_emb.weight.device
        self.mode = mode
        self.pos = torch.tensor(first, dtype=torch.long, device=device)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        step = model.step_static
        self._step: Callable[[], torch.Tensor] = lambda: step(self.token, self.pos, x_cond, encoder_kv)  # noqa: E731
        self._graph = self._out = None
        if mode == "compile":
            self._step = self._compiled(own_code(model, self._step), device, compile_options or {})
        elif mode == "graph":
            self._capture(device)
        elif mode != "static":
            raise UserValueError(f"StaticDecoder mode {mode!r}; choose static, graph or compile")

    def _reach(self, model) -> int:
        """Positions the preallocated caches can take (a static step cannot grow them)."""
        reach = model.n_ctx
        for attn, cache in zip((b.attn for b in model.transformer._attn_mods), self.caches):
            if attn.kind == "dense":
                reach = min(reach, cache.key.shape[2])
            elif attn.kind == "column":
                reach = min(reach, cache.key.shape[3] * attn.block_ctx)
        return reach

    def _buffers(self) -> list[torch.Tensor]:
        out = []
        for cache in self.caches:
            out += [t for t in (cache.key, cache.value) if t is not None]
            out += [t for pair in cache.extra.values() for t in pair]
        return out

    def _compiled(self, step: Callable, device: torch.device, options: dict) -> Callable[[], torch.Tensor]:
        if device.type == "cuda":
            options = {"mode": "reduce-overhead", **options}
            for buf in [*self._buffers(), self.pos, self.token]:  # fixed addresses for the CUDA graphs
                torch._dynamo.mark_static_address(buf)
        return torch.compile(step, fullgraph=True, dynamic=False, **options)

    def _capture(self, device: torch.device) -> None:
        """Warm up on a side stream (kernel selection, lazy init), then record one step. The warm-up writes
        the slot of position `first` with a dummy token; the first real step writes it again before reading."""
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = self._step()

    def __call__(self, prev_token: torch.Tensor) -> torch.Tensor:
        """Logits (B, bins) of the position after `prev_token` (B,) or (B, 1); advances the stream by one."""
        if int(self.caches[0].length) >= self.end:
            raise UserValueError(f"the stream is full: its caches hold {self.end} positions")
        self.token.copy_(prev_token.view(self.token.shape))
        if self._graph is not None:
            self._graph.replay()
            out = self._out
        else:
            out = self._step()
        self.pos += 1
        for cache in self.caches:
            cache.length += 1
        return out[:, -1]
