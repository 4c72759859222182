"""Every attention kind against a dense masked reference, and cached decoding against the full pass."""

import pytest
import torch

from jukebox_pl.prior.attention import FactorizedAttention, LayerCache, attn_kinds, prime_keys_len

N_CTX, BLOCKS, WIDTH, HEADS = 48, 6, 16, 2  # block_ctx 8


def allowed(kind: str, n: int, block_ctx: int, n_keys: int | None = None) -> torch.Tensor:
    """(n, n) boolean: may query i attend to key j, straight from the definitions."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None]
    row_i, row_j, col_i, col_j = i // block_ctx, j // block_ctx, i % block_ctx, j % block_ctx
    return {
        "dense": j <= i,
        "row": (row_i == row_j) & (j <= i),
        "column": (col_i == col_j) & (j <= i),
        "prev_row": row_j == row_i - 1,
        "prime": (j <= i) & (j < (n_keys or 0)),
    }[kind]


def dense_reference(attn: FactorizedAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    q, k, v = attn.c_attn(x).chunk(3, dim=-1)
    q, k, v = (attn._heads(t) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    w = w.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)  # a query with no keys outputs zero
    return attn.c_proj(attn._merge(w @ v))


def make(kind: str, prime_len: int | None = None) -> FactorizedAttention:
    torch.manual_seed(0)
    attn = FactorizedAttention(WIDTH, N_CTX, WIDTH, HEADS, kind, BLOCKS, init_scale=20.0, prime_len=prime_len)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return attn


@pytest.mark.parametrize("kind", ["dense", "row", "column", "prev_row", "prime"])
def test_each_kind_matches_a_dense_masked_reference(kind):
    prime_len = 11 if kind == "prime" else None
    attn = make(kind, prime_len)
    x = torch.randn(3, N_CTX, WIDTH)
    n_keys = prime_keys_len(prime_len, BLOCKS) if prime_len else None
    want = dense_reference(attn, x, allowed(kind, N_CTX, N_CTX // BLOCKS, n_keys))
    torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "row", "column", "prev_row"])
def test_outputs_depend_only_on_allowed_positions(kind):
    attn = make(kind)
    x = torch.randn(1, N_CTX, WIDTH, requires_grad=True)
    pos = 29
    attn(x)[0, pos].sum().backward()
    touched = set((x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()) - {pos}
    expected = set(allowed(kind, N_CTX, N_CTX // BLOCKS)[pos].nonzero().flatten().tolist()) - {pos}
    assert touched == expected


def test_cross_attention_reads_the_encoder():
    torch.manual_seed(0)
    attn = FactorizedAttention(WIDTH, N_CTX, WIDTH, HEADS, "cross", BLOCKS)
    x, enc = torch.randn(2, N_CTX, WIDTH), torch.randn(2, 5, WIDTH)
    out = attn(x, encoder_kv=enc)
    assert out.shape == x.shape and not torch.allclose(out, attn(x, encoder_kv=enc.flip(1) * 2))
    with pytest.raises(ValueError, match="encoder_kv"):
        attn(x)


def test_attn_orders():
    assert attn_kinds(2, 6) == ["row", "column", "prev_row"] * 2
    five_b = attn_kinds(10, 79)
    assert [i for i, k in enumerate(five_b) if k == "cross"] == list(range(18, 79, 10))
    one_b = attn_kinds(12, 72)
    assert [i for i, k in enumerate(one_b) if k == "prime"] == [15, 31, 63] and one_b[47] == "dense"
    assert attn_kinds(8, 10)[-1] == "cross"
    with pytest.raises(ValueError, match="attn_order 5"):
        attn_kinds(5, 4)


def stream_case(kind: str):
    """A layer of `kind` (prime: an 11-character prefix), inputs, encoder states, and the full pass's output."""
    if kind == "cross":
        torch.manual_seed(0)
        attn = FactorizedAttention(WIDTH, N_CTX, WIDTH, HEADS, "cross", BLOCKS)
    else:
        attn = make(kind, 11 if kind == "prime" else None)
    x, enc = torch.randn(2, N_CTX, WIDTH), torch.randn(2, 7, WIDTH)
    return attn, x, enc, attn(x, encoder_kv=enc if kind == "cross" else None)


