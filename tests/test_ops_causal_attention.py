"""The NumPy causal GQA attention reference against torch autograd (float64) and against
transformers' eager Llama attention (repeat_kv, additive causal + padding mask)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import eager_attention_forward

from py_engine.ops import causal_attention as ca


def right_padding(rng, batch, keys):
    lengths = rng.integers(1, keys + 1, batch)
    lengths[-1] = keys
    return (np.arange(keys)[None, :] < lengths[:, None]).astype(np.uint32)


def random_inputs(rng, batch, seq, heads, kv_heads, dim, past):
    keys = past + seq
    q, dout = (rng.standard_normal((batch * seq, heads * dim)) for _ in range(2))
    k, v = (rng.standard_normal((batch * keys, kv_heads * dim)) for _ in range(2))
    return q, k, v, dout


def additive_mask(batch, seq, past, mask, dtype):
    """transformers' 4D additive mask [B, 1, Tq, Tk]: 0 where visible, finfo.min elsewhere."""
    seen = torch.tensor(ca.visible(batch, seq, past, mask))
    return torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)


def torch_reference(q, k, v, batch, seq, heads, kv_heads, past, mask, scaling, dropout=None,
                    softcap=None):
    """Causal GQA with a -inf mask, autograd-differentiable; also returns the row logsumexp.
    dropout: a [B, Hq, Tq, Tk] multiplier on the probabilities; softcap: scores capped to
    softcap * tanh(. / softcap)."""
    keys = past + seq
    qh = q.view(batch, seq, heads, -1).transpose(1, 2)
    kh = k.view(batch, keys, kv_heads, -1).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    vh = v.view(batch, keys, kv_heads, -1).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    seen = torch.tensor(ca.visible(batch, seq, past, mask))
    scores = qh @ kh.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    scores = torch.where(seen, scores, -torch.inf)
    probs = torch.softmax(scores, dim=-1)
    out = (probs if dropout is None else probs * torch.as_tensor(dropout)) @ vh
    return out.transpose(1, 2).reshape(batch * seq, -1), torch.logsumexp(scores, dim=-1)


CASES = [  # batch, seq, heads, kv_heads, dim, past, padded
    (2, 7, 2, 2, 4, 0, False),
    (3, 6, 4, 2, 8, 0, True),
    (2, 5, 4, 1, 4, 0, True),
    (2, 3, 4, 2, 4, 6, True),     # KV-cache offset
    (1, 1, 2, 1, 8, 9, False),    # one decoding step
]


@pytest.mark.parametrize("batch, seq, heads, kv_heads, dim, past, padded", CASES)
@pytest.mark.parametrize("dropout", [None, 0.3])
def test_forward_and_backward_match_torch_autograd(rng, batch, seq, heads, kv_heads, dim, past,
                                                   padded, dropout):
    """With `dropout`, a random 0 / (1 / (1 - p)) multiplier on the probabilities (attention
    dropout with a given mask) in both."""
    inputs = random_inputs(rng, batch, seq, heads, kv_heads, dim, past)
    mask = right_padding(rng, batch, past + seq) if padded else None
    if dropout is not None:
        keep = rng.random((batch, heads, seq, past + seq)) >= dropout
        dropout = keep / (1 - dropout)
    check_against_autograd(inputs, dict(batch=batch, heads=heads, kv_heads=kv_heads,
                                        attention_mask=mask, past=past, scaling=dim ** -0.5,
                                        dropout=dropout))


def check_against_autograd(inputs, meta):
    """Our forward (out, lse) and backward against torch_reference under autograd, both in
    float64; returns our out."""
    q, k, v, dout = inputs
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    batch = meta["batch"]
    t_out, t_lse = torch_reference(tq, tk, tv, batch, q.shape[0] // batch, meta["heads"],
                                   meta["kv_heads"], meta["past"], meta["attention_mask"],
                                   meta["scaling"], meta.get("dropout"), meta.get("softcap"))
    t_out.backward(torch.tensor(dout))
    out, lse = ca.causal_attention_forward(q, k, v, **meta)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, t_lse.detach().numpy(), rtol=1e-12, atol=1e-12)
    grads = ca.causal_attention_backward(dout, q, k, v, out, lse, **meta)
    for ours, theirs in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    return out


