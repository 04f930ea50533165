"""LayerNorm kernels (shaders/layernorm.wgsl) on wgpu-native against the NumPy reference in
float64: fresh random inputs, NaN-poisoned outputs, ||out - ref|| / ||ref|| under BOUNDS."""

import numpy as np
import pytest
from conftest import column_sum_error, floats, read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.layernorm import LayerNormKernels
from py_engine.ops.layernorm import layernorm_backward, layernorm_forward

# f32 against float64. Forward: two tree-summed row reductions then one fma per element.
# dx: products of values normalised by rstd, two row means. dgamma, dbeta: two-pass sums down
# the rows, ~sqrt(rows) terms each.
BOUNDS = {"y": 1e-6, "mean": 1e-6, "rstd": 1e-6, "dx": 2e-6, "dgamma": 2e-6, "dbeta": 2e-6}


@pytest.fixture(scope="module", params=[64, 32])
def kernels(request, device):
    return run(LayerNormKernels.load(device, workgroup=request.param))


def run_layernorm(device, kernels, x, gamma, beta, dy, accumulate_into=None):
    rows, cols = x.shape
    up = device.buffer_from
    x_b, g_b, b_b, dy_b = up(x), up(gamma), up(beta), up(dy)
    out, mean, rstd, dx = (poisoned(device, n) for n in (rows * cols, rows, rows, rows * cols))
    if accumulate_into is None:
        dgamma, dbeta = poisoned(device, cols), poisoned(device, cols)
    else:
        dgamma, dbeta = up(accumulate_into[0]), up(accumulate_into[1])
    program = device.program()
    kernels.forward(program, x_b, g_b, b_b, out, mean, rstd, rows, cols)
    kernels.backward(program, dy_b, x_b, g_b, mean, rstd, dx, dgamma, dbeta, rows, cols,
                     accumulate=accumulate_into is not None)
    for b in (out, mean, rstd, dx, dgamma, dbeta):
        program.read(b)
    names = ("y", "mean", "rstd", "dx", "dgamma", "dbeta")
    return dict(zip(names, (floats(v) for v in run(program.run()))))


def reference(x, gamma, beta, dy):
    x, gamma, beta, dy = (a.astype(np.float64) for a in (x, gamma, beta, dy))
    y, mean, rstd = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = layernorm_backward(dy, x, gamma, mean, rstd)
    return {"y": y, "mean": mean, "rstd": rstd, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def random_case(rows, cols, offset=0.0):
    rng = np.random.default_rng()
    f32 = np.float32
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.5, 2.0) + offset).astype(f32)
    gamma = rng.standard_normal(cols).astype(f32)
    beta = rng.standard_normal(cols).astype(f32)
    dy = rng.standard_normal((rows, cols)).astype(f32)
    return x, gamma, beta, dy


@pytest.mark.parametrize("rows, cols, offset", [
    (1, 1, 0.0), (1, 7, 0.0), (7, 33, 0.0), (37, 384, 3.0), (3, 1000, -5.0), (513, 24, 0.0),
])
def test_layernorm_matches_numpy(device, kernels, rows, cols, offset):
    x, gamma, beta, dy = random_case(rows, cols, offset)
    got = run_layernorm(device, kernels, x, gamma, beta, dy)
    ref = reference(x, gamma, beta, dy)
    if cols == 1:   # every xhat is 0: y = beta, dx = 0, dgamma = 0 exactly
        np.testing.assert_array_equal(got["dx"], 0.0)
        np.testing.assert_array_equal(got["dgamma"], 0.0)
        for name in ("y", "mean", "dbeta"):
            assert rel_error(got[name], ref[name]) <= BOUNDS[name], name
        return
    for name, bound in BOUNDS.items():
        err = rel_error(got[name], ref[name])
        if name == "mean":
            # a row's mean can be near zero (its values cancel): bound it against their scale
            scale = max(np.linalg.norm(ref["mean"]), np.linalg.norm(x) / np.sqrt(cols))
            err = np.linalg.norm(np.asarray(got["mean"], np.float64) - ref["mean"]) / scale
        assert err <= bound, (name, err)


def test_layernorm_accumulates_parameter_grads(device, kernels):
    rows, cols = 9, 40
    x, gamma, beta, dy = random_case(rows, cols)
    rng = np.random.default_rng()
    old = rng.standard_normal(cols).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
    got = run_layernorm(device, kernels, x, gamma, beta, dy, accumulate_into=old)
    ref = reference(x, gamma, beta, dy)
    assert rel_error(got["dgamma"], ref["dgamma"] + old[0]) <= BOUNDS["dgamma"]
    assert rel_error(got["dbeta"], ref["dbeta"] + old[1]) <= BOUNDS["dbeta"]
    assert rel_error(got["dx"], ref["dx"]) <= BOUNDS["dx"]


def test_layernorm_rows_spill_into_second_dispatch_dimension(device):
    kernels = run(LayerNormKernels.load(device, workgroup=4))
    rows, cols = 65_537, 8
    x, gamma, beta, dy = random_case(rows, cols)
    got = run_layernorm(device, kernels, x, gamma, beta, dy)
    ref = reference(x, gamma, beta, dy)
    # dgamma and dbeta sum 65,537 terms per column: bounded against the terms' own scale
    # (column_sum_error), as in test_layernorm_matches_numpy the means are
    xhat = (x.astype(np.float64) - ref["mean"][:, None]) * ref["rstd"][:, None]
    terms = {"dgamma": dy.astype(np.float64) * xhat, "dbeta": dy.astype(np.float64)}
    for name, bound in BOUNDS.items():
        err = column_sum_error(got[name], ref[name], terms[name]) if name in terms else \
            rel_error(got[name], ref[name])
        assert err <= bound, (name, err)


def test_backward_input_alone_matches_numpy(device, rng):
    rows, cols = 19, 40
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    dy = rng.standard_normal((rows, cols)).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
    _, mean, rstd = layernorm_forward(x.astype(np.float64), gamma.astype(np.float64), np.zeros(cols))
    ln = run(LayerNormKernels.load(device))
    dx = poisoned(device, rows * cols)
    program = device.program()
    ln.backward_input(program, device.buffer_from(dy), device.buffer_from(x), device.buffer_from(gamma),
                      device.buffer_from(mean.astype(np.float32)), device.buffer_from(rstd.astype(np.float32)),
                      dx, rows, cols)
    (got,) = read(program, dx)
    want = layernorm_backward(dy.astype(np.float64), x.astype(np.float64), gamma.astype(np.float64), mean, rstd)[0]
    assert rel_error(got, want) <= 2e-6