@pytest.mark.parametrize("kind", ["dense", "row", "column", "prev_row", "prime", "cross"])
@pytest.mark.parametrize(
    "chunks", [[1] * N_CTX, [5, 3, 8, 13, 1, 18], [N_CTX], [21, 1, 1, 25], [16, 1, 1, 30]]
)  # a prompt primed in one pass first (length > 1 on a fresh cache): mid-row, at a row boundary, or all of it
def test_cached_decoding_equals_the_full_pass(kind, chunks):
    attn, x, enc, full = stream_case(kind)
    cache, outs, start = LayerCache(poison=True), [], 0  # NaN in every slot not written yet
    for size in chunks:
        outs.append(attn.forward_cached(x[:, start : start + size], cache, encoder_kv=enc))
        start += size
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    kept = 0 if cache.key is None else cache.key[0, 0].numel() // cache.key.shape[-1]  # positions held
    limit = {"row": N_CTX // BLOCKS, "prev_row": 2 * N_CTX // BLOCKS, "prime": prime_keys_len(11, BLOCKS)}
    assert kept <= limit.get(kind, N_CTX)


@pytest.mark.parametrize("kind", ["dense", "row", "column", "prev_row", "prime", "cross"])
@pytest.mark.parametrize("primed", [1, 8, 13])  # a first row, a row boundary, mid-row
def test_fixed_shape_steps_after_chunked_priming_equal_the_full_pass(kind, primed):
    """`forward_static` (position in a tensor, the whole cache read under a mask) continues a stream primed by
    `forward_cached` and gives the full pass's outputs at every later position, row boundaries included."""
    attn, x, enc, full = stream_case(kind)
    cache = LayerCache(zeroed=True, capacity=N_CTX)
    outs = [attn.forward_cached(x[:, :primed], cache, encoder_kv=enc)]
    pos = torch.tensor(primed)
    for i in range(primed, N_CTX):
        outs.append(attn.forward_static(x[:, i : i + 1], cache, pos))
        pos += 1
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "column"])
@pytest.mark.parametrize("capacity", [1, 9, N_CTX // 2])
def test_a_cache_sized_for_a_short_stream_grows_when_the_stream_goes_further(kind, capacity):
    """Caches are allocated for the positions the stream will reach (a 64-token continuation at batch 16 does
    not hold n_ctx keys per layer); a stream that goes further grows them, with the same outputs."""
    attn = make(kind, None)
    x = torch.randn(2, N_CTX, WIDTH)
    full = attn(x)
    cache, outs, start = LayerCache(poison=True, capacity=capacity), [], 0
    dim, per_slot = (2, 1) if kind == "dense" else (3, N_CTX // BLOCKS)
    for size in [1, 2, 5, 3, 8, 13, 1] + [1] * (N_CTX - 33):
        outs.append(attn.forward_cached(x[:, start : start + size], cache))
        if start == 0:  # allocated for the capacity, not for n_ctx
            assert cache.key.shape[dim] == -(-capacity // per_slot)
        start += size
    assert cache.key.shape[dim] * per_slot >= N_CTX  # grown to what the stream reached
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (2, 4), (8, 1), (4, 5), (16, 16), (300, 1)])
def test_linear_rows_equals_linear(shape):
    from jukebox_pl.prior.attention import linear_rows

    lin = torch.nn.Linear(32, 48)
    x = torch.randn(*shape, 32)
    with torch.no_grad():
        torch.testing.assert_close(linear_rows(lin, x), lin(x), atol=1e-5, rtol=1e-5)
        lin.bias = None
        torch.testing.assert_close(linear_rows(lin, x), lin(x), atol=1e-5, rtol=1e-5)
