"""AdamW as torch.optim.AdamW computes it (torch 2.x, single-tensor path, amsgrad off).

Per step t (1-based), with g = grad * grad_scale (grad_scale carries gradient clipping):

    param *= 1 - lr * weight_decay                       (decoupled weight decay, first)
    m      = lerp(m, g, 1 - beta1)                       (torch's lerp_, see _lerp)
    v      = v * beta2 + (1 - beta2) * g * g
    step_size = lr / (1 - beta1^t)
    denom  = sqrt(v) / sqrt(1 - beta2^t) + eps           (eps outside the square root)
    param -= step_size * m / denom

The bias corrections are computed once per step in float64, as torch does with Python floats.
"""

import math

import numpy as np


def adamw_coefficients(lr, beta1, beta2, eps, weight_decay, step):
    """The per-step scalars of the update, in float64 (shared by the NumPy and GPU paths)."""
    if step < 1:
        raise ValueError(f"AdamW steps count from 1, got {step}")
    return {
        "step_size": lr / (1.0 - beta1 ** step),
        "bias_correction2_sqrt": math.sqrt(1.0 - beta2 ** step),
        "decay": 1.0 - lr * weight_decay,
        "eps": eps,
        "one_minus_beta1": 1.0 - beta1,
        "beta2": beta2,
        "one_minus_beta2": 1.0 - beta2,
    }


def _lerp(start, end, weight):
    """torch.lerp's formula: from the nearer end, so weight 0 gives start and 1 gives end."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, grad_scale=1.0):
    """One update; returns new (param, m, v) and leaves the inputs untouched."""
    k = adamw_coefficients(lr, beta1, beta2, eps, weight_decay, step)
    g = grad * grad_scale
    param = param * k["decay"]
    m = _lerp(m, g, k["one_minus_beta1"])
    v = v * k["beta2"] + k["one_minus_beta2"] * g * g
    denom = np.sqrt(v) / k["bias_correction2_sqrt"] + k["eps"]
    param = param - k["step_size"] * m / denom
    return param, m, v
