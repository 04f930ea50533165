"""Global gradient norm and clipping as torch.nn.utils.clip_grad_norm_(max_norm) does it.

    norm  = sqrt(sum over every grad tensor of sum(g^2))         (the L2 norm of all grads)
    scale = min(1, max_norm / (norm + 1e-6))                     (torch's clip coefficient)
    g    *= scale

torch multiplies the grads in place; the engine instead hands `scale` to AdamW, which multiplies
it into each gradient as it reads it (the same product). No max_norm (None) means no clipping:
scale is 1 and the norm is still reported.
"""

import numpy as np

CLIP_EPS = 1e-6   # torch.nn.utils.clip_grad._clip_grads_with_norm_: max_norm / (norm + 1e-6)


def global_grad_norm(grads):
    """L2 norm of the concatenation of every array in `grads`."""
    return float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads)))


def clip_scale(norm, max_norm):
    """The factor torch multiplies every grad by; 1 when max_norm is None."""
    if max_norm is None:
        return 1.0
    return min(1.0, max_norm / (norm + CLIP_EPS))


def clip_grad_norm(grads, max_norm):
    """Returns (norm, scale, clipped grads)."""
    norm = global_grad_norm(grads)
    scale = clip_scale(norm, max_norm)
    return norm, scale, [g * scale for g in grads]
