"""SwiGLU kernels (shaders/swiglu.wgsl) on wgpu-native against the NumPy reference in float64:
fresh random inputs, NaN-poisoned outputs, ||out - ref|| / ||ref|| under BOUNDS."""

import math

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.swiglu import SwiGLUKernels
from py_engine.ops.gelu import gelu_tanh_with_slope, gelu_with_slope
from py_engine.ops.swiglu import swiglu_backward, swiglu_forward

# f32 against float64: exp plus a handful of roundings per element (measured ~1e-7 on lavapipe).
BOUNDS = {"out": 1e-6, "dgate": 1e-6, "dup": 1e-6}


@pytest.fixture(scope="module")
def swiglu(device):
    return run(SwiGLUKernels.load(device))


def run_swiglu(device, kernels, gate, up, dout, activation="silu"):
    n = gate.size
    b = device.buffer_from
    gate_b, up_b, dout_b = b(gate), b(up), b(dout)
    out, dgate, dup = (poisoned(device, n) for _ in range(3))
    program = device.program()
    kernels.forward(program, gate_b, up_b, out, n, activation)
    kernels.backward(program, dout_b, gate_b, up_b, dgate, dup, n, activation)
    return dict(zip(("out", "dgate", "dup"), read(program, out, dgate, dup)))


def reference(gate, up, dout, activation="silu"):
    gate, up, dout = (a.astype(np.float64) for a in (gate, up, dout))
    dgate, dup = swiglu_backward(dout, gate, up, activation)
    return {"out": swiglu_forward(gate, up, activation), "dgate": dgate, "dup": dup}


@pytest.mark.parametrize("n, spread", [(1, 1.0), (1000, 1.0), (4099, 4.0), (20_000, 30.0)])
def test_swiglu_matches_numpy(device, swiglu, n, spread):
    rng = np.random.default_rng()
    gate = (rng.standard_normal(n) * spread).astype(np.float32)
    up = rng.standard_normal(n).astype(np.float32)
    dout = rng.standard_normal(n).astype(np.float32)
    got = run_swiglu(device, swiglu, gate, up, dout)
    ref = reference(gate, up, dout)
    # silu' crosses zero near gate = -1.28: there dgate is a difference of terms of size
    # |dout * up| * (s + |g| s (1 - s)), which bounds its rounding (one element can sit there).
    g64 = gate.astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-g64))
    dgate_scale = np.linalg.norm(np.abs(dout * up) * (s + np.abs(g64) * s * (1 - s)))
    for name, bound in BOUNDS.items():
        err = rel_error(got[name], ref[name])
        if name == "dgate":
            err = np.linalg.norm(np.asarray(got[name], np.float64) - ref[name]) / max(
                np.linalg.norm(ref[name]), dgate_scale)
        assert err <= bound, (name, err)


def test_swiglu_extreme_gates_stay_finite(device, swiglu):
    """exp(-|g|) never overflows: huge gates give silu = g or 0, derivative 1 or 0."""
    gate = np.array([-1e30, -200.0, -90.0, 0.0, 90.0, 200.0, 1e30], np.float32)
    ones = np.ones_like(gate)
    got = run_swiglu(device, swiglu, gate, ones, ones)
    ref = reference(gate, ones, ones)
    for name in BOUNDS:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, atol=1e-30, err_msg=name)


def test_swiglu_grid_stride_covers_more_than_one_launch(device):
    kernels = run(SwiGLUKernels.load(device, workgroup=64))
    n = 70_001
    rng = np.random.default_rng()
    gate, up, dout = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    b = device.buffer_from
    out, dgate, dup = (poisoned(device, n) for _ in range(3))
    params = device.uniform("II", n, 0)      # activation 0: silu
    program = device.program()
    program.dispatch(kernels._kernels["swiglu_forward"], [b(gate), b(up), out, params], 5)
    program.dispatch(kernels._kernels["swiglu_backward"],
                     [b(gate), b(up), dgate, params, b(dout), dup], 5)
    got = dict(zip(("out", "dgate", "dup"), read(program, out, dgate, dup)))
    ref = reference(gate, up, dout)
    for name, bound in BOUNDS.items():
        assert rel_error(got[name], ref[name]) <= bound, name