@pytest.mark.parametrize("batch, seq, heads, kv_heads, dim, past, padded", CASES)
def test_matches_transformers_eager_llama_attention(rng, batch, seq, heads, kv_heads, dim, past,
                                                    padded):
    q, k, v, _ = random_inputs(rng, batch, seq, heads, kv_heads, dim, past)
    mask = right_padding(rng, batch, past + seq) if padded else None
    scaling = 0.7 * dim ** -0.5
    keys = past + seq
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False)
    query = torch.tensor(q).view(batch, seq, heads, dim).transpose(1, 2)
    key = torch.tensor(k).view(batch, keys, kv_heads, dim).transpose(1, 2)
    value = torch.tensor(v).view(batch, keys, kv_heads, dim).transpose(1, 2)
    expected, weights = eager_attention_forward(
        module, query, key, value, additive_mask(batch, seq, past, mask, torch.float64), scaling)
    out, _ = ca.causal_attention_forward(q, k, v, batch=batch, heads=heads, kv_heads=kv_heads,
                                         attention_mask=mask, scaling=scaling, past=past)
    # eager takes its softmax in float32, hence the float32-level tolerance.
    np.testing.assert_allclose(out, expected.reshape(batch * seq, -1).numpy(), rtol=1e-5, atol=1e-6)
    probs, _ = ca.causal_attention_probs(q, k, batch=batch, heads=heads, kv_heads=kv_heads,
                                         attention_mask=mask, scaling=scaling, past=past)
    np.testing.assert_allclose(probs, weights.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch, seq, heads, kv_heads, dim, past, padded", CASES)
def test_softcap_matches_torch_autograd_and_gemma2_eager_attention(rng, batch, seq, heads,
                                                                   kv_heads, dim, past, padded):
    """Gemma 2's attention logit soft-capping: forward and backward against torch autograd, and
    the forward against transformers' own Gemma 2 eager attention (which caps its scores), with
    a cap low enough to bend most scores (|s| / c up to ~2)."""
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward as gemma2_eager

    inputs = random_inputs(rng, batch, seq, heads, kv_heads, dim, past)
    q, k, v, _ = inputs
    mask = right_padding(rng, batch, past + seq) if padded else None
    scaling, softcap = 1.3 * dim ** -0.5, 1.5
    meta = dict(batch=batch, heads=heads, kv_heads=kv_heads, attention_mask=mask, past=past,
                scaling=scaling, softcap=softcap)
    out = check_against_autograd(inputs, meta)
    uncapped, _ = ca.causal_attention_forward(q, k, v, **dict(meta, softcap=None))
    assert np.abs(uncapped - out).max() > 1e-2          # the cap bends these scores

    keys = past + seq
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False)
    expected, _ = gemma2_eager(module, torch.tensor(q).view(batch, seq, heads, dim).transpose(1, 2),
                               torch.tensor(k).view(batch, keys, kv_heads, dim).transpose(1, 2),
                               torch.tensor(v).view(batch, keys, kv_heads, dim).transpose(1, 2),
                               additive_mask(batch, seq, past, mask, torch.float64),
                               scaling=scaling, softcap=softcap)
    np.testing.assert_allclose(out, expected.reshape(batch * seq, -1).numpy(), rtol=1e-5, atol=1e-6)


def test_padded_query_rows_attend_to_the_real_prefix(rng):
    batch, seq, heads, dim = 2, 6, 2, 4
    q, k, v, _ = random_inputs(rng, batch, seq, heads, 1, dim, 0)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0]], np.uint32)
    out, _ = ca.causal_attention_forward(q, k, v, batch=batch, heads=heads, kv_heads=1,
                                         attention_mask=mask)
    short, _ = ca.causal_attention_forward(q[6:9], k[6:9], v[6:9], batch=1, heads=heads,
                                           kv_heads=1)
    np.testing.assert_allclose(out[6:9], short, rtol=1e-12)
    for i in range(9, 12):                       # padded rows: attention over the 3 real keys
        alone, _ = ca.causal_attention_forward(q[i:i + 1], k[6:9], v[6:9], batch=1, heads=heads,
                                               kv_heads=1, past=2)
        np.testing.assert_allclose(out[i:i + 1], alone, rtol=1e-12)
    probs, _ = ca.causal_attention_probs(q, k, batch=batch, heads=heads, kv_heads=1,
                                         attention_mask=mask)
    assert np.all(probs[1, :, :, 3:] == 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)


