"""Causal-LM head loss: the vocabulary projection and its token-level cross-entropy in one op.

For hidden states h [N, H] (N = B*T tokens), the head weight W [V, H] (tied to the embedding or
not) and labels y [N] already shifted by the caller (IGNORE marks prompt and padding tokens):

    z      = h W^T                                         [N, V] logits
    lse_i  = logsumexp_j z[i, j]
    loss   = sum over counted i of (lse_i - z[i, y_i]) / counted

which is torch.nn.functional.cross_entropy(h @ W.T, y, ignore_index=IGNORE). The gradient, with
p = softmax(z[i]) per row and g = dloss / counted:

    dz[i, j] = g * (p_j - [j == y_i])     (0 on ignored rows)
    dh       = dz W                       [N, H]
    dW       = dz^T h                     [V, H]   (only when the head is trained)

A head with a bias b [V] (Phi-2's lm_head) has logits z = h W^T + b and db = column sums of dz;
`bias=` gives it, and `dbias=` (an array [V]) receives db added into it (full fine-tuning).

Final logit soft-capping (Gemma 2's final_logit_softcapping): with `softcap=c` the logits are
z = c * tanh(z_raw / c) before the loss, as transformers caps them, and each dz is multiplied
by the cap's slope 1 - tanh(z_raw / c)^2 on its way to dh, dW and db. softcap_logits caps
generation's logits the same way.

A LoRA on the output layer (PEFT's lora_A / lora_B on lm_head) adds a low-rank term to the
logits: `low_rank=(u, b, scaling)` with u = dropout(h) A^T [N, r] (the caller's) and B [V, r]
gives z = h W^T + scaling * u B^T (before the cap, as PEFT's wrapped linear does), and the fused
pass also returns du = scaling * dz B [N, r] and adds dB = scaling * dz^T u into `dlow_rank`
(an array [V, r]) when given. Its product with h is the caller's: dA = du^T dropout(h), and
dh gets du A through the dropout mask.

Label smoothing (`smoothing=e`, transformers' label_smoothing_factor, torch's label_smoothing):
each counted token's loss is (1 - e)(lse_i - z[i, y_i]) + e (lse_i - mean_j z[i, j]), so the
label's logit is read as the target t_i = (1 - e) z[i, y_i] + e mean_j z[i, j], and
dz[i, j] = g * (p_j - (1 - e)[j == y_i] - e / V).

Where torch returns NaN (every row ignored) these functions return a loss and gradients of 0.

`chunk` (forward and backward) walks the vocabulary in column blocks of that many logits, as the
GPU recorder does: the forward keeps a per-row running max and rescaled sum of exponentials
(online logsumexp) and picks the label's logit in the block that holds it; the backward
recomputes each block's logits from the saved logsumexp. chunk=None takes the whole vocabulary
at once. Both give the same values up to rounding.

`lm_head_loss_fused` is the host's fast path: one pass over blocks of counted rows, each block's
logits [rows, V] computed once and turned in place into the loss and dz (no recomputation, and
rows the loss ignores cost nothing), at most `block_logits` logits alive at a time.
"""

import numpy as np

from ..labels import IGNORE_LABEL as IGNORE   # marks an uncounted token (u32 all ones on the GPU)

# Logits alive at once in the fused pass (4 Mi: 16 MiB in float32, about 128 rows of a 32k
# vocabulary): big enough for the head matmuls to run at full BLAS speed, small enough that
# the softmax passes over a block stay in the last-level cache.
BLOCK_LOGITS = 1 << 22


def _labels(labels, rows, vocab, ignore_index):
    labels = np.asarray(labels).astype(np.int64).reshape(rows)
    counted = labels != ignore_index
    if np.any((labels[counted] < 0) | (labels[counted] >= vocab)):
        raise ValueError(f"labels must lie in [0, {vocab}) or equal ignore_index={ignore_index}")
    return labels, counted


def _blocks(vocab, chunk):
    chunk = vocab if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(start, min(start + chunk, vocab)) for start in range(0, vocab, chunk)]


def _block_logits(h, w, bias, start, stop, softcap=None):
    """(z, slope): a block's logits, capped with a softcap, and the cap's slope (None without)."""
    z = h @ w[start:stop].T
    if bias is not None:
        z += bias[start:stop]
    return _capped(z, softcap)


def _capped(z, softcap):
    """(z capped in place to softcap * tanh(z / softcap), the slope 1 - tanh^2); (z, None)
    without a cap."""
    if softcap is None:
        return z, None
    if not softcap > 0:
        raise ValueError(f"softcap must be positive or None, got {softcap}")
    np.tanh(z / softcap, out=z)
    slope = 1.0 - z * z
    z *= softcap
    return z, slope


def softcap_logits(logits, softcap):
    """softcap * tanh(logits / softcap) (a new array); the logits themselves without a cap."""
    return logits if softcap is None else _capped(np.array(logits), softcap)[0]


