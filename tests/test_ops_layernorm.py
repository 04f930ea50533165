"""LayerNorm reference (py_engine.ops.layernorm) against torch autograd in float64."""

import numpy as np
import pytest
import torch

from py_engine.ops.layernorm import BERT_EPS, layernorm_backward, layernorm_forward


@pytest.mark.parametrize("shape, offset, eps", [
    ((1, 1), 0.0, BERT_EPS), ((7, 33), 0.0, BERT_EPS), ((2, 5, 384), 3.0, BERT_EPS),
    ((4, 16), 0.0, 1e-5),
])
def test_layernorm_matches_torch(shape, offset, eps):
    rng = np.random.default_rng()
    cols = shape[-1]
    x = rng.standard_normal(shape) + offset
    gamma = rng.standard_normal(cols)
    beta = rng.standard_normal(cols)
    dy = rng.standard_normal(shape)

    y, mean, rstd = layernorm_forward(x, gamma, beta, eps)
    dx, dgamma, dbeta = layernorm_backward(dy, x, gamma, mean, rstd)

    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ty = torch.nn.functional.layer_norm(tx, (cols,), tg, tb, eps)
    ty.backward(torch.tensor(dy))
    # One column: xhat is exactly 0 here; torch leaves rounding noise times rstd (1e6) in it.
    atol = 1e-8 if cols == 1 else 1e-10
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=atol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=10 * atol)
    np.testing.assert_allclose(dgamma, tg.grad.numpy(), rtol=1e-10, atol=atol)
    np.testing.assert_allclose(dbeta, tb.grad.numpy(), rtol=1e-10, atol=atol)
    np.testing.assert_allclose(mean, x.mean(-1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(-1) + eps), rtol=1e-10)
