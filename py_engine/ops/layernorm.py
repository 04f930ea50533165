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
    centered = x - mean[..., None]
    # Two passes (mean, then squared deviations): no cancellation for rows with a large mean.
    var = (centered * centered).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = centered * rstd[..., None] * gamma + beta
    return y, mean, rstd


def layernorm_backward(dy, x, gamma, mean, rstd):
    """Returns (dx, dgamma, dbeta) for the forward above.

    With xhat = (x - mean) * rstd and g = dy * gamma, per row:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    and dgamma, dbeta are dy * xhat and dy summed over every row.
    """
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy * gamma
    dx = rstd[..., None] * (
        g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)
    )
    cols = x.shape[-1]
    dgamma = (dy * xhat).reshape(-1, cols).sum(axis=0)
    dbeta = dy.reshape(-1, cols).sum(axis=0)
    return dx, dgamma, dbeta
