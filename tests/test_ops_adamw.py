"""AdamW reference (py_engine.ops.adamw) against torch.optim.AdamW in float64, over several
steps with a changing learning rate and a gradient scale (how clipping reaches the update)."""

import numpy as np
import pytest
import torch

from py_engine.ops.adamw import adamw_coefficients, adamw_step


@pytest.mark.parametrize("weight_decay, betas, eps", [
    (0.01, (0.9, 0.999), 1e-8), (0.0, (0.8, 0.99), 1e-6), (0.1, (0.5, 0.9), 1e-3),
])
def test_adamw_matches_torch_over_steps(weight_decay, betas, eps):
    rng = np.random.default_rng()
    n = 257
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) * 10 ** rng.uniform(-4, 1) for _ in range(5)]
    lrs = [1e-3, 2e-3, 5e-4, 1e-2, 3e-4]
    scales = [1.0, 0.5, 1.0, 0.01, 0.9]

    tp = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.AdamW([tp], lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay)
    param, m, v = p0, np.zeros(n), np.zeros(n)
    m_operands = 0.0
    for t, (g, lr, scale) in enumerate(zip(grads, lrs, scales), start=1):
        for group in opt.param_groups:
            group["lr"] = lr
        tp.grad = torch.tensor(g) * scale     # clip_grad_norm_ multiplies grads in place
        opt.step()
        param, m, v = adamw_step(param, g, m, v, lr, *betas, eps, weight_decay, t, grad_scale=scale)
        state = opt.state[tp]
        # Absolute floors at the operands' scale (|param| ~ 1, |g|, g^2): an element that an
        # update brings near zero is a difference of such numbers. m carries the rounding of
        # the earlier steps' sums too, decayed by beta1 per step: its floor is at the largest of
        # its terms beta1^(t-k) |g_k scale_k|, not at this step's gradient alone (a step with a
        # gradient 1e-4 of an earlier one left an element that had cancelled before out of a
        # floor at this step's scale).
        gmax = np.abs(g * scale).max()
        m_operands = max(betas[0] * m_operands, gmax)
        np.testing.assert_allclose(param, tp.detach().numpy(), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(m, state["exp_avg"].numpy(), rtol=1e-13, atol=1e-13 * m_operands)
        np.testing.assert_allclose(v, state["exp_avg_sq"].numpy(), rtol=1e-13, atol=1e-13 * gmax**2)


def test_coefficients():
    k = adamw_coefficients(1e-3, 0.9, 0.999, 1e-8, 0.01, 1)
    assert k["step_size"] == pytest.approx(1e-2) and k["decay"] == 1 - 1e-5
    assert k["bias_correction2_sqrt"] == pytest.approx(np.sqrt(1e-3))
    with pytest.raises(ValueError):
        adamw_coefficients(1e-3, 0.9, 0.999, 1e-8, 0.01, 0)
