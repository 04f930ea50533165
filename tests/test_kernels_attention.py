"""Attention on wgpu-native (lavapipe) against the NumPy reference, with either matmul variant.

Fresh random inputs and padding masks every run; every output NaN-poisoned before it is
written; relative error ||out - ref|| / ||ref|| against float64.
"""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.attention import AttentionKernels
from py_engine.kernels.matmul import MatmulKernels, MatrixView
from py_engine.ops import attention as ref

# Products of <= 40 terms and a softmax (exp within a few ulps, row sums of <= 40 terms): the
# errors observed are ~2e-7 forward and backward (dS = P * (dP - rowsum(dP * P)) subtracts
# nearby values, which random data keeps well conditioned); 1e-5 leaves a 50x margin.
FORWARD_BOUND = 1e-5
BACKWARD_BOUND = 1e-5


@pytest.fixture(scope="module", params=["register", "tiled"])
def att(request, device):
    return run(AttentionKernels.load(device, variant=request.param))


def random_mask(rng, batch, seq):
    """Random padding: every sequence keeps its first token, the last one is fully real."""
    lengths = rng.integers(1, seq + 1, batch)
    lengths[-1] = seq
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.uint32)


@pytest.mark.parametrize("batch, seq, heads, dim", [(2, 7, 3, 5), (2, 8, 2, 8), (1, 1, 1, 1), (2, 40, 2, 16)])
def test_forward_and_backward_match_numpy(device, att, rng, batch, seq, heads, dim):
    width = heads * dim
    q, k, v, dctx = (rng.standard_normal((batch * seq, width), dtype=np.float32) for _ in range(4))
    mask = random_mask(rng, batch, seq)
    shape = dict(batch=batch, seq=seq, heads=heads, head_dim=dim)
    bq, bk, bv = (device.buffer_from(x) for x in (q, k, v))
    probs, dprobs = (poisoned(device, batch * heads * seq * seq) for _ in range(2))
    ctx, dq, dk, dv = (poisoned(device, batch * seq * width) for _ in range(4))
    program = device.program()
    att.forward(program, bq, bk, bv, device.buffer_from(mask), probs, ctx, **shape)
    att.backward(program, device.buffer_from(dctx), bq, bk, bv, probs, dprobs, dq, dk, dv, **shape)
    out_ctx, out_probs, out_dq, out_dk, out_dv = read(program, ctx, probs, dq, dk, dv)

    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    ref_ctx, ref_probs = ref.attention_forward(q64, k64, v64, mask, heads)
    assert rel_error(out_probs, ref_probs) <= FORWARD_BOUND
    assert np.all(out_probs.reshape(ref_probs.shape)[ref_probs == 0] == 0)   # padded keys exactly 0
    assert rel_error(out_ctx, ref_ctx) <= FORWARD_BOUND
    grads = ref.attention_backward(dctx.astype(np.float64), q64, k64, v64, ref_probs, heads)
    for out, expected in zip((out_dq, out_dk, out_dv), grads):
        assert rel_error(out, expected) <= BACKWARD_BOUND


def test_softmax_pads_and_fully_padded_rows(device, att, rng):
    batch, seq, heads = 3, 5, 2
    scores = rng.standard_normal((batch, heads, seq, seq), dtype=np.float32) * 4
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.uint32)
    buf = device.buffer_from(scores)
    program = device.program()
    att.softmax(program, buf, device.buffer_from(mask), batch=batch, seq=seq, heads=heads)
    (out,) = read(program, buf)
    expected = ref.masked_softmax(scores.astype(np.float64), mask)
    assert rel_error(out, expected) <= FORWARD_BOUND
    out = out.reshape(expected.shape)
    assert np.all(out[1, :, :, 2:] == 0)
    np.testing.assert_allclose(out[2], 1 / seq, rtol=1e-6)      # uniform, as transformers' eager


def test_softmax_backward_in_place(device, att, rng):
    batch, seq, heads = 2, 6, 3
    probs = ref.masked_softmax(rng.standard_normal((batch, heads, seq, seq)), random_mask(rng, batch, seq))
    dprobs = rng.standard_normal(probs.shape)
    p32, d32 = probs.astype(np.float32), dprobs.astype(np.float32)
    buf = device.buffer_from(d32)
    program = device.program()
    att.softmax_backward(program, device.buffer_from(p32), buf, batch=batch, seq=seq, heads=heads)
    (out,) = read(program, buf)
    assert rel_error(out, ref.masked_softmax_backward(p32.astype(np.float64), d32)) <= BACKWARD_BOUND


def test_pieces_over_a_fused_qkv_buffer(device, rng):
    """Q, K, V as column blocks of one [B*T, 3*H*D] buffer (views), the pieces recorded one by
    one as a caller with attention dropout would (here without dropping anything)."""
    att = run(AttentionKernels.load(device, run(MatmulKernels.load(device))))
    batch, seq, heads, dim = 2, 4, 2, 4
    width = heads * dim
    qkv = rng.standard_normal((batch * seq, 3 * width), dtype=np.float32)
    mask = random_mask(rng, batch, seq)
    buf = device.buffer_from(qkv)
    q, k, v = (MatrixView(buf, 3 * width, i * width) for i in range(3))
    shape = dict(batch=batch, seq=seq, heads=heads)
    probs = poisoned(device, batch * heads * seq * seq)
    ctx = poisoned(device, batch * seq * width)
    program = device.program()
    att.scores(program, q, k, probs, head_dim=dim, **shape)
    att.softmax(program, probs, device.buffer_from(mask), **shape)
    att.context(program, probs, v, ctx, head_dim=dim, **shape)
    (out,) = read(program, ctx)
    q64, k64, v64 = (qkv[:, i * width:(i + 1) * width].astype(np.float64) for i in range(3))
    assert rel_error(out, ref.attention_forward(q64, k64, v64, mask, heads)[0]) <= FORWARD_BOUND