def check_geglu(got, ref, g, act, slope, dgate_scale):
    """Each output within BOUNDS of the reference: dgate relative to `dgate_scale` (the size of
    its terms where gelu' crosses zero), out and dup with each element's share scaled by
    gelu's condition number |g gelu'(g) / gelu(g)| (act, slope: gelu and gelu' at g)."""
    kappa = np.maximum(1.0, np.abs(np.divide(g * slope, act, out=np.ones_like(g), where=act != 0)))
    for name, bound in BOUNDS.items():
        diff = np.linalg.norm(np.asarray(got[name], np.float64) - ref[name])
        if name == "dgate":
            err = diff / max(np.linalg.norm(ref[name]), dgate_scale)
        else:
            err = diff / np.linalg.norm(ref[name] * kappa)     # NaN poison fails the check
        assert err <= bound, (name, err)


@pytest.mark.parametrize("n, spread", [(1, 1.0), (4099, 3.0), (20_000, 30.0)])
def test_geglu_matches_numpy(device, swiglu, n, spread):
    """activation="gelu_tanh" (Gemma's GeGLU): the tanh-form GELU of gelu.wgsl on the gate.
    gelu' crosses zero near gate = -0.75, where dgate is a difference of terms of size
    |dout * up| * (0.5 (1 + |tanh|) + 0.5 |g| (1 - tanh^2) du/dx): the bound is relative to that."""
    rng = np.random.default_rng()
    gate = (rng.standard_normal(n) * spread).astype(np.float32)
    up, dout = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    got = run_swiglu(device, swiglu, gate, up, dout, "gelu_tanh")
    ref = reference(gate, up, dout, "gelu_tanh")
    g = gate.astype(np.float64)
    t = np.tanh(0.7978845608028654 * (g + 0.044715 * g ** 3))
    du = 0.7978845608028654 * (1 + 3 * 0.044715 * g * g)
    dgate_scale = np.linalg.norm(np.abs(dout * up) * (0.5 * (1 + np.abs(t)) + 0.5 * np.abs(g) * (1 - t * t) * du))
    # out and dup carry gelu(gate), whose condition number |g gelu'(g) / gelu(g)| grows on the
    # left tail (~10 at g = -3, ~55 at g = -6): rounding gate itself moves them by that many
    # ulps, so each element's share of the bound is scaled by it (one element can sit there).
    act, slope = gelu_tanh_with_slope(g)
    check_geglu(got, ref, g, act, slope, dgate_scale)
    if n > 1 and spread <= 3:   # silu and gelu meet at 0 (both g / 2) and for large |gate|
        silu = run_swiglu(device, swiglu, gate, up, dout)
        assert rel_error(silu["out"], ref["out"]) > 1e-2      # the activation is applied


@pytest.mark.parametrize("n, spread", [(1, 1.0), (4099, 3.0), (20_000, 30.0)])
def test_exact_geglu_matches_numpy_and_torch(device, swiglu, n, spread):
    """activation="gelu" (ModernBERT's GeGLU, gelu(input) * gate): gelu.wgsl's exact (erf)
    GELU on the gate, against the float64 reference, which is torch's GELU in float64; bounds
    as for the tanh form (gelu' crosses zero near gate = -0.75; gelu's condition number grows
    on the left tail)."""
    import torch

    rng = np.random.default_rng()
    gate = (rng.standard_normal(n) * spread).astype(np.float32)
    up, dout = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    got = run_swiglu(device, swiglu, gate, up, dout, "gelu")
    ref = reference(gate, up, dout, "gelu")
    g = torch.tensor(gate, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.gelu(g) * torch.tensor(up, dtype=torch.float64)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    assert rel_error(ref["out"], out.detach().numpy()) <= 1e-12
    assert rel_error(ref["dgate"], g.grad.numpy()) <= 1e-12
    g = gate.astype(np.float64)
    act, slope = gelu_with_slope(g)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(g / math.sqrt(2)))
    dgate_scale = np.linalg.norm(np.abs(dout * up) * (cdf + np.abs(g) * np.exp(-g * g / 2) / math.sqrt(2 * math.pi)))
    check_geglu(got, ref, g, act, slope, dgate_scale)
    if n > 1 and spread <= 3:   # the tanh form differs by up to 5e-4: the exact one is applied
        tanh_form = run_swiglu(device, swiglu, gate, up, dout, "gelu_tanh")
        assert np.abs(np.asarray(tanh_form["out"]) - np.asarray(got["out"])).max() > 1e-5


def test_unknown_activation_is_refused(device, swiglu):
    buf = poisoned(device, 4)
    with pytest.raises(ValueError, match="activation"):
        swiglu.forward(device.program(), buf, buf, buf, 4, "relu")
