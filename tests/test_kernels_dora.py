"""DoRA kernels (shaders/dora.wgsl) on wgpu-native against the NumPy reference in float64
(py_engine/ops/dora.py): fresh random inputs, NaN-poisoned outputs, ||out - ref|| / ||ref||
under BOUNDS."""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.dora import DoraKernels
from py_engine.kernels.matmul import MatmulKernels
from py_engine.ops import dora as ref

# f32 against float64. The norm: a GEMM (k = r terms) added to W, then one tree-summed row
# reduction; scale and merge: one division and one product more. scale_columns: one product
# (and a sum). magnitude_grad: a serial f32 sum down up to ~500 rows. (Measured on lavapipe:
# <= ~2e-7 for all but the magnitude's gradient, <= ~6e-7 for that.) Rounding errors scale
# with the terms summed, not with their sum: where a sum nearly cancels (w + s b.a, z * scale +
# bias, one element each in the 1x1 case) the result's own relative error grows without bound.
# So each error is taken relative to the sums of the terms' magnitudes (conditioned()), and
# the bounds are multiplied by kappa, how much W + s B.A cancels in its rows (>= 1).
BOUNDS = {"norm": 1e-6, "scale": 1e-6, "merged": 1e-6, "y": 1e-6, "dmagnitude": 3e-6}


def conditioned(want, w, a, b, scaling, z, dy, bias, norm):
    """(the magnitudes each output's error is measured against, kappa)."""
    terms = np.abs(w) + scaling * (np.abs(b) @ np.abs(a))
    kappa = float(np.max(np.sqrt(np.square(terms).sum(axis=1)) / norm))
    scale = want["scale"]
    return {"norm": want["norm"], "scale": scale, "merged": want["merged"],
            "y": np.abs(z * scale) + (0.0 if bias is None else np.abs(bias)),
            "dmagnitude": np.abs(dy * z).sum(axis=0) / norm}, kappa


@pytest.fixture(scope="module", params=[64, 32])
def kernels(request, device):
    return run(DoraKernels.load(device, workgroup=request.param))


@pytest.fixture(scope="module")
def matmul(device):
    return run(MatmulKernels.load(device))


def random_case(rows, out_f, in_f, r):
    rng = np.random.default_rng()
    f32 = np.float32
    w = (rng.standard_normal((out_f, in_f)) * rng.uniform(0.05, 2.0)).astype(f32)
    a = (rng.standard_normal((r, in_f)) * 0.3).astype(f32)
    b = (rng.standard_normal((out_f, r)) * 0.3).astype(f32)
    m = rng.uniform(0.2, 3.0, out_f).astype(f32)
    z = rng.standard_normal((rows, out_f)).astype(f32)
    dy = rng.standard_normal((rows, out_f)).astype(f32)
    bias = rng.standard_normal(out_f).astype(f32)
    scaling = float(rng.uniform(0.25, 4.0))
    return w, a, b, m, z, dy, bias, scaling


def run_dora(device, kernels, matmul, w, a, b, m, z, dy, bias, scaling, with_bias, held=None):
    (out_f, in_f), r, rows = w.shape, a.shape[0], z.shape[0]
    up = device.buffer_from
    w_b, a_b, b_b, m_b, z_b, dy_b, bias_b = (up(t) for t in (w, a, b, m, z, dy, bias))
    adapted, norm, scale, y = (poisoned(device, n) for n in (out_f * in_f, out_f, out_f, rows * out_f))
    dmag = poisoned(device, out_f) if held is None else up(held)
    program = device.program()
    kernels.adapted_weight(program, matmul, w_b, a_b, b_b, adapted, out_f, in_f, r, scaling)
    kernels.weight_norm(program, adapted, m_b, norm, scale, out_f, in_f)
    kernels.scale_columns(program, z_b, scale, y, rows, out_f, bias=bias_b if with_bias else None)
    kernels.magnitude_grad(program, dy_b, z_b, norm, dmag, rows, out_f, accumulate=held is not None)
    kernels.scale_rows(program, scale, adapted, out_f, in_f)
    got = read(program, norm, scale, y, dmag, adapted)
    return dict(zip(("norm", "scale", "y", "dmagnitude", "merged"), got))


