"""Causal self-attention with grouped-query attention (Llama-family decoders), forward and
backward: the straightforward materialized softmax the tiled GPU kernels
(shaders/causal_attention.wgsl) are checked against.

Layouts (row-major), as the projections produce them after RoPE:
  q, out, dq       [B*Tq, Hq*D]     query row i of sequence b sits at position past + i
  k, v, dk, dv     [B*Tk, Hkv*D]    Tk = past + Tq keys per sequence (a KV cache plus the new ones)
  attention_mask   [B, Tk] of 0/1 (1 = real token), or None for no padding
  lse              [B, Hq, Tq]      per-row logsumexp of the scaled, masked scores

Query head h reads KV head h // (Hq // Hkv) (transformers' repeat_kv). Query row i may see key j
iff j <= past + i and attention_mask[b, j] == 1, and with a sliding `window` (Mistral's
sliding_window) also j > past + i - window: the query at position p sees the window keys
p - window + 1 .. p, as transformers' sliding-window mask does. window None = no window. With right padding every row, padded query rows
included, sees key 0, so each row is a proper softmax over its visible keys: exactly what
transformers' eager attention computes with its causal + padding mask. A padded query row's
output is thus the attention over the real keys before it (finite, deterministic; the loss
ignores it). A row that sees no key at all (a sequence whose first key is padding) gets
output 0, lse 0 and no gradient; transformers would give it the uniform average instead.

    out, lse = causal_attention_forward(q, k, v, batch=B, heads=Hq, kv_heads=Hkv)
    dq, dk, dv = causal_attention_backward(dout, q, k, v, out, lse, batch=B, heads=Hq, kv_heads=Hkv)

The backward recomputes P = exp(scaling * Q.K^T - lse) on visible keys from the saved lse, as
the GPU kernels do, and uses delta = rowsum(dO * O) for dS = P * (dP - delta).

Attention dropout: `dropout`, a multiplier [B, Hq, Tq, Tk] (ops/dropout.py's
dropout_multiplier of that layer, 0 or 1 / (1 - p)), multiplies the probabilities before they
weigh the values, as torch's dropout on attention weights does; the backward takes the same
multiplier: dV = (P * M)^T . dO, dS = P * (M * dP - delta) (delta = rowsum(dO * O) with the
dropped output O is still rowsum(P * M * dP)).

Logit soft-capping (Gemma 2's attn_logit_softcapping): with `softcap=c` each scaled score s
becomes c * tanh(s / c) before the mask and the softmax, as transformers' eager attention caps
them; the backward multiplies dS by the cap's slope 1 - tanh(s / c)^2 before it reaches q and
k. softcap None = no cap.
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


def visible(batch, q_len, past=0, attention_mask=None, window=None):
    """[B, 1, Tq, Tk] bool: query i (position past + i) sees key j."""
    keys = past + q_len
    offset = np.arange(keys)[None, :] - (past + np.arange(q_len)[:, None])    # j - (past + i)
    causal = offset <= 0
    if window is not None:
        assert window >= 1, f"window must be positive, got {window}"
        causal &= offset > -window
    if attention_mask is None:
        keep = np.ones((batch, keys), bool)
    else:
        keep = np.asarray(attention_mask) != 0
        assert keep.shape == (batch, keys), f"attention_mask must be [B, past + Tq] = {(batch, keys)}"
    return (causal[None, :, :] & keep[:, None, :])[:, None, :, :]


def _grouped(x, batch, heads, kv_heads):
    """[B*T, Hq*D] -> [B, Hkv, G*T, D] with G = Hq // Hkv: the G query heads that read one KV
    head stacked along the rows, so each product with that head's keys or values is one
    matrix product (no repeated copy of K and V, no sum over the group afterwards)."""
    rows, width = x.shape
    seq, dim = rows // batch, width // heads
    split = x.reshape(batch, seq, kv_heads, heads // kv_heads, dim).transpose(0, 2, 3, 1, 4)
    return split.reshape(batch, kv_heads, heads // kv_heads * seq, dim)


def _ungrouped(x, heads):
    """[B, Hkv, G*T, D] -> [B*T, Hq*D], the inverse of _grouped."""
    batch, kv_heads, rows, dim = x.shape
    seq = rows // (heads // kv_heads)
    return x.reshape(batch, heads, seq, dim).transpose(0, 2, 1, 3).reshape(batch * seq, heads * dim)


def _masked_scores(q, k, batch, heads, kv_heads, scaling, seen, softcap=None):
    """(scores, slope): scaling * Q.K^T as [B, Hq, Tq, Tk] (a fresh array), capped to
    softcap * tanh(. / softcap) with a softcap, -inf where a key is not seen; slope is the
    cap's derivative 1 - tanh^2 (None without a cap)."""
    q_len = q.shape[0] // batch
    qg = _grouped(q, batch, heads, kv_heads)
    kh = _split(k, batch, kv_heads)
    scores = (qg @ np.swapaxes(kh, -1, -2)).reshape(batch, heads, q_len, kh.shape[2])
    scores *= scaling
    slope = None
    if softcap is not None:
        assert softcap > 0, f"softcap must be positive, got {softcap}"
        np.tanh(scores / softcap, out=scores)
        slope = 1.0 - scores * scores
        scores *= softcap
    np.copyto(scores, -np.inf, where=~seen)
    return scores, slope