def lm_head_loss_forward(h, w, labels, ignore_index=IGNORE, chunk=None, bias=None, softcap=None,
                         smoothing=0.0):
    """Returns (loss, lse, counted): the mean loss over counted tokens, each row's logsumexp
    [N] (what the backward needs) and the number of counted tokens."""
    rows, vocab = h.shape[0], w.shape[0]
    labels, counted = _labels(labels, rows, vocab, ignore_index)
    running_max = np.full(rows, -np.inf, dtype=h.dtype)
    running_sum = np.zeros(rows, dtype=h.dtype)
    label_logit = np.zeros(rows, dtype=h.dtype)
    for start, stop in _blocks(vocab, chunk):
        z, _ = _block_logits(h, w, bias, start, stop, softcap)
        new_max = np.maximum(running_max, z.max(axis=1))
        running_sum = (running_sum * np.exp(running_max - new_max)
                       + np.exp(z - new_max[:, None]).sum(axis=1))
        running_max = new_max
        here = counted & (labels >= start) & (labels < stop)
        label_logit[here] += (1.0 - smoothing) * z[here, labels[here] - start]
        if smoothing:
            label_logit += smoothing / vocab * z.sum(axis=1)
    lse = running_max + np.log(running_sum)
    n = int(counted.sum())
    total = np.where(counted, lse - label_logit, 0.0).sum()
    loss = total / n if n else 0.0 * total
    return loss, lse, n


def lm_head_loss_backward(h, w, labels, lse, counted, ignore_index=IGNORE, dloss=1.0,
                          chunk=None, grad_weight=True, bias=None, dbias=None, softcap=None,
                          smoothing=0.0):
    """Returns (dh, dw) for upstream gradient `dloss` of the mean loss; dw is None unless
    grad_weight; db is added into `dbias` when given."""
    rows, vocab = h.shape[0], w.shape[0]
    labels, mask = _labels(labels, rows, vocab, ignore_index)
    dh = np.zeros_like(h)
    dw = np.zeros_like(w) if grad_weight else None
    if counted == 0:
        return dh, dw
    scale = np.where(mask, dloss / counted, 0.0)[:, None]
    for start, stop in _blocks(vocab, chunk):
        z, slope = _block_logits(h, w, bias, start, stop, softcap)
        dz = np.exp(z - lse[:, None])
        here = mask & (labels >= start) & (labels < stop)
        dz[here, labels[here] - start] -= 1.0 - smoothing
        dz -= smoothing / vocab
        dz *= scale
        if slope is not None:
            dz *= slope
        dh += dz @ w[start:stop]
        if grad_weight:
            dw[start:stop] = dz.T @ h
        if dbias is not None:
            dbias[start:stop] += dz.sum(axis=0)
    return dh, dw


def lm_head_loss_fused(h, w, labels, ignore_index=IGNORE, dloss=1.0, grad_input=True,
                       grad_weight=False, block_logits=BLOCK_LOGITS, bias=None, dbias=None,
                       softcap=None, low_rank=None, dlow_rank=None, smoothing=0.0):
    """The loss and its gradients in one pass: returns (loss, counted, dh, dw), the mean loss
    over counted tokens, their number, dh [N, H] (None unless grad_input) and dW [V, H] (None
    unless grad_weight) for upstream gradient `dloss`; db is added into `dbias` when given.
    With `low_rank` (u, B, scaling) the logits get scaling * u B^T and the result is (loss,
    counted, dh, dw, du): du [N, r] (None unless grad_input), dB added into `dlow_rank`.

    Counted rows are taken in blocks of max(1, block_logits // V); for each block z = h W^T is
    computed once, its row max and label logits read, then z becomes exp(z - max) in place,
    its row sums give lse, and the same memory becomes dz = g (p - onehot) for dh = dz W and
    dW = dz^T h. Ignored rows get dh = 0 and are never multiplied."""
    rows, vocab = h.shape[0], w.shape[0]
    labels, counted = _labels(labels, rows, vocab, ignore_index)
    dh = np.zeros_like(h) if grad_input else None
    dw = np.zeros_like(w) if grad_weight else None
    if low_rank is not None:
        u, b, scaling = low_rank
        if u.shape[0] != rows or b.shape != (vocab, u.shape[1]):
            raise ValueError(f"the low-rank term needs u [{rows}, r] and B [{vocab}, r], got "
                             f"{list(u.shape)} and {list(b.shape)}")
        du = np.zeros_like(u) if grad_input else None
    done = (lambda *out: out) if low_rank is None else (lambda *out: out + (du,))
    kept = np.flatnonzero(counted)
    n = kept.size
    if n == 0:
        return done(h.dtype.type(0.0), 0, dh, dw)
    g = dloss / n
    per_block = max(1, int(block_logits) // vocab)
    total = 0.0
    for start in range(0, n, per_block):
        index = kept[start:start + per_block]
        hb = h[index]
        z = hb @ w.T
        if low_rank is not None:
            z += scaling * (u[index] @ b.T)
        if bias is not None:
            z += bias
        z, slope = _capped(z, softcap)
        at = np.arange(index.size)
        label_logit = (1.0 - smoothing) * z[at, labels[index]]
        if smoothing:
            label_logit += smoothing / vocab * z.sum(axis=1)
        top = z.max(axis=1)
        z -= top[:, None]
        np.exp(z, out=z)
        sums = z.sum(axis=1)
        total += float(np.sum(top + np.log(sums) - label_logit, dtype=np.float64))
        if not (grad_input or grad_weight or dbias is not None or dlow_rank is not None):
            continue
        z *= (g / sums)[:, None].astype(z.dtype, copy=False)
        z[at, labels[index]] -= g * (1.0 - smoothing)
        if smoothing:
            z -= g * smoothing / vocab
        if slope is not None:
            z *= slope
        if grad_input:
            dh[index] = z @ w
        if grad_weight:
            dw += z.T @ hb
        if dbias is not None:
            dbias += z.sum(axis=0)
        if low_rank is not None and grad_input:
            du[index] = scaling * (z @ b)
        if dlow_rank is not None:
            dlow_rank += scaling * (z.T @ u[index])
    return done(h.dtype.type(total / n), n, dh, dw)
