"""DoRA (weight-decomposed LoRA) on a linear layer, as PEFT's DoraLinearLayer computes it:

    y = scale * (x . W^T + scaling * (x . A^T) . B^T) + b,    scale = m / ||W + scaling * B.A||

per output feature: m = lora_magnitude_vector [out] is trained, and the norm of each row of
the adapted weight is a constant of the step (PEFT detaches it, after the DoRA paper, section
4.3), so no gradient flows through it. With LoRA dropout in training PEFT applies the scale to
the dropped input's path only: y = x . W^T + b + (scale - 1) * (xd . W^T) + scale * scaling *
(xd . A^T) . B^T, which is the formula above when xd is x.

The model code (models/lora.py) composes these with the LoRA linear's own ops:

    scale, norm = weight_norm_scale(w, lora_a, lora_b, scaling, magnitude)
    z, h = lora_linear_forward(xd, xd, w, None, lora_a, lora_b, scaling)   # xd W^T + LoRA
    y = scale_columns(z, scale, b)
    d_magnitude = magnitude_grad(dy, z, norm)        # the LoRA gradients take scale_columns(dy, scale)

merged_weight is the weight inference and the exports use, PEFT's merge: scale * (W + s B.A).
"""

import numpy as np

from .lora_linear import merged_weight as adapted_weight     # W + scaling * B.A


def weight_norm_scale(w, lora_a, lora_b, scaling, magnitude):
    """(scale [out], norm [out]): each row's Euclidean norm of W + scaling * B.A, and m / norm."""
    norm = _row_norms(adapted_weight(w, lora_a, lora_b, scaling))
    return magnitude / norm, norm


def scale_columns(z, scale, bias=None):
    """z [rows, out] times scale [out] per column, plus bias [out] when given."""
    y = z * scale
    return y if bias is None else y + bias


def magnitude_grad(dy, z, norm):
    """The magnitude's gradient: sum over rows of dy * z, over the (constant) norm."""
    return (dy * z).sum(axis=0) / norm


def merged_weight(w, lora_a, lora_b, scaling, magnitude):
    """scale * (W + scaling * B.A), row by row: the layer with its adapter folded in."""
    merged = adapted_weight(w, lora_a, lora_b, scaling)
    return merged * (magnitude / _row_norms(merged))[:, None]


def _row_norms(v):
    return np.sqrt(np.square(v).sum(axis=1))
