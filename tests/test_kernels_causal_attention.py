"""Tiled causal GQA attention on wgpu-native (lavapipe) against the NumPy reference.

Fresh random inputs and padding masks every run; every output NaN-poisoned before it is
written; relative error ||out - ref|| / ||ref|| against float64.
"""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.causal_attention import CausalAttentionKernels
from py_engine.kernels.dropout import pack_step
from py_engine.ops import causal_attention as ref
from py_engine.ops.dropout import dropout_multiplier

# f32 dot products of <= 16 terms, an online softmax over <= 37 keys (each block's rescaling
# by exp(m_old - m_new) adds a few ulps), and backward sums over <= 37 keys times <= 4 query
# heads. Errors observed over these shapes are <= 2e-7 forward (out, lse) and <= 3e-7 backward
# (dq, dk, dv); 1e-5 leaves a 30x margin while any wrong index, mask or block edge gives errors
# of order 1e-1.
FORWARD_BOUND = 1e-5
BACKWARD_BOUND = 1e-5


@pytest.fixture(scope="module")
def att(device):
    return run(CausalAttentionKernels.load(device, block_q=8, block_k=8))


def right_padding(rng, batch, keys):
    """Random right padding: every sequence keeps its first token, the last one is fully real."""
    lengths = rng.integers(1, keys + 1, batch)
    lengths[-1] = keys
    return (np.arange(keys)[None, :] < lengths[:, None]).astype(np.uint32)


def check(device, att, rng, batch, seq, heads, kv_heads, dim, *, past=0, mask=None,
          scaling=None, backward=True, dropout=None, window=None, softcap=None, split_heads=None,
          decode_splits=None):
    """dropout: (p, seed, offset, base) of attention dropout on the probabilities; window: a
    sliding window; softcap: Gemma 2's logit soft cap; split_heads: grad_kv's grid (None: the
    recorder's choice, splits_heads); decode_splits: workgroups per decoded row (None: the
    recorder's choice, decode_splits)."""
    keys = past + seq
    q, dout = (rng.standard_normal((batch * seq, heads * dim), dtype=np.float32) for _ in range(2))
    k, v = (rng.standard_normal((batch * keys, kv_heads * dim), dtype=np.float32) for _ in range(2))
    shape = dict(batch=batch, seq=seq, heads=heads, kv_heads=kv_heads, head_dim=dim, past=past,
                 scaling=scaling, window=window, softcap=softcap)
    bq, bk, bv, bdout = (device.buffer_from(x) for x in (q, k, v, dout))
    bmask = None if mask is None else device.buffer_from(mask)
    multiplier = None
    if dropout is not None:
        p, seed, offset, base = dropout
        step = device.buffer_from(pack_step(seed, offset), "uniform")
        shape["dropout"] = (step, p, base)
        multiplier = dropout_multiplier(batch * heads * seq * keys, p, seed, offset, base,
                                        np.float64).reshape(batch, heads, seq, keys)
    out, dq = (poisoned(device, batch * seq * heads * dim) for _ in range(2))
    lse = poisoned(device, batch * heads * seq)
    stats = poisoned(device, 2 * batch * heads * seq)
    dk, dv = (poisoned(device, batch * keys * kv_heads * dim) for _ in range(2))
    program = device.program()
    att.forward(program, bq, bk, bv, bmask, out, lse, decode_splits=decode_splits, **shape)
    buffers = [out, lse]
    if backward:
        att.backward(program, bdout, bq, bk, bv, bmask, out, lse, stats, dq, dk, dv,
                     split_heads=split_heads, **shape)
        buffers += [dq, dk, dv]
    results = read(program, *buffers)

    q64, k64, v64, do64 = (x.astype(np.float64) for x in (q, k, v, dout))
    meta = dict(batch=batch, heads=heads, kv_heads=kv_heads, attention_mask=mask, past=past,
                scaling=scaling, dropout=multiplier, window=window, softcap=softcap)
    ref_out, ref_lse = ref.causal_attention_forward(q64, k64, v64, **meta)
    errors = [rel_error(results[0], ref_out), rel_error(results[1], ref_lse)]
    assert errors[0] <= FORWARD_BOUND and errors[1] <= FORWARD_BOUND, errors
    if backward:
        grads = ref.causal_attention_backward(do64, q64, k64, v64, ref_out, ref_lse, **meta)
        for out_grad, expected in zip(results[2:], grads):
            errors.append(rel_error(out_grad, expected))
            assert errors[-1] <= BACKWARD_BOUND, errors
    return results


