"""DeBERTa-v2's disentangled attention bias on wgpu-native (lavapipe) against the NumPy
reference, and that reference against torch autograd over transformers' gather formulation.

Fresh random inputs every run; outputs NaN-poisoned before the dispatch; relative error against
float64. The row tables come from small bucket sizes, so that several distances share a row (the
backward's scatter then sums them).
"""

import numpy as np
import pytest
import torch
from conftest import read, rel_error, run

from py_engine.backends.gpu_backend import GpuBackend, Kernels, Tensor
from py_engine.backends.numpy_backend import NumpyBackend
from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.disentangled_attention import DisentangledAttentionKernels
from py_engine.models.relative_position import RelativeRows, deberta_relative_rows
from py_engine.ops import disentangled_attention as dis_ops

COPY_BOUND = 0.0          # the gather adds at most two floats: exact for one term
SUM_BOUND = 1e-6          # a few f32 terms per output
OP_BOUND = 2e-6           # the backend ops: f32 matmuls over D and B*T, then the gather/scatter
REFERENCE_BOUND = 1e-12   # the NumPy reference against torch in float64

B, T, H, D = 3, 11, 2, 5
# (span, bucket_size, max_position): log buckets shared by several distances; exact distances
# clamped at the span; exact distances only
TABLES = [(4, 4, 8), (3, -1, -1), (16, 32, 64)]


def relative_rows(span, buckets, max_position):
    return RelativeRows.of(deberta_relative_rows(T, span, buckets, max_position))


@pytest.fixture(scope="module")
def kernels(device):
    return run(DisentangledAttentionKernels.load(device))


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("terms", ["c2p", "p2c", "both"])
def test_gather_and_scatter(device, kernels, rng, table, terms):
    rows = relative_rows(*table)
    R = rows.rows
    c2p = rng.standard_normal((H, B * T, R), dtype=np.float32) if terms != "p2c" else None
    p2c = rng.standard_normal((H, B * T, R), dtype=np.float32) if terms != "c2p" else None
    dbias = rng.standard_normal((B, H, T, T), dtype=np.float32)
    u32 = lambda values: device.buffer_from(np.asarray(values, np.uint32))
    starts, distances = rows.distances()
    bias, d_c2p, d_p2c = (poisoned(device, B * H * T * T), poisoned(device, H * B * T * R),
                          poisoned(device, H * B * T * R))
    shape = dict(batch=B, seq=T, heads=H, rows=R)
    program = device.program()
    kernels.gather(program, None if c2p is None else device.buffer_from(c2p),
                   None if p2c is None else device.buffer_from(p2c), u32(rows.offsets), bias, **shape)
    dbias_buffer = device.buffer_from(dbias)
    for side, out in enumerate((d_c2p, d_p2c)):
        kernels.scatter(program, dbias_buffer, u32(starts), u32(distances), out, keys_side=bool(side),
                        **shape)
    got, got_c2p, got_p2c = read(program, bias, d_c2p, d_p2c)

    index = dis_ops.relative_index(rows)
    want = np.zeros((B, H, T, T))
    if c2p is not None:
        a = c2p.astype(np.float64).reshape(H, B, T, R).transpose(1, 0, 2, 3)
        want += np.take_along_axis(a, np.broadcast_to(index, (B, H, T, T)), axis=-1)
    if p2c is not None:
        p = p2c.astype(np.float64).reshape(H, B, T, R).transpose(1, 0, 2, 3)
        want += np.swapaxes(np.take_along_axis(p, np.broadcast_to(index.T, (B, H, T, T)), -1), -1, -2)
    assert rel_error(got, want) <= (COPY_BOUND if terms != "both" else SUM_BOUND)
    dbias64 = dbias.astype(np.float64)
    want_c2p = dis_ops._scatter(dbias64, index, R).transpose(1, 0, 2, 3).reshape(H, B * T, R)
    want_p2c = dis_ops._scatter(np.swapaxes(dbias64, -1, -2), index.T, R)
    want_p2c = want_p2c.transpose(1, 0, 2, 3).reshape(H, B * T, R)
    assert rel_error(got_c2p, want_c2p) <= SUM_BOUND
    assert rel_error(got_p2c, want_p2c) <= SUM_BOUND


