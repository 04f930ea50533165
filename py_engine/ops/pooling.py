"""Sequence pooling for classification heads, and the head's activations (BERT's pooler's
tanh, DistilBERT's pre_classifier's ReLU).

x is the encoder output [B*T, hidden] (row-major [B, T, hidden]); attention_mask is [B, T] 0/1.

    pooled = cls_pool(x, batch)                     # BERT's pooler input: the [CLS] rows
    pooled = mean_pool(x, attention_mask)           # sentence-transformers' mean pooling
    y = tanh_forward(h); dh = tanh_backward(y, dy)  # the pooler dense's activation
    y = relu_forward(h); dh = relu_backward(y, dy)  # DistilBERT's pre_classifier's
"""

import numpy as np

MIN_TOKENS = 1e-9  # sentence-transformers clamps the token count to this


def cls_pool(x, batch):
    """Row 0 of each sequence: [B, hidden]."""
    return x.reshape(batch, -1, x.shape[1])[:, 0]


def cls_pool_backward(dout, seq):
    """dx [B*T, hidden]: dout in each [CLS] row, 0 elsewhere."""
    batch, hidden = dout.shape
    dx = np.zeros((batch, seq, hidden), dout.dtype)
    dx[:, 0] = dout
    return dx.reshape(batch * seq, hidden)


def _token_counts(attention_mask, dtype):
    mask = (np.asarray(attention_mask) != 0).astype(dtype)
    return mask, np.maximum(mask.sum(axis=1, keepdims=True), MIN_TOKENS)


def mean_pool(x, attention_mask):
    """Mean of the unmasked rows of each sequence: [B, hidden] (0 for a sequence with none)."""
    mask, counts = _token_counts(attention_mask, x.dtype)
    batch, seq = mask.shape
    total = (x.reshape(batch, seq, -1) * mask[:, :, None]).sum(axis=1)
    return total / counts


def mean_pool_backward(dout, attention_mask):
    """dx [B*T, hidden] = mask[b, t] * dout[b] / count_b."""
    mask, counts = _token_counts(attention_mask, dout.dtype)
    batch, seq = mask.shape
    dx = mask[:, :, None] * (dout / counts)[:, None, :]
    return dx.reshape(batch * seq, -1)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(y, dy):
    """dx = dy * (1 - y^2) from the saved output y = tanh(x)."""
    return dy * (1.0 - y * y)


def relu_forward(x):
    return np.maximum(x, 0.0)


def relu_backward(y, dy):
    """dx = dy where the saved output y = relu(x) is positive, else 0 (torch's ReLU: no
    gradient at 0)."""
    return dy * (y > 0.0)