# T = 13 and 21 are not multiples of the blocks of 8; (1, 1) is the smallest case.
@pytest.mark.parametrize("batch, seq, heads, kv_heads, dim", [
    (2, 13, 2, 2, 8),      # multi-head (Hq / Hkv = 1)
    (1, 21, 4, 2, 16),     # GQA, Hq / Hkv = 2
    (2, 9, 4, 1, 4),       # multi-query, Hq / Hkv = 4
    (1, 1, 1, 1, 1),
])
@pytest.mark.parametrize("split_heads", [False, True])
def test_forward_and_backward_match_numpy(device, att, rng, batch, seq, heads, kv_heads, dim,
                                          split_heads):
    check(device, att, rng, batch, seq, heads, kv_heads, dim, split_heads=split_heads)


def test_right_padded_batch(device, att, rng):
    batch, seq = 3, 11
    mask = right_padding(rng, batch, seq)
    mask[0, 3:] = 0                                   # at least one padded sequence
    check(device, att, rng, batch, seq, 4, 2, 8, mask=mask)   # padded query rows included


def test_padded_rows_are_deterministic(device, att, rng):
    """Two replays over the same inputs give the very same bits, padded rows included."""
    batch, seq, heads, dim = 2, 10, 2, 4
    mask = np.ones((batch, seq), np.uint32)
    mask[1, 4:] = 0
    q = device.buffer_from(rng.standard_normal((batch * seq, heads * dim), dtype=np.float32))
    k, v = (device.buffer_from(rng.standard_normal((batch * seq, dim), dtype=np.float32))
            for _ in range(2))
    outs = []
    for _ in range(2):
        out, lse = poisoned(device, batch * seq * heads * dim), poisoned(device, batch * heads * seq)
        program = device.program()
        att.forward(program, q, k, v, device.buffer_from(mask), out, lse, batch=batch, seq=seq,
                    heads=heads, kv_heads=1, head_dim=dim)
        outs.append(read(program, out)[0])
    assert np.all(np.isfinite(outs[0])) and np.array_equal(outs[0], outs[1])


def test_rows_that_see_no_key_are_zero(device, att, rng):
    """A sequence whose first token is padding (left padding): its first rows see no key."""
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], np.uint32)
    out = check(device, att, rng, 2, 6, 2, 1, 4, mask=mask)[0]
    assert np.all(out.reshape(2, 6, 8)[0, :2] == 0)