def test_scatter_sums_the_distances_that_share_a_row():
    """The bucketed table reads a row at several distances: a mutant summing one alone fails."""
    rows = relative_rows(4, 4, 8)
    starts, _ = rows.distances()
    assert max(b - a for a, b in zip(starts, starts[1:])) > 1


@pytest.mark.parametrize("table", TABLES)
def test_reference_against_torch(rng, table):
    """bias = scaling * (gather(q . pk^T) + gather(k . pq^T)^T), as transformers' DeBERTa-v2
    computes it with torch.gather, and its gradients by autograd."""
    rows = relative_rows(*table)
    q, k = rng.standard_normal((2, B * T, H * D))
    pq, pk = rng.standard_normal((2, rows.rows, H * D))
    scaling = float(rng.uniform(0.1, 1.0))
    got = dis_ops.disentangled_bias(q, k, pq, pk, B, H, scaling, rows)
    tq, tk, tpq, tpk = (torch.tensor(x, requires_grad=True) for x in (q, k, pq, pk))
    heads = lambda x, b: x.view(b, -1, H, D).permute(0, 2, 1, 3)
    index = torch.tensor(dis_ops.relative_index(rows))
    c2p = torch.gather(heads(tq, B) @ heads(tpk, 1).transpose(-1, -2), -1, index.expand(B, H, T, T))
    p2c = torch.gather(heads(tk, B) @ heads(tpq, 1).transpose(-1, -2), -1,
                       index.T.expand(B, H, T, T)).transpose(-1, -2)
    want = (c2p + p2c) * scaling
    assert rel_error(got, want.detach().numpy()) <= REFERENCE_BOUND
    dbias = rng.standard_normal(got.shape)
    want.backward(torch.tensor(dbias))
    grads = dis_ops.disentangled_bias_backward(dbias, q, k, pq, pk, H, scaling, rows)
    for got_grad, tensor in zip(grads, (tq, tk, tpq, tpk)):
        assert rel_error(got_grad, tensor.grad.numpy()) <= REFERENCE_BOUND


@pytest.mark.parametrize("terms", ["c2p", "p2c", "both"])
def test_backend_ops_match_numpy(device, rng, terms):
    """GpuBackend.disentangled_bias, attention with a bias per sequence and the scores'
    gradient, and disentangled_bias_backward, against the NumPy backend in float64."""
    rows = relative_rows(4, 4, 8)
    q, k, v = (rng.standard_normal((B * T, H * D), dtype=np.float32) for _ in range(3))
    pq = rng.standard_normal((rows.rows, H * D), dtype=np.float32) if terms != "c2p" else None
    pk = rng.standard_normal((rows.rows, H * D), dtype=np.float32) if terms != "p2c" else None
    mask = (np.arange(T)[None, :] < np.array([T, T - 3, 4])[:, None]).astype(np.uint32)
    dctx = rng.standard_normal((B * T, H * D), dtype=np.float32)
    scaling = (D * 3) ** -0.5

    def step(be, wrap):
        bias, saved = be.disentangled_bias(wrap(q), wrap(k), wrap(pq), wrap(pk), B, H, scaling, rows)
        ctx, attn = be.attention(wrap(q), wrap(k), wrap(v), wrap(mask), B, T, H, 0.0,
                                 scaling=scaling, bias=bias)
        dq, dk, dv, dscores = be.attention_backward(wrap(dctx), attn, score_grad=True)
        dq, dk, dpq, dpk = be.disentangled_bias_backward(dscores, saved, dq, dk)
        return bias, ctx, dq, dk, dv, dpq, dpk

    f64 = lambda x: None if x is None else np.asarray(x, np.float64)
    want = step(NumpyBackend(np.float64), f64)
    be = GpuBackend(device, run(Kernels.load(device, relative=True)))
    u = lambda x: None if x is None else Tensor(device.buffer_from(x), x.shape)
    program = device.program()
    be.record(program)
    got = step(be, u)
    present = [(g, w) for g, w in zip(got, want) if w is not None]
    values = read(program, *(g.buffer for g, _ in present))
    assert len(present) == 7 - (terms != "both")
    for value, (_, w) in zip(values, present):
        assert rel_error(value.reshape(w.shape), w) <= OP_BOUND
