"""The NumPy matmul reference against torch autograd in float64."""

import numpy as np
import pytest
import torch

from py_engine.ops.matmul import gemm, linear_backward, linear_forward, round_to_half


def t64(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_gemm_matches_torch(rng, trans_a, trans_b):
    m, n, k = 5, 7, 3
    a = rng.standard_normal((2, k, m) if trans_a else (2, m, k))
    b = rng.standard_normal((2, n, k) if trans_b else (2, k, n))
    c = rng.standard_normal((2, m, n))
    bias = rng.standard_normal(n)
    op_a = t64(a).transpose(-1, -2) if trans_a else t64(a)
    op_b = t64(b).transpose(-1, -2) if trans_b else t64(b)
    ref = 0.5 * (op_a @ op_b) + t64(bias) + 2.0 * t64(c)
    out = gemm(a, b, c, trans_a, trans_b, alpha=0.5, beta=2.0, bias=bias)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-12)


def test_gemm_with_beta_zero_ignores_c(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    out = gemm(a, b, np.full((3, 2), np.nan))
    np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_linear_matches_torch_autograd(rng):
    x, w, b = rng.standard_normal((6, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    dy = rng.standard_normal((6, 3))
    tx, tw, tb = t64(x, True), t64(w, True), t64(b, True)
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(t64(dy))
    # To rtol of the size of the terms |x| |w|^T + |b|: an element whose terms nearly cancel
    # keeps their rounding, not rtol of its own small value.
    terms = np.abs(x) @ np.abs(w).T + np.abs(b)
    assert np.max(np.abs(linear_forward(x, w, b) - ty.detach().numpy()) / terms) <= 1e-12
    dx, dw, db = linear_backward(dy, x, w)
    for ours, theirs in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_round_to_half_is_float16_rounding(rng):
    """The weights the f16 kernels get are f32 values. torch converts a double to half through
    float, two roundings: a double within half an f32 ulp of a midpoint between two halves
    lands on the midpoint and then ties to even, where one rounding may go the other way (about
    1 element in 16,000 of standard normal doubles). For f32 values torch's conversion is one
    rounding, so they are drawn as f32; exact midpoints check the ties go to even."""
    w = (rng.standard_normal(5000) * 10).astype(np.float32).astype(np.float64)
    ties = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, -2.8916015625, 2.8935546875])
    np.testing.assert_array_equal(round_to_half(ties), [1.0, 1 + 2.0 ** -9, -2.890625, 2.89453125])
    w = np.concatenate([w, ties])
    np.testing.assert_array_equal(round_to_half(w), torch.tensor(w).half().double().numpy())
