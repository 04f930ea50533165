"""Softmax cross-entropy for classification, with torch.nn.functional.cross_entropy's mean.

For logits [B, C], integer labels [B], optional class weights w [C] (else all ones) and label
smoothing s in [0, 1), torch defines, over the rows whose label is not `ignore_index`:

    logp   = log_softmax(logits)
    nll_i  = -logp[i, y_i]
    smooth_i = -sum_c w_c * logp[i, c]
    D      = sum_i w[y_i]                                   (the weighted-mean denominator)
    loss   = ((1 - s) * sum_i w[y_i] * nll_i + (s / C) * sum_i smooth_i) / D

so smoothing spreads the label's mass uniformly but each class keeps its own weight, and both
terms share the denominator D of the unsmoothed weighted mean. Without weights D is the number of
rows counted. The gradient, per counted row i and class j, with p = softmax(logits[i]) and
W = sum_c w_c:

    dlogits[i, j] = (p_j * ((1 - s) * w[y_i] + (s / C) * W) - (1 - s) * w[y_i] * [j == y_i]
                     - (s / C) * w_j) / D

Ignored rows give zero gradient and do not count. Where torch returns NaN (every row ignored,
D = 0) these functions return a loss and gradient of 0, so a fully padded batch cannot poison the
weights. Accuracy counts rows whose first argmax equals the label.
"""

import numpy as np

from ..labels import IGNORE_LABEL as IGNORE   # marks a padded row (u32 all ones on the GPU)


def _prepare(logits, labels, weights, ignore_index):
    rows, classes = logits.shape
    labels = np.asarray(labels).astype(np.int64).reshape(rows)
    counted = labels != ignore_index
    if np.any((labels[counted] < 0) | (labels[counted] >= classes)):
        raise ValueError(f"labels must lie in [0, {classes}) or equal ignore_index={ignore_index}")
    safe = np.where(counted, labels, 0)
    w = np.ones(classes, logits.dtype) if weights is None else np.asarray(weights, logits.dtype)
    w_label = np.where(counted, w[safe], 0.0)
    return safe, counted, w, w_label


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy_forward(logits, labels, weights=None, label_smoothing=0.0, ignore_index=IGNORE):
    """Returns (loss, correct, weight_sum): the mean loss, a per-row bool for argmax == label
    (False on ignored rows) and the denominator D the backward needs."""
    rows, classes = logits.shape
    safe, counted, w, w_label = _prepare(logits, labels, weights, ignore_index)
    logp = _log_softmax(logits)
    nll = -logp[np.arange(rows), safe]
    smooth = -(logp * w).sum(axis=1)
    s = label_smoothing
    total = ((1.0 - s) * w_label * nll + np.where(counted, (s / classes) * smooth, 0.0)).sum()
    weight_sum = w_label.sum()
    loss = total / weight_sum if weight_sum != 0 else 0.0 * total
    correct = counted & (logits.argmax(axis=1) == safe)
    return loss, correct, weight_sum


def cross_entropy_backward(logits, labels, weight_sum, weights=None, label_smoothing=0.0,
                           ignore_index=IGNORE, dloss=1.0):
    """Returns dlogits for upstream gradient `dloss` of the mean loss."""
    rows, classes = logits.shape
    safe, counted, w, w_label = _prepare(logits, labels, weights, ignore_index)
    if weight_sum == 0:
        return np.zeros_like(logits)
    p = np.exp(_log_softmax(logits))
    s = label_smoothing
    on_label = (1.0 - s) * w_label
    grad = p * (on_label + (s / classes) * w.sum())[:, None] - (s / classes) * w
    grad[np.arange(rows), safe] -= on_label
    grad[~counted] = 0.0
    return grad * (dloss / weight_sum)