@pytest.mark.parametrize("rows, out_f, in_f, r", [
    (1, 1, 1, 1), (3, 7, 5, 2), (17, 64, 48, 8), (130, 96, 200, 4), (513, 33, 65, 16),
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dora_kernels_match_numpy(device, kernels, matmul, rows, out_f, in_f, r, with_bias):
    w, a, b, m, z, dy, bias, scaling = random_case(rows, out_f, in_f, r)
    got = run_dora(device, kernels, matmul, w, a, b, m, z, dy, bias, scaling, with_bias)
    w64, a64, b64, m64, z64, dy64, bias64 = (t.astype(np.float64) for t in (w, a, b, m, z, dy, bias))
    scale, norm = ref.weight_norm_scale(w64, a64, b64, scaling, m64)
    want = {"norm": norm, "scale": scale,
            "y": ref.scale_columns(z64, scale, bias64 if with_bias else None),
            "dmagnitude": ref.magnitude_grad(dy64, z64, norm),
            "merged": ref.merged_weight(w64, a64, b64, scaling, m64)}
    magnitudes, kappa = conditioned(want, w64, a64, b64, scaling, z64, dy64,
                                    bias64 if with_bias else None, norm)
    for name, bound in BOUNDS.items():
        err = conditioned_error(got[name], want[name], magnitudes[name])
        assert err <= bound * kappa, (name, err, kappa)


def conditioned_error(got, want, magnitude):
    """||got - want|| / ||magnitude|| (rel_error's, NaN poison included, rescaled)."""
    return rel_error(got, want) * np.linalg.norm(want) / np.linalg.norm(magnitude)


def test_magnitude_grad_accumulates(device, kernels, matmul):
    w, a, b, m, z, dy, bias, scaling = random_case(9, 12, 10, 3)
    held = np.random.default_rng().standard_normal(12).astype(np.float32)
    got = run_dora(device, kernels, matmul, w, a, b, m, z, dy, bias, scaling, True, held=held)
    _, norm = ref.weight_norm_scale(*(t.astype(np.float64) for t in (w, a, b)), scaling,
                                    m.astype(np.float64))
    dy64, z64 = dy.astype(np.float64), z.astype(np.float64)
    want = held + ref.magnitude_grad(dy64, z64, norm)
    magnitude = np.abs(held) + np.abs(dy64 * z64).sum(axis=0) / norm
    assert conditioned_error(got["dmagnitude"], want, magnitude) <= BOUNDS["dmagnitude"]


def test_numpy_reference_matches_torch_autograd():
    """The reference's forward and gradients are PEFT's DoRA formula through torch autograd,
    the norm detached as PEFT detaches it."""
    import torch
    rng = np.random.default_rng()
    w, a, b, m, x, dy, bias, scaling = (rng.standard_normal(s) for s in
                                        ((6, 5), (3, 5), (6, 3), (6,), (4, 5), (4, 6), (6,), ()))
    scaling = float(abs(scaling)) + 0.5
    t = {k: torch.tensor(v, requires_grad=True) for k, v in
         dict(a=a, b=b, m=m, x=x).items()}
    wt = torch.tensor(w)
    norm_t = torch.linalg.norm(wt + scaling * (t["b"] @ t["a"]), dim=1).detach()
    lora = (t["x"] @ t["a"].T) @ t["b"].T * scaling
    y_t = (t["m"] / norm_t) * (t["x"] @ wt.T + lora) + torch.tensor(bias)
    y_t.backward(torch.tensor(dy))
    scale, norm = ref.weight_norm_scale(w, a, b, scaling, m)
    z = x @ w.T + scaling * (x @ a.T) @ b.T
    assert rel_error(ref.scale_columns(z, scale, bias), y_t.detach().numpy()) < 1e-12
    assert rel_error(ref.magnitude_grad(dy, z, norm), t["m"].grad.numpy()) < 1e-12
    merged = ref.merged_weight(w, a, b, scaling, m)
    assert rel_error(x @ merged.T + bias, y_t.detach().numpy()) < 1e-12