def test_rows_that_see_no_key_give_zero_and_no_gradient(rng):
    q, k, v, dout = random_inputs(rng, 1, 4, 2, 1, 4, 0)
    mask = np.array([[0, 1, 1, 1]], np.uint32)
    meta = dict(batch=1, heads=2, kv_heads=1, attention_mask=mask)
    out, lse = ca.causal_attention_forward(q, k, v, **meta)
    assert np.all(out[0] == 0) and np.all(lse[:, :, 0] == 0)
    dq, dk, dv = ca.causal_attention_backward(dout, q, k, v, out, lse, **meta)
    assert np.all(dq[0] == 0) and np.all(dk[0] == 0) and np.all(dv[0] == 0)
    assert np.all(np.isfinite(dq)) and np.all(np.isfinite(dk))


def test_offset_rows_equal_the_tail_of_the_full_forward(rng):
    batch, seq, heads, kv_heads, dim, new = 2, 8, 4, 2, 4, 3
    q, k, v, _ = random_inputs(rng, batch, seq, heads, kv_heads, dim, 0)
    meta = dict(batch=batch, heads=heads, kv_heads=kv_heads)
    full, full_lse = ca.causal_attention_forward(q, k, v, **meta)
    tail_q = q.reshape(batch, seq, -1)[:, -new:].reshape(batch * new, -1)
    tail, tail_lse = ca.causal_attention_forward(tail_q, k, v, past=seq - new, **meta)
    np.testing.assert_allclose(tail, full.reshape(batch, seq, -1)[:, -new:].reshape(batch * new, -1),
                               rtol=1e-12)
    np.testing.assert_allclose(tail_lse, full_lse[:, :, -new:], rtol=1e-12)


WINDOW_CASES = [  # batch, seq, heads, kv_heads, dim, past, padded, window
    (2, 9, 4, 2, 4, 0, True, 3),      # window smaller than T
    (2, 6, 2, 1, 4, 0, False, 6),     # window equal to T
    (1, 5, 2, 2, 4, 0, False, 8),     # window larger than T: plain causal
    (2, 4, 4, 2, 4, 7, True, 5),      # with a KV-cache offset: rows see only the window's keys
    (1, 1, 2, 1, 8, 9, False, 4),     # one decoding step past the window
]


@pytest.mark.parametrize("batch, seq, heads, kv_heads, dim, past, padded, window", WINDOW_CASES)
def test_sliding_window_is_transformers_mask(rng, batch, seq, heads, kv_heads, dim, past, padded,
                                             window):
    """The window's visibility is transformers' own sliding-window causal mask function (the one
    MistralForCausalLM builds its mask from) at absolute positions, and forward and backward
    match torch autograd under it."""
    from transformers.masking_utils import and_masks, sliding_window_causal_mask_function

    mask = right_padding(rng, batch, past + seq) if padded else None
    theirs = sliding_window_causal_mask_function(window)
    keep = np.ones((batch, past + seq), bool) if mask is None else mask != 0
    expected = np.array([[[[bool(and_masks(theirs)(b, 0, torch.tensor(past + i), torch.tensor(j)))
                            and keep[b, j] for j in range(past + seq)] for i in range(seq)]]
                         for b in range(batch)])
    seen = ca.visible(batch, seq, past, mask, window)
    assert np.array_equal(seen, expected)
    if window < past + seq:
        assert not np.array_equal(seen, ca.visible(batch, seq, past, mask))   # the window bites

    q, k, v, dout = random_inputs(rng, batch, seq, heads, kv_heads, dim, past)
    scaling = dim ** -0.5
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    keys = past + seq
    qh = tq.view(batch, seq, heads, -1).transpose(1, 2)
    kh = tk.view(batch, keys, kv_heads, -1).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    vh = tv.view(batch, keys, kv_heads, -1).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    # A padded query row whose window holds only padding sees no key: output 0, no gradient.
    any_seen = torch.tensor(expected.any(-1, keepdims=True))
    shown = torch.tensor(expected) | ~any_seen
    scores = torch.where(shown, qh @ kh.transpose(-1, -2) * scaling, -torch.inf)
    t_out = (torch.softmax(scores, dim=-1) * any_seen @ vh).transpose(1, 2).reshape(batch * seq, -1)
    t_out.backward(torch.tensor(dout))
    meta = dict(batch=batch, heads=heads, kv_heads=kv_heads, attention_mask=mask, past=past,
                window=window)
    out, lse = ca.causal_attention_forward(q, k, v, **meta)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    t_lse = torch.where(any_seen[..., 0], torch.logsumexp(scores, -1), 0.0)
    np.testing.assert_allclose(lse, t_lse.detach().numpy(), rtol=1e-12, atol=1e-12)
    grads = ca.causal_attention_backward(dout, q, k, v, out, lse, **meta)
    for ours, t in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-10, atol=1e-12)
