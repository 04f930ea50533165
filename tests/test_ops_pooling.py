"""The NumPy pooling and tanh references against torch autograd (float64)."""

import numpy as np
import torch

from py_engine.ops import pooling

BATCH, SEQ, HIDDEN = 3, 5, 4
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])


def test_cls_pool_matches_torch(rng):
    x = rng.standard_normal((BATCH * SEQ, HIDDEN))
    dout = rng.standard_normal((BATCH, HIDDEN))
    tx = torch.tensor(x, requires_grad=True)
    out = tx.view(BATCH, SEQ, HIDDEN)[:, 0]
    out.backward(torch.tensor(dout))
    np.testing.assert_array_equal(pooling.cls_pool(x, BATCH), out.detach().numpy())
    np.testing.assert_array_equal(pooling.cls_pool_backward(dout, SEQ), tx.grad.numpy())


def test_mean_pool_matches_sentence_transformers_formula(rng):
    x = rng.standard_normal((BATCH * SEQ, HIDDEN))
    dout = rng.standard_normal((BATCH, HIDDEN))
    tx = torch.tensor(x, requires_grad=True)
    # sentence_transformers.models.Pooling, pooling_mode_mean_tokens:
    tokens = tx.view(BATCH, SEQ, HIDDEN)
    mask = torch.tensor(MASK).unsqueeze(-1).expand(tokens.size()).to(tokens.dtype)
    out = (tokens * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
    out.backward(torch.tensor(dout))
    np.testing.assert_allclose(pooling.mean_pool(x, MASK), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(pooling.mean_pool_backward(dout, MASK), tx.grad.numpy(), rtol=1e-12)
    assert np.all(pooling.mean_pool(x, MASK)[2] == 0)        # no tokens: 0, not NaN


def test_tanh_matches_torch(rng):
    x = np.concatenate([rng.standard_normal(20) * 3, [0.0, 1e-9, -50.0, 50.0]])
    dy = rng.standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tanh(tx)
    ty.backward(torch.tensor(dy))
    y = pooling.tanh_forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14)
    # dy (1 - y^2) cancels for |x| past ~4 (1 - y^2 = 8e-6 at x = 6.6), where torch's tanh and
    # NumPy's differ by an ulp of y: the slack is 4 ulps of the terms |dy| (1 + y^2) (measured
    # 1.2) rather than a fixed atol of 1e-15, which |dy| ~ 3 there brought to 0.975.
    slack = 4 * np.finfo(np.float64).eps * np.abs(dy) * (1 + y * y)
    dx, want = pooling.tanh_backward(y, dy), tx.grad.numpy()
    assert np.all(np.abs(dx - want) <= 1e-12 * np.abs(want) + slack)