@pytest.mark.parametrize("past, seq", [(10, 1), (7, 5)])
def test_kv_cache_offset(device, att, rng, past, seq):
    """Decoding: seq new queries at positions past.. against past + seq cached and new keys,
    with padding on the keys; the backward follows the same offset."""
    mask = right_padding(rng, 2, past + seq)
    mask[:, :past // 2 + 1] = 1
    check(device, att, rng, 2, seq, 4, 2, 8, past=past, mask=mask)


def test_offset_forward_equals_the_last_rows_of_the_full_forward(device, att, rng):
    """The forward of the last rows with past = T - Tq equals those rows of the full forward."""
    batch, seq, heads, kv_heads, dim, new = 1, 12, 2, 1, 8, 3
    q = rng.standard_normal((batch * seq, heads * dim), dtype=np.float32)
    k, v = (rng.standard_normal((batch * seq, kv_heads * dim), dtype=np.float32) for _ in range(2))
    bk, bv = device.buffer_from(k), device.buffer_from(v)
    shape = dict(batch=batch, heads=heads, kv_heads=kv_heads, head_dim=dim)
    full, tail = poisoned(device, seq * heads * dim), poisoned(device, new * heads * dim)
    lse_full, lse_tail = poisoned(device, heads * seq), poisoned(device, heads * new)
    program = device.program()
    att.forward(program, device.buffer_from(q), bk, bv, None, full, lse_full, seq=seq, **shape)
    att.forward(program, device.buffer_from(q[-new:].copy()), bk, bv, None, tail, lse_tail,
                seq=new, past=seq - new, **shape)
    out_full, out_tail = read(program, full, tail)
    assert rel_error(out_tail, out_full.reshape(seq, -1)[-new:]) <= FORWARD_BOUND


@pytest.mark.parametrize("past, seq, p", [(0, 21, 0.3), (7, 5, 0.5)])
def test_attention_dropout(device, att, rng, past, seq, p):
    """Dropout on the probabilities (GPT-2's attn_pdrop): the kernels recompute the reference's
    counter-based mask of a [B, Hq, Tq, Tk] layer, forward and backward, over padding, GQA,
    several blocks, a KV offset and a counter that wraps at 2^32."""
    mask = right_padding(rng, 2, past + seq)
    mask[:, :past + 1] = 1
    seed = int(rng.integers(0, 2**32))
    with_drop = check(device, att, rng, 2, seq, 4, 2, 8, past=past, mask=mask,
                      dropout=(p, seed, 2**32 - 300, 17))
    assert np.all(np.isfinite(with_drop[0]))


# Blocks of 8: windows of 3 and 5 start mid-block, 8 is one block, 13 spans two; T = 21 and 13.
@pytest.mark.parametrize("batch, seq, heads, kv_heads, past, window", [
    (2, 21, 4, 2, 0, 3),      # window smaller than T: key blocks before it are skipped
    (1, 21, 2, 1, 0, 13),     # smaller than T, across a block edge
    (2, 13, 4, 1, 0, 13),     # equal to T
    (1, 13, 2, 2, 0, 40),     # larger than T: plain causal attention
    (2, 5, 4, 2, 17, 8),      # a KV-cache offset: the cached keys before the window are skipped
    (1, 1, 2, 1, 30, 5),      # one decoding step
])
def test_sliding_window(device, att, rng, batch, seq, heads, kv_heads, past, window):
    """Mistral's sliding window, forward and backward, over right padding (padded rows whose
    window holds only padding see no key), GQA, several blocks and a cache offset."""
    mask = right_padding(rng, batch, past + seq)
    mask[:, :past + 1] = 1
    check(device, att, rng, batch, seq, heads, kv_heads, 8, past=past, mask=mask, window=window)


@pytest.mark.parametrize("split_heads", [False, True])
def test_sliding_window_with_dropout(device, att, rng, split_heads):
    seed = int(rng.integers(0, 2**32))
    check(device, att, rng, 2, 19, 4, 2, 8, mask=right_padding(rng, 2, 19), window=6,
          dropout=(0.3, seed, 5, 11), split_heads=split_heads)


@pytest.mark.parametrize("heads, kv_heads, seq, past, window", [
    (4, 1, 19, 0, None),       # Gemma: multi-query, head_dim 256
    (2, 1, 3, 9, 6),           # with a cache offset and a window
])
@pytest.mark.parametrize("split_heads", [False, True])
def test_head_dim_256(device, rng, heads, kv_heads, seq, past, window, split_heads):
    """Gemma's heads of 256: the family loaded for them stages blocks of 8 rows (16 KiB)."""
    wide = run(CausalAttentionKernels.load(device, head_dim=256))
    assert (wide.block_q, wide.block_k) == (8, 8)
    mask = right_padding(rng, 2, past + seq)
    mask[:, :past + 1] = 1
    check(device, wide, rng, 2, seq, heads, kv_heads, 256, past=past, mask=mask, window=window,
          split_heads=split_heads)


def test_grad_kv_splits_by_query_head_where_a_gpu_would_idle(device, att, monkeypatch):
    """Split where the KV heads make few workgroups and a group has several query heads, or
    where a workgroup per KV head would run more loop iterations than the adapter allows; not
    where one query head per KV head leaves nothing to split, nor where the KV heads already
    make enough workgroups within the limit."""
    tiny_llama = dict(batch=4, seq=256, heads=32, kv_heads=4, head_dim=64)
    assert att.splits_heads(**tiny_llama)
    assert not att.splits_heads(**dict(tiny_llama, heads=4))        # multi-head
    many = dict(tiny_llama, batch=64)                               # 64 x 4 x 32 blocks of 8
    # a key's thread walks 256 rows of 8 heads of 64: past lavapipe's limit, split or not
    assert att.splits_heads(**many) == (device.info.loop_limit is not None)
    assert not att.splits_heads(**dict(many, batch=512, seq=16))    # enough, and within it
    monkeypatch.setattr(type(device.info), "loop_limit", property(lambda info: None))
    assert not att.splits_heads(**many)                             # an adapter without one


# Caps of 0.8 and 2 bend nearly every score of these draws (|s| / c reaches 3-10, past the
# tanh's switch from its continued fraction to exp at 1); with a window, a cache offset,
# padding, GQA and dropout.
@pytest.mark.parametrize("batch, seq, heads, kv_heads, dim, past, window, softcap, dropout", [
    (2, 13, 2, 2, 8, 0, None, 0.8, None),
    (1, 21, 4, 2, 16, 0, 6, 2.0, None),
    (2, 5, 4, 1, 8, 9, None, 2.0, None),
    (2, 19, 4, 2, 8, 0, None, 0.8, (0.25, 5, 3, 100)),
])
@pytest.mark.parametrize("split_heads", [False, True])
def test_logit_softcap(device, att, rng, batch, seq, heads, kv_heads, dim, past, window, softcap,
                       dropout, split_heads):
    """Gemma 2's attention logit soft-capping, forward and backward."""
    mask = right_padding(rng, batch, past + seq)
    mask[:, :past + 1] = 1
    check(device, att, rng, batch, seq, heads, kv_heads, dim, past=past, mask=mask, window=window,
          softcap=softcap, scaling=1.5 * dim ** -0.5, dropout=dropout, split_heads=split_heads)


def test_layers_share_the_partial_sums(device, att, rng):
    """Two backwards of one shape in one program, split by query head: they share the scratch
    of the partial sums, and each layer's dk and dv are its own."""
    batch, seq, heads, kv_heads, dim = 2, 11, 4, 1, 8
    shape = dict(batch=batch, seq=seq, heads=heads, kv_heads=kv_heads, head_dim=dim)
    draw = lambda rows, cols: rng.standard_normal((rows, cols), dtype=np.float32)
    layers, program, outputs = [], device.program(), []
    for _ in range(2):
        q, dout = draw(batch * seq, heads * dim), draw(batch * seq, heads * dim)
        k, v = draw(batch * seq, kv_heads * dim), draw(batch * seq, kv_heads * dim)
        bq, bk, bv, bdout = (device.buffer_from(x) for x in (q, k, v, dout))
        out, dq = (poisoned(device, q.size) for _ in range(2))
        lse, stats = poisoned(device, batch * heads * seq), poisoned(device, 2 * batch * heads * seq)
        dk, dv = (poisoned(device, k.size) for _ in range(2))
        att.forward(program, bq, bk, bv, None, out, lse, **shape)
        att.backward(program, bdout, bq, bk, bv, None, out, lse, stats, dq, dk, dv,
                     split_heads=True, **shape)
        layers.append((q, k, v, dout))
        outputs += [dk, dv]
    results = read(program, *outputs)
    for n, (q, k, v, dout) in enumerate(layers):
        x64 = [x.astype(np.float64) for x in (q, k, v, dout)]
        meta = dict(batch=batch, heads=heads, kv_heads=kv_heads)
        ref_out, ref_lse = ref.causal_attention_forward(*x64[:3], **meta)
        _, ref_dk, ref_dv = ref.causal_attention_backward(x64[3], *x64[:3], ref_out, ref_lse, **meta)
        assert rel_error(results[2 * n], ref_dk) <= BACKWARD_BOUND
        assert rel_error(results[2 * n + 1], ref_dv) <= BACKWARD_BOUND


# One query row (a decoding step) runs causal_attention_decode: keys in chunks of 2,048 (the
# tile), so past 4,500 spans three; a window inside one chunk and one across a chunk's edge;
# padding; GQA; the soft cap; heads of 256 (four features a thread). The backward of a
# one-row batch reads the decode entry's lse. Not the backward over 4,501 keys: its grad_q gives
# each thread every key, past what lavapipe's loops allow (CausalAttentionKernels.loop_budget).
@pytest.mark.parametrize("batch, past, heads, kv_heads, dim, window, softcap, backward", [
    (1, 4500, 2, 1, 8, None, None, False),
    (2, 2100, 4, 2, 16, 60, None, True),
    (1, 2060, 2, 2, 8, 30, 2.0, True),
    (2, 9, 4, 1, 8, None, 0.8, True),
    (1, 0, 1, 1, 4, None, None, True),
])
def test_decoding_step(device, att, rng, batch, past, heads, kv_heads, dim, window, softcap,
                       backward):
    mask = right_padding(rng, batch, past + 1)
    mask[:, :1] = 1
    mask[:, -1] = 1          # the new token is real
    check(device, att, rng, batch, 1, heads, kv_heads, dim, past=past, mask=mask, window=window,
          softcap=softcap, backward=backward)


# The keys split among several workgroups per row (flash-decoding), their partial results
# combined: splits within one tile and across two (5,000 keys in 2), 64 splits, a window and the
# soft cap with padding (some splits see only padding), more splits than keys (empty splits).
@pytest.mark.parametrize("batch, past, heads, kv_heads, dim, window, softcap, splits", [
    (1, 4500, 2, 1, 8, None, None, 5),
    (2, 5000, 1, 1, 8, None, None, 2),
    (1, 700, 2, 1, 8, None, None, 64),
    (2, 300, 4, 2, 16, 100, 1.5, 7),
    (1, 2, 2, 1, 4, None, None, 8),
])
def test_a_decoding_step_split_over_the_keys(device, att, rng, batch, past, heads, kv_heads, dim,
                                             window, softcap, splits):
    mask = right_padding(rng, batch, past + 1)
    mask[:, :1] = 1
    mask[:, -1] = 1
    check(device, att, rng, batch, 1, heads, kv_heads, dim, past=past, mask=mask, window=window,
          softcap=softcap, backward=False, decode_splits=splits)


def test_split_decoding_layers_share_the_partial_results(device, att, rng):
    """Two split decoding steps in one program share the scratch of the partial results, and
    each layer's out and lse are its own; the recorder splits a long cache of few heads by
    itself."""
    heads, dim, past = 2, 8, 1500
    assert att.decode_splits(1, heads, past + 1) > 1
    program, layers, outputs = device.program(), [], []
    for _ in range(2):
        q = rng.standard_normal((1, heads * dim), dtype=np.float32)
        k, v = (rng.standard_normal((past + 1, dim), dtype=np.float32) for _ in range(2))
        out, lse = poisoned(device, heads * dim), poisoned(device, heads)
        att.forward(program, *(device.buffer_from(x) for x in (q, k, v)), None, out, lse, batch=1,
                    seq=1, heads=heads, kv_heads=1, head_dim=dim, past=past)
        layers.append((q, k, v))
        outputs += [out, lse]
    results = read(program, *outputs)
    for n, (q, k, v) in enumerate(layers):
        ref_out, ref_lse = ref.causal_attention_forward(
            *(x.astype(np.float64) for x in (q, k, v)), batch=1, heads=heads, kv_heads=1, past=past)
        assert rel_error(results[2 * n], ref_out) <= FORWARD_BOUND
        assert rel_error(results[2 * n + 1], ref_lse) <= FORWARD_BOUND


def test_decode_splits_fill_a_gpu_only_where_one_workgroup_a_row_would_not(device, att):
    """Rows enough for DECODE_WORKGROUPS, or keys too few for two splits: one workgroup a row.
    Otherwise as many splits as fill DECODE_WORKGROUPS, each with DECODE_SPLIT_KEYS keys or
    more, at most MAX_DECODE_SPLITS; a window bounds the keys a row sees."""
    from py_engine.kernels.causal_attention import DECODE_SPLIT_KEYS, MAX_DECODE_SPLITS

    assert att.decode_splits(8, 32, 4096) == 1                 # 256 rows
    assert att.decode_splits(1, 32, 2 * DECODE_SPLIT_KEYS - 1) == 1
    assert att.decode_splits(1, 32, 2048) == 8                 # TinyLlama: 8 x 32 workgroups
    assert att.decode_splits(1, 32, 1024) == 1024 // DECODE_SPLIT_KEYS
    assert att.decode_splits(1, 1, 1 << 20) == MAX_DECODE_SPLITS
    assert att.decode_splits(1, 8, 1 << 20, window=512) == 2
    with pytest.raises(ValueError, match="decode_splits must be a whole number in 1..64"):
        buf = poisoned(device, 4)
        att.forward(device.program(), *(buf,) * 3, None, buf, buf, batch=1, seq=1, heads=1,
                    kv_heads=1, head_dim=4, decode_splits=0)


@pytest.mark.parametrize("decode_entry", [True, False])
def test_a_decoding_step_on_either_entry(device, att, rng, decode_entry):
    """decode_entry=False keeps one query row on the training forward (what the benchmark
    compares the decode entry with); both give the reference's out and lse."""
    heads, kv_heads, dim, past = 4, 2, 16, 37
    q = rng.standard_normal((1, heads * dim), dtype=np.float32)
    k, v = (rng.standard_normal((past + 1, kv_heads * dim), dtype=np.float32) for _ in range(2))
    out, lse = poisoned(device, heads * dim), poisoned(device, heads)
    program = device.program()
    att.forward(program, *(device.buffer_from(x) for x in (q, k, v)), None, out, lse, batch=1,
                seq=1, heads=heads, kv_heads=kv_heads, head_dim=dim, past=past,
                decode_entry=decode_entry)
    got_out, got_lse = read(program, out, lse)
    ref_out, ref_lse = ref.causal_attention_forward(
        *(x.astype(np.float64) for x in (q, k, v)), batch=1, heads=heads, kv_heads=kv_heads, past=past)
    assert rel_error(got_out, ref_out) <= FORWARD_BOUND
    assert rel_error(got_lse, ref_lse) <= FORWARD_BOUND


def test_decoding_step_heads_of_256(device, rng):
    wide = run(CausalAttentionKernels.load(device, head_dim=256))
    check(device, wide, rng, 1, 1, 4, 1, 256, past=40)


def largest_allowed(att, entries, make_shape):
    """The largest n for which every entry's loop_iterations(**make_shape(n)) stays within
    65,535, whatever the adapter (bisection)."""
    lo, hi = 2, 1 << 17
    while lo < hi:
        mid = (lo + hi + 1) // 2
        fits = all(att.loop_iterations(e, **make_shape(mid)) <= 65535 for e in entries)
        lo, hi = (mid, hi) if fits else (lo, mid - 1)
    return lo


@pytest.mark.parametrize("kind, dim", [("forward", 64), ("backward", 8), ("decode", 16)])
def test_attention_that_lavapipe_would_cut_short_is_refused(device, att, rng, kind, dim):
    """llvmpipe stops an invocation's loops after 65,535 iterations in all (AdapterInfo.
    loop_limit), which a thread walking every key and the whole head passes at a few hundred
    keys of 64. The largest shape loop_iterations allows gives the reference's answer (so the
    count is an upper bound of what the kernels run), and one key more is refused before
    anything is recorded, naming the limit."""
    heads, kv_heads = 4, 1      # grad_kv sums a group of 4 query heads per key
    entries = {"forward": ["causal_attention_forward"], "decode": ["causal_attention_decode"],
               "backward": ["causal_attention_forward", "causal_attention_grad_q",
                            "causal_attention_grad_kv"]}[kind]
    split = lambda n: {"forward": (2, n - 2), "decode": (1, n - 1), "backward": (n, 0)}[kind]
    make = lambda n: dict(seq=split(n)[0], past=split(n)[1], head_dim=dim, heads=heads,
                          kv_heads=kv_heads)
    n = largest_allowed(att, entries, make)
    assert 100 < n < 40_000, n
    seq, past = split(n)
    check(device, att, rng, 1, seq, heads, kv_heads, dim, past=past,
          backward=kind == "backward", split_heads=False, decode_splits=1)
    seq, past = split(n + 1)
    program = device.program()
    buf = poisoned(device, (past + seq) * heads * dim)
    run_one = lambda: (att.forward(program, buf, buf, buf, None, buf, buf, batch=1, seq=seq,
                                   heads=heads, kv_heads=kv_heads, head_dim=dim, past=past,
                                   decode_splits=1)
                       if kind != "backward" else
                       att.backward(program, buf, buf, buf, buf, None, buf, buf, buf, buf, buf,
                                    buf, batch=1, seq=seq, heads=heads, kv_heads=kv_heads,
                                    head_dim=dim, past=past, split_heads=False))
    if device.info.loop_limit is None:     # an adapter without the limit refuses nothing
        return
    with pytest.raises(ValueError, match="stops a shader invocation's loops after 65,535"):
        run_one()
    assert not program.ops


def test_a_decoding_position_past_the_loop_limit_is_refused(device, att):
    from py_engine.gpu import Variable

    dim, heads = 16, 4
    n = largest_allowed(att, ["causal_attention_decode"],
                        lambda n: dict(seq=1, past=n - 1, head_dim=dim, heads=heads, kv_heads=1))
    cache = poisoned(device, (n + 10) * dim)
    q, out, lse = poisoned(device, heads * dim), poisoned(device, heads * dim), poisoned(device, heads)
    position = Variable(0, name="position")
    att.forward(device.program(), q, cache, cache, None, out, lse, batch=1, seq=1, heads=heads,
                kv_heads=1, head_dim=dim, past=position, decode_splits=1)
    position.set(n - 1)
    if device.info.loop_limit is None:
        position.set(n)
        return
    with pytest.raises(ValueError, match="position = .* is out of range for attention over 1 new "
                                         "position with heads of 16 on this adapter .*65,535"):
        position.set(n)


def test_custom_scaling_and_default_blocks(device, rng):
    att16 = run(CausalAttentionKernels.load(device))
    check(device, att16, rng, 1, 19, 2, 1, 32, scaling=0.3)


def test_rejects_unsupported_shapes(device, att):
    program = device.program()
    buf = poisoned(device, 4)
    with pytest.raises(ValueError):
        att.forward(program, buf, buf, buf, None, buf, buf, batch=1, seq=1, heads=3, kv_heads=2,
                    head_dim=4)
    with pytest.raises(ValueError):
        att.forward(program, buf, buf, buf, None, buf, buf, batch=1, seq=1, heads=1, kv_heads=1,
                    head_dim=256)                  # beyond the capacity it was loaded with
    with pytest.raises(ValueError):
        att.forward(program, buf, buf, buf, None, buf, buf, batch=1, seq=1, heads=1, kv_heads=1,
                    head_dim=4, window=0)
    with pytest.raises(ValueError, match="softcap"):
        att.forward(program, buf, buf, buf, None, buf, buf, batch=1, seq=1, heads=1, kv_heads=1,
                    head_dim=4, softcap=0.0)
    with pytest.raises(ValueError):
        run(CausalAttentionKernels.load(device, head_dim=257))
