"""Layer normalization over the last dimension, as BERT uses it (eps 1e-12).

    y = (x - mean) * rstd * gamma + beta,   rstd = 1 / sqrt(var + eps)

`var` is the biased variance (divided by cols), as torch.nn.LayerNorm computes it. The forward
returns mean and rstd per row so the backward need not recompute them. Shapes: x [..., cols],
gamma and beta [cols]; the leading dimensions are flattened into rows.
"""

import numpy as np

BERT_EPS = 1e-12


def layernorm_forward(x, gamma, beta, eps=BERT_EPS):
    """Returns (y, mean, rstd); mean and rstd have x's leading shape."""
    mean = x.mean(axis=-1)
    y = x - mean[..., None]                    # centered, then normalized in place
    # Two passes (mean, then squared deviations): no cancellation for rows with a large mean.
    var = np.square(y).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y *= rstd[..., None]
    y *= gamma
    y += beta
    return y, mean, rstd


def layernorm_backward(dy, x, gamma, mean, rstd):
    """Returns (dx, dgamma, dbeta) for the forward above.

    With xhat = (x - mean) * rstd and g = dy * gamma, per row:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    and dgamma, dbeta are dy * xhat and dy summed over every row.
    """
    dx = layernorm_backward_input(dy, x, gamma, mean, rstd)
    cols = x.shape[-1]
    xhat = (x - mean[..., None]) * rstd[..., None]
    dgamma = (dy * xhat).reshape(-1, cols).sum(axis=0)
    dbeta = dy.reshape(-1, cols).sum(axis=0)
    return dx, dgamma, dbeta


def layernorm_backward_input(dy, x, gamma, mean, rstd):
    """dx alone, for frozen gamma and beta (see layernorm_backward)."""
    xhat = x - mean[..., None]
    xhat *= rstd[..., None]
    dx = dy * gamma                            # g, then dx in place
    g_xhat = dx * xhat
    mean_g_xhat = g_xhat.mean(axis=-1, keepdims=True)
    dx -= dx.mean(axis=-1, keepdims=True)
    np.multiply(xhat, mean_g_xhat, out=g_xhat)
    dx -= g_xhat
    dx *= rstd[..., None]
    return dx
