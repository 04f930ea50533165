"""GELU kernels (shaders/gelu.wgsl) on wgpu-native against the NumPy reference in float64, and
the shader's erf approximation measured against math.erf on the device."""

import numpy as np
import pytest
from conftest import floats, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.gelu import GeluKernels
from py_engine.ops import gelu as ops

# f32 against float64: erf approximation (~1e-7 absolute) plus a few roundings per element.
BOUNDS = {"forward": 1e-6, "backward": 1e-6}
ERF_MAX_ABS_ERROR = 2.5e-7   # on the device; the driver's exp enters here (NumPy f32: 1.1e-7)
# Per element for x >= -7: Phi from erfc, no cancellation (NumPy f32 7e-6, lavapipe 7.6e-6).
GELU_MAX_REL_ERROR = 2e-5


@pytest.fixture(scope="module")
def gelu(device):
    return run(GeluKernels.load(device))


def run_gelu(device, gelu, x, dy, approximate="none"):
    n = x.size
    x_b, dy_b = device.buffer_from(x), device.buffer_from(dy)
    y, dx = poisoned(device, n), poisoned(device, n)
    program = device.program()
    gelu.forward(program, x_b, y, n, approximate=approximate)
    gelu.backward(program, dy_b, x_b, dx, n, approximate=approximate)
    program.read(y)
    program.read(dx)
    return [floats(v) for v in run(program.run())]


@pytest.mark.parametrize("n, spread", [(1000, 1.0), (4099, 3.0), (20_000, 8.0)])
def test_gelu_matches_numpy(device, gelu, n, spread):
    rng = np.random.default_rng()
    x = (rng.standard_normal(n) * spread).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    y, dx = run_gelu(device, gelu, x, dy)
    x64 = x.astype(np.float64)
    assert rel_error(y, ops.gelu_forward(x64)) <= BOUNDS["forward"]
    assert rel_error(dx, ops.gelu_backward(dy.astype(np.float64), x64)) <= BOUNDS["backward"]


@pytest.mark.parametrize("value", [1.5, -3.0])
def test_gelu_single_element(device, gelu, value):
    x = np.array([value], np.float32)
    y, dx = run_gelu(device, gelu, x, np.array([2.0], np.float32))
    assert abs(y[0] / ops.gelu_forward(x.astype(np.float64))[0] - 1) <= GELU_MAX_REL_ERROR
    assert abs(dx[0] / ops.gelu_backward(2.0, x.astype(np.float64))[0] - 1) <= GELU_MAX_REL_ERROR


def test_gelu_grid_stride_covers_more_than_one_launch(device):
    """A workgroup of 64 and n well past 64 x groups: each thread loops."""
    gelu = run(GeluKernels.load(device, workgroup=64))
    n = 70_001
    rng = np.random.default_rng()
    x = rng.standard_normal(n).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    program = device.program()
    x_b, dy_b = device.buffer_from(x), device.buffer_from(dy)
    y, dx = poisoned(device, n), poisoned(device, n)
    # dispatch with a capped grid through the same kernels
    params = device.uniform("I", n)
    program.dispatch(gelu._kernels["gelu_forward"], [x_b, y, params], 5)
    program.dispatch(gelu._kernels["gelu_backward"], [x_b, dx, params, dy_b], 5)
    program.read(y)
    program.read(dx)
    y, dx = (floats(v) for v in run(program.run()))
    x64 = x.astype(np.float64)
    assert rel_error(y, ops.gelu_forward(x64)) <= BOUNDS["forward"]
    assert rel_error(dx, ops.gelu_backward(dy.astype(np.float64), x64)) <= BOUNDS["backward"]


def test_gelu_relative_error_per_element(device, gelu):
    """Every element, the left tail included, to a relative bound (torch's f32 GELU computes
    x * 0.5 * (1 + erf) there and keeps no digits below x ~ -5). The derivative crosses zero
    near x = -0.75, so its error is measured against the size of its terms |Phi| + |x phi|."""
    x = np.linspace(-7, 7, 140_001).astype(np.float32)
    x = x[x != 0]
    y, dx = run_gelu(device, gelu, x, np.ones_like(x))
    x64 = x.astype(np.float64)
    ref_y = ops.gelu_forward(x64)
    assert np.max(np.abs(y - ref_y) / np.abs(ref_y)) <= GELU_MAX_REL_ERROR
    ref_dx = ops.gelu_backward(np.ones_like(x64), x64)
    terms = ops.normal_cdf(x64) + np.abs(x64) * ops.INV_SQRT_2PI * np.exp(-0.5 * x64 * x64)
    assert np.max(np.abs(dx - ref_dx) / terms) <= GELU_MAX_REL_ERROR


