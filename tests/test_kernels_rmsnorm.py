"""RMSNorm kernels (shaders/rmsnorm.wgsl) on wgpu-native against the NumPy reference in float64:
fresh random inputs, NaN-poisoned outputs, ||out - ref|| / ||ref|| under BOUNDS."""

import numpy as np
import pytest
from conftest import column_sum_error, read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.rmsnorm import RmsNormKernels
from py_engine.ops.rmsnorm import rmsnorm_backward, rmsnorm_backward_input, rmsnorm_forward

# f32 against float64. Forward: one tree-summed row reduction, then two products per element.
# dx: products of values normalised by rstd and one row mean. dweight: two-pass sums down the
# rows, ~sqrt(rows) terms each. (Measured on lavapipe: <= ~3e-7 for all of them.)
BOUNDS = {"y": 1e-6, "rstd": 1e-6, "dx": 2e-6, "dweight": 2e-6}


@pytest.fixture(scope="module", params=[64, 32])
def kernels(request, device):
    return run(RmsNormKernels.load(device, workgroup=request.param))


def run_rmsnorm(device, kernels, x, weight, dy, eps, accumulate_into=None, offset=0.0):
    rows, cols = x.shape
    up = device.buffer_from
    x_b, w_b, dy_b = up(x), up(weight), up(dy)
    out, rstd, dx = (poisoned(device, n) for n in (rows * cols, rows, rows * cols))
    dweight = poisoned(device, cols) if accumulate_into is None else up(accumulate_into)
    program = device.program()
    kernels.forward(program, x_b, w_b, out, rstd, rows, cols, eps, offset=offset)
    kernels.backward(program, dy_b, x_b, w_b, rstd, dx, dweight, rows, cols,
                     accumulate=accumulate_into is not None, offset=offset)
    got = read(program, out, rstd, dx, dweight)
    return dict(zip(("y", "rstd", "dx", "dweight"), got))


def reference(x, weight, dy, eps, offset=0.0):
    x, weight, dy = (a.astype(np.float64) for a in (x, weight, dy))
    y, rstd = rmsnorm_forward(x, weight, eps, offset)
    dx, dweight = rmsnorm_backward(dy, x, weight, rstd, offset)
    return {"y": y, "rstd": rstd, "dx": dx, "dweight": dweight}


def random_case(rows, cols, scale=1.0):
    rng = np.random.default_rng()
    f32 = np.float32
    x = (rng.standard_normal((rows, cols)) * scale * rng.uniform(0.5, 2.0)).astype(f32)
    weight = (1 + 0.3 * rng.standard_normal(cols)).astype(f32)
    dy = rng.standard_normal((rows, cols)).astype(f32)
    return x, weight, dy


@pytest.mark.parametrize("rows, cols, scale, eps", [
    (1, 1, 1.0, 1e-6), (1, 7, 1.0, 1e-6), (7, 33, 1.0, 1e-5), (37, 256, 20.0, 1e-6),
    (3, 1000, 0.01, 1e-6), (513, 24, 1.0, 1e-5),
])
def test_rmsnorm_matches_numpy(device, kernels, rows, cols, scale, eps):
    x, weight, dy = random_case(rows, cols, scale)
    got = run_rmsnorm(device, kernels, x, weight, dy, eps)
    ref = reference(x, weight, dy, eps)
    for name, bound in BOUNDS.items():
        err = rel_error(got[name], ref[name])
        if cols == 1 and name == "dx":
            # one column: dx = rstd * (g - xhat * mean(g * xhat)) = rstd * g * eps / (x^2 + eps)
            # cancels to ~1e-6 of g, and rstd (up to 1/sqrt(eps)) scales that rounding up, so the
            # bound is relative to the operands' scale rstd * |g|.
            scale = np.abs(dy * weight) * ref["rstd"].reshape(-1, 1)
            assert np.all(np.abs(got[name].reshape(scale.shape) - ref[name]) <= 1e-6 * scale), name
            continue
        assert err <= bound, (name, err)


@pytest.mark.parametrize("rows, cols", [(1, 5), (37, 256), (130, 2048)])
def test_gemma_offset_matches_numpy(device, kernels, rows, cols):
    """offset=1.0 (Gemma's RMSNorm, scaling by 1 + weight): weights near 0, as Gemma stores them."""
    x, weight, dy = random_case(rows, cols)
    weight -= 1.0
    got = run_rmsnorm(device, kernels, x, weight, dy, 1e-6, offset=1.0)
    ref = reference(x, weight, dy, 1e-6, offset=1.0)
    for name, bound in BOUNDS.items():
        assert rel_error(got[name], ref[name]) <= bound, name
    plain = reference(x, weight, dy, 1e-6)
    assert rel_error(got["y"], plain["y"]) > 1e-1            # the offset is applied


def test_rmsnorm_accumulates_weight_grad(device, kernels):
    rows, cols = 9, 40
    x, weight, dy = random_case(rows, cols)
    old = np.random.default_rng().standard_normal(cols).astype(np.float32)
    got = run_rmsnorm(device, kernels, x, weight, dy, 1e-6, accumulate_into=old)
    ref = reference(x, weight, dy, 1e-6)
    assert rel_error(got["dweight"], ref["dweight"] + old) <= BOUNDS["dweight"]
    assert rel_error(got["dx"], ref["dx"]) <= BOUNDS["dx"]


def test_rmsnorm_rows_spill_into_second_dispatch_dimension(device):
    kernels = run(RmsNormKernels.load(device, workgroup=4))
    rows, cols = 65_537, 4
    x, weight, dy = random_case(rows, cols)
    got = run_rmsnorm(device, kernels, x, weight, dy, 1e-6)
    ref = reference(x, weight, dy, 1e-6)
    # dweight sums 65,537 terms per column: bounded against the terms' own scale (column_sum_error)
    terms = dy.astype(np.float64) * x.astype(np.float64) * ref["rstd"].reshape(-1, 1)
    for name, bound in BOUNDS.items():
        err = column_sum_error(got[name], ref[name], terms) if name == "dweight" else \
            rel_error(got[name], ref[name])
        assert err <= bound, (name, err)


def test_backward_input_alone_matches_numpy(device, rng):
    """The frozen-weight backward: dx only, from a host-computed rstd."""
    rows, cols = 19, 40
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    _, rstd = rmsnorm_forward(x64, w64)
    rms = run(RmsNormKernels.load(device))
    dx = poisoned(device, rows * cols)
    program = device.program()
    up = device.buffer_from
    rms.backward_input(program, up(dy), up(x), up(weight), up(rstd.astype(np.float32)), dx, rows,
                       cols)
    (got,) = read(program, dx)
    assert rel_error(got, rmsnorm_backward_input(dy.astype(np.float64), x64, w64, rstd)) <= 2e-6


def test_rmsnorm_rejects_short_buffers(device):
    rms = run(RmsNormKernels.load(device))
    b = device.create_buffer(4 * 8)
    with pytest.raises(ValueError, match="x holds"):
        rms.forward(device.program(), b, b, device.create_buffer(4 * 12), b, rows=3, cols=4)
    with pytest.raises(ValueError, match="rows, cols >= 1"):
        rms.forward(device.program(), b, b, b, b, rows=0, cols=4)
