"""The reference implementation's prior transformer (openai/jukebox `ConditionalAutoregressive2D`) on this CPU,
for side-by-side timing in `bench/prior.py --reference CHECKOUT`.

Nothing of the reference is copied: it is imported from the checkout named on the command line, with small shims
for its CUDA-only calls (`.cuda()` is the identity, its inputs pass its `torch.cuda.LongTensor` asserts, its
progress bars are replaced by a clock). Its own training forward (loss in bits/token) and its own sampler
(`primed_sample`: the prompt pushed through its KV cache in chunks, then one token per step) are timed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from reference_cpu import use_reference


class Clock:
    """Stands in for the reference's `get_range` (a tqdm bar): records when each item of each loop starts.
    `primed_sample` runs two such loops: the prompt's chunks, then the new tokens."""

    def __init__(self):
        self.loops: list[list[float]] = []

    def __call__(self, items):
        stamps: list[float] = []
        self.loops.append(stamps)
        for item in items:
            stamps.append(time.perf_counter())
            yield item
        stamps.append(time.perf_counter())


def load(checkout: str | Path):
    """The reference's autoregressive module, importable and runnable on the CPU."""
    use_reference(checkout)
    import jukebox.prior.autoregressive as ar

    return ar


def build(ar, preset: dict, n_ctx: int, block_ctx: int, checkpoint_res: bool, x_cond=False, y_cond=False):
    """The reference's model for one of `bench/prior.py`'s presets (bins, width, depth, heads, attn_order);
    `x_cond` (an upsampler's per-position conditioning) and `y_cond` (labels) as its priors use them."""
    return ar.ConditionalAutoregressive2D(
        input_shape=(n_ctx,), bins=preset["bins"], width=preset["width"], depth=preset["depth"],
        heads=preset["heads"], attn_order=preset["attn_order"], blocks=n_ctx // block_ctx,
        checkpoint_res=int(checkpoint_res), x_cond=x_cond, y_cond=y_cond,
    )  # fmt: skip


def train_step(model, opt, tokens: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss, _ = model(tokens)
    loss.backward()
    opt.step()


def sample(ar, model, batch: int, prompt_len: int, tokens: int, chunk: int, warm: int = 2) -> dict:
    """`primed_sample` of `tokens` + `warm` new tokens after a random prompt of `prompt_len` (every row primed,
    as the reference does); the first `warm` new tokens are not timed. Conditioning inputs, when the model
    takes them, are random (made before the clock starts, as the conditioners run once per window)."""
    model.eval()
    clock = Clock()
    ar.get_range = clock
    prompt = torch.randint(model.bins, (batch, prompt_len))
    n_ctx = int(model.input_dims)
    x_cond = torch.randn(batch, n_ctx, model.width) * 0.02 if model.x_cond else None
    y_cond = torch.randn(batch, 1, model.width) * 0.02 if model.y_cond else None
    with torch.inference_mode():
        model.primed_sample(batch, prompt, x_cond=x_cond, y_cond=y_cond, chunk_size=chunk,
                            sample_tokens=prompt_len + warm + tokens)  # fmt: skip
    priming, steps = clock.loops[0], clock.loops[1]
    sample_s = steps[-1] - steps[warm]
    return {
        "prompt_len": prompt_len,
        "prime_rows": batch,
        "prime_s": priming[-1] - priming[0],
        "prime_tokens_per_s": batch * prompt_len / (priming[-1] - priming[0]),
        "expand_s": 0.0,
        "new_tokens": tokens,
        "sample_s": sample_s,
        "ms_per_step": 1000 * sample_s / tokens,
        "tokens_per_s_per_stream": tokens / sample_s,
        "tokens_per_s_total": batch * tokens / sample_s,
    }
