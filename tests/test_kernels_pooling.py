"""Pooling and tanh kernels on wgpu-native (lavapipe) against the NumPy reference.

Fresh random inputs and masks every run; outputs NaN-poisoned before the dispatch (random
when the kernel accumulates into them); relative error against float64.
"""

import numpy as np
import torch
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.pooling import PoolingKernels
from py_engine.ops import pooling

COPY_BOUND = 0.0          # [CLS] selection moves floats unchanged
MEAN_BOUND = 1e-6         # a sum of <= T = 9 terms and one division
TANH_BOUND = 1e-6         # series / exp formulation within ~3 ulps per element
TANH_GRAD_BOUND = 1e-6


@pytest.fixture(scope="module")
def pool(device):
    return run(PoolingKernels.load(device))


BATCH, SEQ, HIDDEN = 4, 9, 7


def random_mask(rng):
    lengths = rng.integers(1, SEQ + 1, BATCH)
    lengths[-1] = 0                                   # a sequence with no tokens pools to 0
    return (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.uint32)


def test_cls_pool_and_backward(device, pool, rng):
    x = rng.standard_normal((BATCH * SEQ, HIDDEN), dtype=np.float32)
    dout = rng.standard_normal((BATCH, HIDDEN), dtype=np.float32)
    dx0 = rng.standard_normal((BATCH * SEQ, HIDDEN), dtype=np.float32)
    out, dx = poisoned(device, BATCH * HIDDEN), poisoned(device, BATCH * SEQ * HIDDEN)
    dx_acc = device.buffer_from(dx0)
    shape = dict(batch=BATCH, seq=SEQ, hidden=HIDDEN)
    program = device.program()
    pool.cls(program, device.buffer_from(x), out, **shape)
    pool.cls_backward(program, device.buffer_from(dout), dx, **shape)
    pool.cls_backward(program, device.buffer_from(dout), dx_acc, accumulate=True, **shape)
    got, got_dx, got_acc = read(program, out, dx, dx_acc)
    assert rel_error(got, pooling.cls_pool(x, BATCH)) <= COPY_BOUND
    ref_dx = pooling.cls_pool_backward(dout.astype(np.float64), SEQ)
    assert rel_error(got_dx, ref_dx) <= COPY_BOUND
    assert rel_error(got_acc, dx0 + ref_dx) <= MEAN_BOUND


def test_mean_pool_and_backward(device, pool, rng):
    x = rng.standard_normal((BATCH * SEQ, HIDDEN), dtype=np.float32)
    dout = rng.standard_normal((BATCH, HIDDEN), dtype=np.float32)
    dx0 = rng.standard_normal((BATCH * SEQ, HIDDEN), dtype=np.float32)
    mask = random_mask(rng)
    bmask = device.buffer_from(mask)
    out, dx = poisoned(device, BATCH * HIDDEN), poisoned(device, BATCH * SEQ * HIDDEN)
    dx_acc = device.buffer_from(dx0)
    shape = dict(batch=BATCH, seq=SEQ, hidden=HIDDEN)
    program = device.program()
    pool.mean(program, device.buffer_from(x), bmask, out, **shape)
    pool.mean_backward(program, device.buffer_from(dout), bmask, dx, **shape)
    pool.mean_backward(program, device.buffer_from(dout), bmask, dx_acc, accumulate=True, **shape)
    got, got_dx, got_acc = read(program, out, dx, dx_acc)
    assert rel_error(got, pooling.mean_pool(x.astype(np.float64), mask)) <= MEAN_BOUND
    ref_dx = pooling.mean_pool_backward(dout.astype(np.float64), mask)
    assert rel_error(got_dx, ref_dx) <= MEAN_BOUND
    assert rel_error(got_acc, dx0 + ref_dx) <= MEAN_BOUND


def test_tanh_forward_and_backward(device, pool, rng):
    # Wide range, tiny values (where a naive tanh loses all relative precision) and saturation.
    x = np.concatenate([rng.standard_normal(1000) * 3, rng.uniform(-0.6, 0.6, 1000),
                        10.0 ** rng.uniform(-9, -2, 200) * rng.choice([-1, 1], 200),
                        [0.0, 0.55, -0.55, 20.0, -20.0, 100.0, -1e30, 1e30]]).astype(np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    n = x.size
    y, dx = poisoned(device, n), poisoned(device, n)
    program = device.program()
    pool.tanh(program, device.buffer_from(x), y, n)
    pool.tanh_backward(program, y, device.buffer_from(dy), dx, n)
    got_y, got_dx = read(program, y, dx)
    ref_y = pooling.tanh_forward(x.astype(np.float64))
    assert rel_error(got_y, ref_y) <= TANH_BOUND
    # Element-wise too: the norm would hide the small arguments.
    tiny = np.abs(x) < 0.55
    np.testing.assert_allclose(got_y[tiny], ref_y[tiny], rtol=1e-6, atol=0)
    assert rel_error(got_dx, pooling.tanh_backward(got_y.astype(np.float64), dy)) <= TANH_GRAD_BOUND


def test_relu_forward_and_backward(device, pool, rng):
    """DistilBERT's pre_classifier activation: exact (a max and a select), no gradient where
    the output is 0 (as torch's ReLU, whose backward reads its output)."""
    x = np.concatenate([rng.standard_normal(3000), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    n = x.size
    y, dx = poisoned(device, n), poisoned(device, n)
    program = device.program()
    pool.relu(program, device.buffer_from(x), y, n)
    pool.relu_backward(program, y, device.buffer_from(dy), dx, n)
    got_y, got_dx = read(program, y, dx)
    tx, tdy = torch.tensor(x, dtype=torch.float64, requires_grad=True), torch.tensor(dy, dtype=torch.float64)
    ty = torch.relu(tx)
    ty.backward(tdy)
    np.testing.assert_array_equal(got_y, ty.detach().numpy().astype(np.float32))
    np.testing.assert_array_equal(got_dx, tx.grad.numpy().astype(np.float32))
    np.testing.assert_array_equal(pooling.relu_backward(got_y.astype(np.float64), dy), got_dx)
