"""DeBERTa-v2's disentangled attention bias, forward and backward (NumPy reference of
shaders/disentangled_attention.wgsl and the attention kernels it reuses).

Besides the content score q_i . k_j, each head's score adds a content-to-position term c2p (the
query against the projected relative embedding of its distance to the key) and a
position-to-content term p2c (the key against the projected relative embedding of the same
distance):

    bias[b, h, i, j] = scaling * (q[b, i, h] . pk[r(i - j), h] + k[b, j, h] . pq[r(i - j), h])

q, k are [B*T, H*D] as the linears give them; pk, pq [R, H*D] are the key and query
projections of the R relative embedding rows the sequence reads (a contiguous range), and
r(d) the row of distance d within that range (models/relative_position.py's RelativeRows).
Either term may be absent (config.json's pos_att_type). The bias goes into the attention scores beside scaling * q . k.

The products are computed per head in full (A = q . pk^T [B, H, T, R], and K . pq^T) and then
gathered by r; the backward scatters the bias gradient back into them (rows of several
distances that share a bucket add up).
"""

import numpy as np

from .attention import split_heads


def relative_index(rows):
    """[T, T] the row (within rows' range) of query i and key j (rows: a RelativeRows)."""
    T = rows.seq
    return np.asarray(rows.offsets)[np.arange(T)[:, None] - np.arange(T)[None, :] + T - 1]


def disentangled_bias(q, k, pq, pk, batch, heads, scaling, rows):
    """bias [B, H, T, T] (see the module docstring); pq or pk None leaves its term out."""
    index = relative_index(rows)
    T = rows.seq
    bias = np.zeros((batch, heads, T, T), q.dtype)
    if pk is not None:      # c2p: A[b, h, i, r] = q_i . pk_r, read at r(i - j)
        a = split_heads(q, batch, heads) @ np.swapaxes(split_heads(pk, 1, heads), -1, -2)
        bias += np.take_along_axis(a, np.broadcast_to(index, a.shape[:2] + (T, T)), axis=-1)
    if pq is not None:      # p2c: P[b, h, j, r] = k_j . pq_r, read at r(i - j) for key j
        p = split_heads(k, batch, heads) @ np.swapaxes(split_heads(pq, 1, heads), -1, -2)
        gathered = np.take_along_axis(p, np.broadcast_to(index.T, p.shape[:2] + (T, T)), axis=-1)
        bias += np.swapaxes(gathered, -1, -2)
    bias *= scaling
    return bias


def _scatter(dbias, index, rows):
    """d[b, h, i, r] = the sum of dbias[b, h, i, j] over the keys j with index[i, j] = r."""
    B, H, T, _ = dbias.shape
    out = np.zeros((B, H, T, rows), dbias.dtype)
    i = np.broadcast_to(np.arange(T)[:, None], (T, T))
    np.add.at(out, (slice(None), slice(None), i, index), dbias)
    return out


def disentangled_bias_backward(dbias, q, k, pq, pk, heads, scaling, rows):
    """(dq, dk, dpq, dpk) of disentangled_bias from the bias gradient [B, H, T, T]; an absent
    term's are None (and dq or dk then None where no term reads it)."""
    from .attention import merge_heads

    batch = dbias.shape[0]
    index = relative_index(rows)
    dq = dk = dpq = dpk = None
    if pk is not None:
        da = _scatter(dbias, index, rows.rows) * scaling                    # [B, H, T, R]
        dq = merge_heads(da @ split_heads(pk, 1, heads))
        dpk = merge_heads((np.swapaxes(da, -1, -2) @ split_heads(q, batch, heads)).sum(0, keepdims=True))
    if pq is not None:
        dp = _scatter(np.swapaxes(dbias, -1, -2), index.T, rows.rows) * scaling   # [B, H, Tk, R]
        dk = merge_heads(dp @ split_heads(pq, 1, heads))
        dpq = merge_heads((np.swapaxes(dp, -1, -2) @ split_heads(k, batch, heads)).sum(0, keepdims=True))
    return dq, dk, dpq, dpk