def _check(q, k, batch, heads, kv_heads):
    assert heads % kv_heads == 0, "heads must be a multiple of kv_heads"
    assert q.shape[1] % heads == 0 and k.shape[1] == kv_heads * (q.shape[1] // heads)
    assert q.shape[0] % batch == 0 and k.shape[0] % batch == 0


def causal_attention_probs(q, k, *, batch, heads, kv_heads, attention_mask=None, scaling=None,
                           past=0, window=None, softcap=None):
    """Materialized probabilities [B, Hq, Tq, Tk] (0 on invisible keys) and lse [B, Hq, Tq]."""
    _check(q, k, batch, heads, kv_heads)
    scaling = (q.shape[1] // heads) ** -0.5 if scaling is None else scaling
    q_len = q.shape[0] // batch
    assert k.shape[0] // batch == past + q_len, "k and v hold past + Tq rows per sequence"
    seen = visible(batch, q_len, past, attention_mask, window)
    probs, _ = _masked_scores(q, k, batch, heads, kv_heads, scaling, seen, softcap)
    top = probs.max(axis=-1, keepdims=True)
    any_seen = np.isfinite(top)
    top[~any_seen] = 0.0
    probs -= top
    np.exp(probs, out=probs)                      # exp(-inf) = 0 on invisible keys
    total = probs.sum(axis=-1, keepdims=True)
    total[~any_seen] = 1.0
    probs *= np.where(any_seen, 1.0 / total, 0.0).astype(probs.dtype, copy=False)
    lse = np.where(any_seen, top + np.log(total), 0.0)[..., 0]
    return probs, lse


def causal_attention_forward(q, k, v, *, batch, heads, kv_heads, attention_mask=None,
                             scaling=None, past=0, dropout=None, window=None, softcap=None):
    """Returns (out [B*Tq, Hq*D], lse [B, Hq, Tq])."""
    probs, lse = causal_attention_probs(q, k, batch=batch, heads=heads, kv_heads=kv_heads,
                                        attention_mask=attention_mask, scaling=scaling, past=past,
                                        window=window, softcap=softcap)
    if dropout is not None:
        probs *= dropout.reshape(probs.shape)
    b, hq, tq, tk = probs.shape
    grouped = probs.reshape(b, kv_heads, hq // kv_heads * tq, tk)
    return _ungrouped(grouped @ _split(v, batch, kv_heads), heads), lse


def causal_attention_backward(dout, q, k, v, out, lse, *, batch, heads, kv_heads,
                              attention_mask=None, scaling=None, past=0, dropout=None,
                              window=None, softcap=None):
    """Gradients of causal_attention_forward from its saved out and lse: (dq, dk, dv)."""
    _check(q, k, batch, heads, kv_heads)
    scaling = (q.shape[1] // heads) ** -0.5 if scaling is None else scaling
    q_len = q.shape[0] // batch
    seen = visible(batch, q_len, past, attention_mask, window)
    probs, slope = _masked_scores(q, k, batch, heads, kv_heads, scaling, seen, softcap)
    probs -= lse[..., None]
    np.exp(probs, out=probs)                      # 0 on invisible keys (exp(-inf))
    b, hq, tq, tk = probs.shape
    rows = hq // kv_heads * tq
    probs = probs.reshape(b, kv_heads, rows, tk)
    do = _grouped(dout, batch, heads, kv_heads)
    delta = np.sum(do * _grouped(out, batch, heads, kv_heads), axis=-1, keepdims=True)  # rowsum(dO * O)
    kh, vh = _split(k, batch, kv_heads), _split(v, batch, kv_heads)
    dscores = do @ np.swapaxes(vh, -1, -2)        # dP, then dS = P * (M * dP - delta) in place
    if dropout is not None:
        dropout = dropout.reshape(probs.shape)
        dscores *= dropout
    dscores -= delta
    dscores *= probs
    if slope is not None:                         # through the cap: d(c tanh(s / c)) = slope ds
        dscores *= slope.reshape(dscores.shape)
    dq = _ungrouped(dscores @ kh, heads)
    dq *= scaling
    dk = _merge(np.swapaxes(dscores, -1, -2) @ _grouped(q, batch, heads, kv_heads))
    dk *= scaling
    dv = _merge(np.swapaxes(probs if dropout is None else probs * dropout, -1, -2) @ do)
    return dq, dk, dv