@pytest.mark.parametrize("batch, queries, keys, heads, dim, causal, masked", [
    (2, 5, 9, 3, 4, False, True),       # cross attention: other key length, padded keys
    (2, 6, 6, 2, 8, True, False),       # T5 decoder self-attention (no padding mask)
    (1, 3, 11, 2, 5, True, False),      # the last 3 queries of 11 cached positions
    (3, 7, 7, 4, 3, False, True)])      # T5 encoder self-attention
def test_bias_scale_keys_and_causal_match_numpy(device, att, rng, batch, queries, keys, heads, dim,
                                                causal, masked):
    """T5's attention: scaling 1, a bias [H, Tq, Tk] shared by the batch, Tk != Tq, causal
    limit, mask optional; forward and backward against the backend reference in float64, and
    the gradient of a table [R, H] the bias would be gathered from by bucket (full fine-tuning's
    relative position bias), added into what the table's gradient held."""
    from py_engine.backends.numpy_backend import NumpyBackend

    width = heads * dim
    q, dctx = (rng.standard_normal((batch * queries, width), dtype=np.float32) for _ in range(2))
    k, v = (rng.standard_normal((batch * keys, width), dtype=np.float32) for _ in range(2))
    bias = (3 * rng.standard_normal((heads, queries, keys))).astype(np.float32)
    mask = random_mask(rng, batch, keys) if masked else None
    shape = dict(batch=batch, seq=queries, keys=keys, heads=heads)
    bq, bk, bv = (device.buffer_from(x) for x in (q, k, v))
    probs, dprobs = (poisoned(device, batch * heads * queries * keys) for _ in range(2))
    ctx, dq = (poisoned(device, batch * queries * width) for _ in range(2))
    dk, dv = (poisoned(device, batch * keys * width) for _ in range(2))
    program = device.program()
    att.scores(program, bq, bk, probs, head_dim=dim, scaling=1.0, **shape)
    att.softmax(program, probs, None if mask is None else device.buffer_from(mask),
                bias=device.buffer_from(bias), causal=causal, **shape)
    att.context(program, probs, bv, ctx, head_dim=dim, **shape)
    att.grad_values(program, probs, device.buffer_from(dctx), dv, head_dim=dim, **shape)
    att.grad_probs(program, device.buffer_from(dctx), bv, dprobs, head_dim=dim, **shape)
    att.softmax_backward(program, probs, dprobs, **shape)
    att.grad_queries(program, dprobs, bk, dq, head_dim=dim, scaling=1.0, **shape)
    att.grad_keys(program, dprobs, bq, dk, head_dim=dim, scaling=1.0, **shape)
    R = 5
    buckets = rng.integers(0, R, queries * keys)
    held = rng.standard_normal((R, heads), dtype=np.float32)
    dtable = device.buffer_from(held)
    att.bias_backward(program, dprobs, device.buffer_from(buckets.astype(np.uint32)), dtable,
                      table_rows=R, **shape)
    out_ctx, out_probs, out_dq, out_dk, out_dv, out_dtable = read(program, ctx, probs, dq, dk, dv, dtable)

    be = NumpyBackend(np.float64)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    ref_ctx, saved = be.attention(q64, k64, v64, mask, batch, queries, heads, 0.0, scaling=1.0,
                                  bias=bias.astype(np.float64), causal=causal)
    ref_probs = saved[3]
    assert rel_error(out_probs, ref_probs) <= FORWARD_BOUND
    assert np.all(out_probs.reshape(ref_probs.shape)[ref_probs == 0] == 0)   # masked keys exactly 0
    assert rel_error(out_ctx, ref_ctx) <= FORWARD_BOUND
    ref_dtable = held.astype(np.float64)
    grads = be.attention_backward(dctx.astype(np.float64), saved, bias_grad=(ref_dtable, buckets))
    for out, expected in zip((out_dq, out_dk, out_dv), grads):
        assert rel_error(out, expected) <= BACKWARD_BOUND
    assert rel_error(out_dtable - held.ravel(), ref_dtable - held) <= BACKWARD_BOUND


def test_a_bias_per_sequence_is_added_to_each_sequence_s_scores(device, att, rng):
    """DeBERTa's bias [B, H, T, T], one per sequence (bias_per_sequence): each sequence's rows
    read their own; a kernel that read the first sequence's for all fails."""
    batch, seq, heads, dim = 3, 7, 2, 4
    q, k = (rng.standard_normal((batch * seq, heads * dim), dtype=np.float32) for _ in range(2))
    bias = (3 * rng.standard_normal((batch, heads, seq, seq))).astype(np.float32)
    mask = random_mask(rng, batch, seq)
    shape = dict(batch=batch, seq=seq, heads=heads)
    probs = poisoned(device, batch * heads * seq * seq)
    program = device.program()
    att.scores(program, device.buffer_from(q), device.buffer_from(k), probs, head_dim=dim, **shape)
    att.softmax(program, probs, device.buffer_from(mask), bias=device.buffer_from(bias),
                bias_per_sequence=True, **shape)
    (out,) = read(program, probs)
    scores = ref.attention_scores(q.astype(np.float64), k.astype(np.float64), batch, heads, dim ** -0.5)
    assert rel_error(out, ref.masked_softmax(scores + bias, mask)) <= FORWARD_BOUND
