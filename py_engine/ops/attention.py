"""Bidirectional (BERT encoder) multi-head attention, forward and backward, in pieces that the
GPU recorder mirrors one for one.

Activations stay as the Q/K/V linears produce them: [B*T, H*D] row-major, i.e. [B, T, H, D].
Scores and probabilities are [B, H, T, T]. attention_mask is [B, T] of 0/1 (1 = real token).

    ctx, probs = attention_forward(q, k, v, attention_mask, heads)
    dq, dk, dv = attention_backward(dctx, q, k, v, probs, heads)

The masking follows transformers' eager BERT attention: probabilities come from
softmax(scaling * Q.K^T + bias) with bias 0 for real keys and finfo(dtype).min for padded
keys, so padded keys get probability 0 and a row whose keys are all padded is uniform.
Dropout on the probabilities goes between masked_softmax and attention_context (forward) and
between grad_probs and masked_softmax_backward (backward); the pieces take whichever
probabilities were used.

The same pieces serve T5's attention (models/t5.py): `scaling` 1 (T5 does not scale), an
additive `bias` [H, Tq, Tk] on the scores shared by the batch (the relative position bias),
queries and keys of different lengths (cross attention: q [B*Tq, H*D], k and v [B*Tk, H*D], the
mask [B, Tk] over the keys), and `causal` (query i, the last of Tq after Tk - Tq cached ones,
sees keys up to Tk - Tq + i). T5's bias is gathered from a table [R, H] by a bucket per
position; bucketed_bias_backward gives that table's gradient from the score gradient (full
fine-tuning).
"""

import numpy as np


def split_heads(x, batch, heads):
    """[B*T, H*D] -> [B, H, T, D]."""
    rows, width = x.shape
    return x.reshape(batch, rows // batch, heads, width // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[B, H, T, D] -> [B*T, H*D]."""
    batch, heads, seq, dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch * seq, heads * dim)


def _merged_product(a, b):
    """a @ b per (batch, head), [B, H, T, D], written straight into the merged [B*T, H*D]
    layout through a transposed view (no copy to merge the heads)."""
    batch, heads, seq, dim = a.shape[0], a.shape[1], a.shape[2], b.shape[3]
    out = np.empty((batch, seq, heads, dim), np.result_type(a, b))
    np.matmul(a, b, out=out.transpose(0, 2, 1, 3))
    return out.reshape(batch * seq, heads * dim)


def default_scaling(q, heads):
    return (q.shape[1] // heads) ** -0.5


def mask_bias(attention_mask, dtype):
    """[B, T] of 0/1 -> additive [B, 1, 1, T]: 0 for real keys, finfo(dtype).min for padded."""
    keep = np.asarray(attention_mask) != 0
    bias = np.where(keep, 0.0, np.finfo(dtype).min).astype(dtype)
    return bias[:, None, None, :]


def attention_scores(q, k, batch, heads, scaling):
    """scaling * Q . K^T per (batch, head): [B, H, T, T]."""
    scores = split_heads(q, batch, heads) @ np.swapaxes(split_heads(k, batch, heads), -1, -2)
    scores *= scaling
    return scores


def causal_ahead(queries, keys):
    """[Tq, Tk] True where key j is after query i (at position keys - queries + i)."""
    return np.arange(keys)[None, :] > np.arange(keys - queries, keys)[:, None]


def add_score_bias(scores, bias=None, causal=False):
    """scores [B, H, Tq, Tk] plus the shared bias [H, Tq, Tk], and finfo.min on the keys after
    each query when `causal` (set rather than added: with a padding mask's finfo.min too the
    sum would overflow to -inf), in place."""
    if bias is not None:
        scores += bias
    if causal:
        scores[..., causal_ahead(scores.shape[-2], scores.shape[-1])] = np.finfo(scores.dtype).min
    return scores


def masked_softmax(scores, attention_mask):
    """softmax over the last axis of scores + mask_bias (attention_mask None: no padding)."""
    if attention_mask is None or np.all(np.asarray(attention_mask) != 0):
        e = scores - scores.max(axis=-1, keepdims=True)   # the bias is all zeros: skip it
    else:
        e = scores + mask_bias(attention_mask, scores.dtype)
        e -= e.max(axis=-1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def masked_softmax_backward(probs, dprobs):
    """dS = P * (dP - rowsum(dP * P)); masked keys (P = 0) get 0."""
    ds = dprobs * probs
    np.subtract(dprobs, ds.sum(axis=-1, keepdims=True), out=ds)
    ds *= probs
    return ds


def bucketed_bias_backward(dscores, buckets, table_rows):
    """The gradient of the table [table_rows, H] a score bias was gathered from
    (bias[h, i, j] = table[buckets[i * Tk + j], h], shared by the batch): dtable[r, h] = the sum
    of dscores [B, H, Tq, Tk] over the batch and the positions whose bucket is r."""
    B, H, Tq, Tk = dscores.shape
    summed = dscores.sum(axis=0).reshape(H, Tq * Tk)
    out = np.zeros((table_rows, H), dscores.dtype)
    np.add.at(out, np.asarray(buckets, np.int64), summed.T)
    return out


def attention_context(probs, v, heads):
    """P . V per (batch, head), back in [B*T, H*D]."""
    return _merged_product(probs, split_heads(v, probs.shape[0], heads))


def attention_forward(q, k, v, attention_mask, heads, scaling=None):
    """Returns (context [B*T, H*D], probs [B, H, T, T])."""
    scaling = default_scaling(q, heads) if scaling is None else scaling
    batch = np.asarray(attention_mask).shape[0]
    probs = masked_softmax(attention_scores(q, k, batch, heads, scaling), attention_mask)
    return attention_context(probs, v, heads), probs


def grad_probs(dctx, v, batch, heads):
    """dP = dC . V^T per (batch, head): [B, H, T, T]."""
    return split_heads(dctx, batch, heads) @ np.swapaxes(split_heads(v, batch, heads), -1, -2)


def grad_values(probs, dctx, heads):
    """dV = P^T . dC per (batch, head), in [B*T, H*D]."""
    batch = probs.shape[0]
    return _merged_product(np.swapaxes(probs, -1, -2), split_heads(dctx, batch, heads))


def grad_queries(dscores, k, heads, scaling):
    """dQ = scaling * dS . K, in [B*T, H*D]."""
    dq = _merged_product(dscores, split_heads(k, dscores.shape[0], heads))
    dq *= scaling
    return dq


def grad_keys(dscores, q, heads, scaling):
    """dK = scaling * dS^T . Q, in [B*T, H*D]."""
    dk = _merged_product(np.swapaxes(dscores, -1, -2), split_heads(q, dscores.shape[0], heads))
    dk *= scaling
    return dk


def attention_backward(dctx, q, k, v, probs, heads, scaling=None):
    """Gradients of attention_forward (no dropout) given its saved probs: (dq, dk, dv)."""
    scaling = default_scaling(q, heads) if scaling is None else scaling
    dv = grad_values(probs, dctx, heads)
    dscores = masked_softmax_backward(probs, grad_probs(dctx, v, probs.shape[0], heads))
    return grad_queries(dscores, k, heads, scaling), grad_keys(dscores, q, heads, scaling), dv

