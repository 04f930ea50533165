"""Causal self-attention with grouped-query attention (Llama-family decoders), forward and
backward: the straightforward materialized softmax the tiled GPU kernels
(shaders/causal_attention.wgsl) are checked against.

Layouts (row-major), as the projections produce them after RoPE:
  q, out, dq       [B*Tq, Hq*D]     query row i of sequence b sits at position past + i
  k, v, dk, dv     [B*Tk, Hkv*D]    Tk = past + Tq keys per sequence (a KV cache plus the new ones)
  attention_mask   [B, Tk] of 0/1 (1 = real token), or None for no padding
  lse              [B, Hq, Tq]      per-row logsumexp of the scaled, masked scores

Query head h reads KV head h // (Hq // Hkv) (transformers' repeat_kv). Query row i may see key j
iff j <= past + i and attention_mask[b, j] == 1. With right padding every row, padded query rows
included, sees key 0, so each row is a proper softmax over its visible keys: exactly what
transformers' eager attention computes with its causal + padding mask. A padded query row's
output is thus the attention over the real keys before it (finite, deterministic; the loss
ignores it). A row that sees no key at all (a sequence whose first key is padding) gets
output 0, lse 0 and no gradient; transformers would give it the uniform average instead.

    out, lse = causal_attention_forward(q, k, v, batch=B, heads=Hq, kv_heads=Hkv)
    dq, dk, dv = causal_attention_backward(dout, q, k, v, out, lse, batch=B, heads=Hq, kv_heads=Hkv)

The backward recomputes P = exp(scaling * Q.K^T - lse) on visible keys from the saved lse, as
the GPU kernels do, and uses delta = rowsum(dO * O) for dS = P * (dP - delta).
"""

import numpy as np


def _split(x, batch, heads):
    """[B*T, H*D] -> [B, H, T, D]."""
    rows, width = x.shape
    return x.reshape(batch, rows // batch, heads, width // heads).transpose(0, 2, 1, 3)


def _merge(x):
    """[B, H, T, D] -> [B*T, H*D]."""
    batch, heads, seq, dim = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch * seq, heads * dim)


def visible(batch, q_len, past=0, attention_mask=None):
    """[B, 1, Tq, Tk] bool: query i (position past + i) sees key j."""
    keys = past + q_len
    causal = np.arange(keys)[None, :] <= past + np.arange(q_len)[:, None]
    if attention_mask is None:
        keep = np.ones((batch, keys), bool)
    else:
        keep = np.asarray(attention_mask) != 0
        assert keep.shape == (batch, keys), f"attention_mask must be [B, past + Tq] = {(batch, keys)}"
    return (causal[None, :, :] & keep[:, None, :])[:, None, :, :]


def _scores(q, k, batch, heads, kv_heads, scaling):
    group = heads // kv_heads
    qh = _split(q, batch, heads)
    kh = np.repeat(_split(k, batch, kv_heads), group, axis=1)
    return (qh @ np.swapaxes(kh, -1, -2)) * scaling


def _fold_groups(x, kv_heads):
    """[B, Hq, T, D] -> [B, Hkv, T, D], summing the query heads that share a KV head."""
    batch, heads, seq, dim = x.shape
    return x.reshape(batch, kv_heads, heads // kv_heads, seq, dim).sum(axis=2)


def _check(q, k, batch, heads, kv_heads):
    assert heads % kv_heads == 0, "heads must be a multiple of kv_heads"
    assert q.shape[1] % heads == 0 and k.shape[1] == kv_heads * (q.shape[1] // heads)
    assert q.shape[0] % batch == 0 and k.shape[0] % batch == 0


def causal_attention_probs(q, k, *, batch, heads, kv_heads, attention_mask=None, scaling=None,
                           past=0):
    """Materialized probabilities [B, Hq, Tq, Tk] (0 on invisible keys) and lse [B, Hq, Tq]."""
    _check(q, k, batch, heads, kv_heads)
    scaling = (q.shape[1] // heads) ** -0.5 if scaling is None else scaling
    q_len = q.shape[0] // batch
    assert k.shape[0] // batch == past + q_len, "k and v hold past + Tq rows per sequence"
    seen = visible(batch, q_len, past, attention_mask)
    scores = np.where(seen, _scores(q, k, batch, heads, kv_heads, scaling), -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    any_seen = np.isfinite(top)
    top = np.where(any_seen, top, 0.0)
    e = np.exp(scores - top)                      # exp(-inf) = 0 on invisible keys
    total = e.sum(axis=-1, keepdims=True)
    probs = np.where(any_seen, e / np.where(any_seen, total, 1.0), 0.0)
    lse = np.where(any_seen, top + np.log(np.where(any_seen, total, 1.0)), 0.0)[..., 0]
    return probs, lse


def causal_attention_forward(q, k, v, *, batch, heads, kv_heads, attention_mask=None,
                             scaling=None, past=0):
    """Returns (out [B*Tq, Hq*D], lse [B, Hq, Tq])."""
    probs, lse = causal_attention_probs(q, k, batch=batch, heads=heads, kv_heads=kv_heads,
                                        attention_mask=attention_mask, scaling=scaling, past=past)
    vh = np.repeat(_split(v, batch, kv_heads), heads // kv_heads, axis=1)
    return _merge(probs @ vh), lse


def causal_attention_backward(dout, q, k, v, out, lse, *, batch, heads, kv_heads,
                              attention_mask=None, scaling=None, past=0):
    """Gradients of causal_attention_forward from its saved out and lse: (dq, dk, dv)."""
    _check(q, k, batch, heads, kv_heads)
    scaling = (q.shape[1] // heads) ** -0.5 if scaling is None else scaling
    q_len = q.shape[0] // batch
    group = heads // kv_heads
    seen = visible(batch, q_len, past, attention_mask)
    scores = _scores(q, k, batch, heads, kv_heads, scaling)
    probs = np.where(seen, np.exp(np.where(seen, scores, 0.0) - lse[..., None]), 0.0)
    do = _split(dout, batch, heads)
    delta = np.sum(do * _split(out, batch, heads), axis=-1, keepdims=True)   # rowsum(dO * O)
    kh = np.repeat(_split(k, batch, kv_heads), group, axis=1)
    vh = np.repeat(_split(v, batch, kv_heads), group, axis=1)
    dprobs = do @ np.swapaxes(vh, -1, -2)
    dscores = probs * (dprobs - delta)
    dq = _merge(dscores @ kh) * scaling
    dk = _merge(_fold_groups(np.swapaxes(dscores, -1, -2) @ _split(q, batch, heads), kv_heads)) * scaling
    dv = _merge(_fold_groups(np.swapaxes(probs, -1, -2) @ do, kv_heads))
    return dq, dk, dv
