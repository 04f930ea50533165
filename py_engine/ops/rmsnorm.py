"""RMS normalization over the last dimension, as Llama-family decoders use it (LlamaRMSNorm).

    y = x * rstd * weight,   rstd = 1 / sqrt(mean(x^2) + eps)

There is no centering and no bias. Gemma's RMSNorm (GemmaRMSNorm) scales by (1 + weight)
instead, its weights stored as offsets from 1: `offset=1.0` below, y = x * rstd * (offset +
weight), which is what transformers computes (1.0 + weight, then the product); the weight's
gradient is the same sum either way. transformers computes the normalization in float32 and casts
back to the input dtype before the weight multiply; for float32 and float64 inputs (the only
ones here) that cast is the identity. eps comes from the model config (`rms_norm_eps`, 1e-6 for
Llama 2/3, 1e-5 for some others). The forward returns rstd per row so the backward need not
recompute it. Shapes: x [..., cols], weight [cols]; the leading dimensions are flattened into
rows.
"""

import numpy as np

from ..models.llama_config import RMS_NORM_EPS as LLAMA_EPS


def scale_of(weight, offset=0.0):
    """The factor the normalized rows are multiplied by: weight, or offset + weight (Gemma)."""
    return weight + offset if offset else weight


def rmsnorm_forward(x, weight, eps=LLAMA_EPS, offset=0.0):
    """Returns (y, rstd); rstd has x's leading shape."""
    rstd = 1.0 / np.sqrt(np.square(x).mean(axis=-1) + eps)
    y = x * rstd[..., None]
    y *= scale_of(weight, offset)
    return y, rstd


def rmsnorm_backward(dy, x, weight, rstd, offset=0.0):
    """Returns (dx, dweight) for the forward above.

    With xhat = x * rstd and g = dy * weight, per row:
        dx = rstd * (g - xhat * mean(g * xhat))
    and dweight is dy * xhat summed over every row (with g = dy * (offset + weight) for an
    offset).
    """
    dx = rmsnorm_backward_input(dy, x, weight, rstd, offset)
    cols = x.shape[-1]
    dweight = (dy * x * rstd[..., None]).reshape(-1, cols).sum(axis=0)
    return dx, dweight


def rmsnorm_backward_input(dy, x, weight, rstd, offset=0.0):
    """dx alone, for a frozen weight (LoRA training); see rmsnorm_backward."""
    xhat = x * rstd[..., None]
    dx = dy * scale_of(weight, offset)         # g, then dx in place
    mean_g_xhat = (dx * xhat).mean(axis=-1, keepdims=True)
    xhat *= mean_g_xhat
    dx -= xhat
    dx *= rstd[..., None]
    return dx
