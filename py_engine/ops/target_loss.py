"""Losses against a float target per logit: a multi-label classifier's and a regression head's,
with transformers' sequence classifiers' means (their problem_type):

    "bce" (multi_label_classification): torch.nn.BCEWithLogitsLoss()(logits, targets)
        term(z, y) = max(z, 0) - z * y + log(1 + exp(-|z|))      d/dz = sigmoid(z) - y
    "mse" (regression): torch.nn.MSELoss()(logits, targets) (a head of one row: its squeeze)
        term(z, y) = (z - y)^2                                    d/dz = 2 * (z - y)

    loss = sum of the counted terms / D,  D = the number of counted logits

Targets arrive as the labels buffer's u32 words (py_engine/labels.py: float_words): each the
bits of an f32 target, or IGNORE_LABEL where the position is not counted (a padded row). Where
torch returns NaN (nothing counted, D = 0) these return a loss and gradient of 0, as
cross_entropy.py does. `correct` counts the rows whose every counted logit is on its target's
side (z > 0 exactly where y > 0.5: a multi-label row predicted whole); a regression row is
never "correct". `counted` counts the rows with a counted logit.
"""

import numpy as np

from ..labels import IGNORE_LABEL, TARGET_LOSSES

KINDS = tuple(TARGET_LOSSES.values())     # "bce", "mse"


def _prepare(logits, words, kind):
    if kind not in KINDS:
        raise ValueError(f"unknown target loss {kind!r}; choose one of {', '.join(KINDS)}")
    words = np.asarray(words).astype(np.uint32).reshape(logits.shape)
    counted = words != IGNORE_LABEL
    targets = np.where(counted, words.view(np.float32), 0.0).astype(logits.dtype)
    return targets, counted


def target_loss_forward(logits, words, kind):
    """Returns (loss, correct, counted_rows, denominator): the mean loss, a per-row bool (see
    above), a per-row bool for rows counted, and D the backward needs."""
    targets, counted = _prepare(logits, words, kind)
    z = logits
    if kind == "bce":
        terms = np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))
    else:
        terms = (z - targets) ** 2
    denominator = int(counted.sum())
    total = np.where(counted, terms, 0.0).sum()
    loss = total / denominator if denominator else 0.0 * total
    rows = counted.any(axis=1)
    if kind == "bce":
        right = ((z > 0) == (targets > 0.5)) | ~counted
        correct = rows & right.all(axis=1)
    else:
        correct = np.zeros(len(z), bool)
    return loss, correct, rows, denominator


def sigmoid_minus(z, y):
    """sigmoid(z) - y from e = exp(-|z|), which never overflows; for z >= 0 as
    (1 - y) - e / (1 + e), so that a confident logit on a target of 1 keeps its small gradient
    (1 / (1 + e) - 1 would cancel in float32)."""
    e = np.exp(-np.abs(z))
    tail = e / (1.0 + e)
    return np.where(z >= 0, (1.0 - y) - tail, tail - y)


def target_loss_backward(logits, words, denominator, kind, dloss=1.0):
    """Returns dlogits for upstream gradient `dloss` of the mean loss."""
    targets, counted = _prepare(logits, words, kind)
    if denominator == 0:
        return np.zeros_like(logits)
    if kind == "bce":
        grad = sigmoid_minus(logits, targets)
    else:
        grad = 2.0 * (logits - targets)
    return np.where(counted, grad, 0.0).astype(logits.dtype) * (dloss / denominator)