def test_erf_approximation_on_the_device(device, gelu):
    x = np.concatenate([np.linspace(-6, 6, 120_001), [0.0, -0.0, 1e-30, 10.0, -10.0, 100.0]])
    x = x.astype(np.float32)
    n = x.size
    out = poisoned(device, n)
    program = device.program()
    gelu.erf(program, device.buffer_from(x), out, n)
    program.read(out)
    (got,) = run(program.run())
    got = floats(got).astype(np.float64)
    err = np.abs(got - ops.erf(x.astype(np.float64)))
    assert np.all(np.isfinite(got))
    assert err.max() <= ERF_MAX_ABS_ERROR, err.max()
    assert got[-3:].tolist() == [1.0, -1.0, 1.0]


# The tanh form (GPT-2) has no erf: f32 tanh and a few roundings per element.
TANH_BOUND = 1e-6     # lavapipe: forward 5e-8, backward 4e-7


@pytest.mark.parametrize("n, spread", [(1000, 1.0), (4099, 3.0), (20_000, 12.0)])
def test_gelu_tanh_matches_numpy(device, gelu, n, spread):
    rng = np.random.default_rng()
    x = (rng.standard_normal(n) * spread).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    x_b, dy_b = device.buffer_from(x), device.buffer_from(dy)
    y, dx = poisoned(device, n), poisoned(device, n)
    program = device.program()
    gelu.forward(program, x_b, y, n, approximate="tanh")
    gelu.backward(program, dy_b, x_b, dx, n, approximate="tanh")
    program.read(y)
    program.read(dx)
    y, dx = [floats(v) for v in run(program.run())]
    want_y, slope = ops.gelu_tanh_with_slope(x.astype(np.float64))
    assert rel_error(y, want_y) <= TANH_BOUND
    assert rel_error(dx, dy.astype(np.float64) * slope) <= TANH_BOUND


def test_gelu_tanh_relative_error_per_element(device, gelu):
    """Every element of the tanh form to a relative bound, the left tail included, where
    1 + tanh(u) written as 1 + (1 - 2 / (e^2u + 1)) kept no digits (x = -3 was off 1.6e-5,
    x = -5 by 4e-3). Down to x = -6 (2u = -25, above the clamp at -30). The derivative
    crosses zero near x = -0.75: its error is measured against the size of its terms."""
    x = np.linspace(-6, 7, 130_001).astype(np.float32)
    x = x[x != 0]
    y, dx = run_gelu(device, gelu, x, np.ones_like(x), approximate="tanh")
    x64 = x.astype(np.float64)
    ref_y, ref_dx = ops.gelu_tanh_with_slope(x64)
    assert np.max(np.abs(y - ref_y) / np.abs(ref_y)) <= GELU_MAX_REL_ERROR
    t = np.tanh(ops.TANH_C * (x64 + ops.TANH_CUBIC * x64 ** 3))
    terms = 0.5 * (1 + t) + 0.5 * np.abs(x64) * (1 - t * t) * ops.TANH_C * (
        1 + 3 * ops.TANH_CUBIC * x64 * x64)
    assert np.max(np.abs(dx - ref_dx) / terms) <= GELU_MAX_REL_ERROR


def test_gelu_tanh_reference_matches_torch():
    """The NumPy tanh form against torch's gelu(approximate="tanh") and its autograd, float64."""
    import torch

    x = torch.randn(5000, dtype=torch.float64) * 4
    x.requires_grad_(True)
    y = torch.nn.functional.gelu(x, approximate="tanh")
    y.sum().backward()
    got_y, slope = ops.gelu_tanh_with_slope(x.detach().numpy())
    assert rel_error(got_y, y.detach().numpy()) <= 1e-14
    assert rel_error(slope, x.grad.numpy()) <= 1e-14
