"""The prior shapes the benches time (`bench/prior.py` on the CPU, `bench/gpu.py` on a GPU), in one table: a
transformer of `bins` tokens, `width` x `depth` with `heads` heads and the reference's `attn_order`."""

PRIOR_PRESETS = {
    "tiny": dict(bins=128, width=128, depth=6, heads=2, attn_order=2),
    "small": dict(bins=2048, width=1024, depth=48, heads=1, attn_order=2),
}
