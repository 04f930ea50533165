"""Gradient norm and clipping reference (py_engine.ops.grad_norm) against
torch.nn.utils.clip_grad_norm_ in float64."""

import numpy as np
import pytest
import torch

from py_engine.ops.grad_norm import clip_grad_norm, clip_scale


@pytest.mark.parametrize("max_norm", [0.5, 1.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng()
    grads = [rng.standard_normal(s) * 0.3 for s in ((5, 7), (13,), (2, 3, 4))]
    params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g)
    t_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm, scale, clipped = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(t_norm.item(), rel=1e-14)
    for c, p in zip(clipped, params):
        np.testing.assert_allclose(c, p.grad.numpy(), rtol=1e-14)
    assert scale == min(1.0, max_norm / (norm + 1e-6))


def test_no_max_norm_means_no_clipping():
    assert clip_scale(123.0, None) == 1.0
    norm, scale, clipped = clip_grad_norm([np.full(4, 10.0)], None)
    assert norm == 20.0 and scale == 1.0 and (clipped[0] == 10.0).all()
