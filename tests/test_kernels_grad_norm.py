"""Gradient-norm kernels (shaders/grad_norm.wgsl) on wgpu-native against the NumPy reference:
the global L2 norm of several gradient buffers and torch's clip factor, in the metrics buffer."""

import numpy as np
import pytest
from conftest import floats, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.cross_entropy import METRIC_CLIP_SCALE, METRIC_GRAD_NORM, METRIC_SLOTS
from py_engine.kernels.grad_norm import GradNormKernels
from py_engine.ops.grad_norm import clip_scale, global_grad_norm

# f32 against float64: per-thread fma sums of squares, then two tree passes.
BOUNDS = {"norm": 2e-6, "scale": 2e-6}


@pytest.fixture(scope="module", params=[(256, 64), (32, 3)])
def norm_kernels(request, device):
    workgroup, max_partials = request.param
    return run(GradNormKernels.load(device, workgroup=workgroup, max_partials=max_partials))


def run_norm(device, kernels, grads, max_norm, counts=None):
    metrics = poisoned(device, METRIC_SLOTS)
    buffers = [device.buffer_from(g) for g in grads]
    if counts is not None:
        buffers = list(zip(buffers, counts))
    program = device.program()
    kernels.record(program, buffers, metrics, max_norm)
    program.read(metrics)
    (m,) = run(program.run())
    return floats(m)


@pytest.mark.parametrize("sizes, max_norm", [
    ((1,), 1.0), ((1000,), None), ((5, 7, 100_003), 1.0), ((384 * 8, 8 * 384, 2, 768), 1e9),
    ((257,) * 12, 0.01),
])
def test_grad_norm_matches_numpy(device, norm_kernels, sizes, max_norm):
    rng = np.random.default_rng()
    grads = [(rng.standard_normal(n) * 10 ** rng.uniform(-3, 0)).astype(np.float32) for n in sizes]
    m = run_norm(device, norm_kernels, grads, max_norm)
    norm = global_grad_norm([g.astype(np.float64) for g in grads])
    scale = clip_scale(norm, max_norm)
    assert abs(m[METRIC_GRAD_NORM] - norm) <= BOUNDS["norm"] * norm
    assert abs(m[METRIC_CLIP_SCALE] - scale) <= BOUNDS["scale"] * scale
    others = np.delete(m, [METRIC_GRAD_NORM, METRIC_CLIP_SCALE])
    assert np.isnan(others).all()        # nothing else in the metrics buffer is written


def test_counts_limit_each_buffer(device, norm_kernels):
    rng = np.random.default_rng()
    a, b = rng.standard_normal(100).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    m = run_norm(device, norm_kernels, [a, b], None, counts=[60, 50])
    norm = global_grad_norm([a[:60].astype(np.float64), b.astype(np.float64)])
    assert abs(m[METRIC_GRAD_NORM] - norm) <= BOUNDS["norm"] * norm
    assert m[METRIC_CLIP_SCALE] == 1.0


def test_zero_gradients_give_norm_zero_scale_one(device, norm_kernels):
    m = run_norm(device, norm_kernels, [np.zeros(300, np.float32)], 1.0)
    assert m[METRIC_GRAD_NORM] == 0.0 and m[METRIC_CLIP_SCALE] == 1.0


def test_bad_max_norm_raises(device, norm_kernels):
    with pytest.raises(ValueError, match="max_norm"):
        norm_kernels.record(device.program(), [device.create_buffer(16)],
                            device.create_buffer(32), max_norm=0.0)
