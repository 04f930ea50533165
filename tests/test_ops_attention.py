"""The NumPy attention reference against torch autograd (float64) and against transformers'
own BertSelfAttention, eager and sdpa, with padding masks."""

import numpy as np
import pytest
import torch
from transformers import BertConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertSelfAttention

from py_engine.ops import attention as att

BATCH, SEQ, HEADS, DIM = 3, 6, 2, 4
# Sequence 1 ends in padding, sequence 2 has a single real token.
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]])


def torch_attention(q, k, v, mask, heads, scaling):
    """transformers' eager_attention_forward with its additive finfo.min padding mask."""
    def split(x):
        return x.view(BATCH, SEQ, heads, -1).transpose(1, 2)
    bias = (1.0 - torch.tensor(mask, dtype=q.dtype))[:, None, None, :] * torch.finfo(q.dtype).min
    probs = torch.softmax(split(q) @ split(k).transpose(-1, -2) * scaling + bias, dim=-1)
    return (probs @ split(v)).transpose(1, 2).reshape(BATCH * SEQ, -1), probs


def test_forward_and_backward_match_torch_autograd(rng):
    width = HEADS * DIM
    q, k, v, dctx = (rng.standard_normal((BATCH * SEQ, width)) for _ in range(4))
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    scaling = DIM ** -0.5
    t_ctx, t_probs = torch_attention(tq, tk, tv, MASK, HEADS, scaling)
    t_ctx.backward(torch.tensor(dctx))

    ctx, probs = att.attention_forward(q, k, v, MASK, HEADS)
    np.testing.assert_allclose(ctx, t_ctx.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(probs, t_probs.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert np.all(probs[1, :, :, 4:] == 0) and np.all(probs[2, :, :, 1:] == 0)
    for ours, theirs in zip(att.attention_backward(dctx, q, k, v, probs, HEADS), (tq, tk, tv)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_fully_padded_rows_are_uniform_as_in_eager(rng):
    scores = rng.standard_normal((1, 1, 2, 3))
    probs = att.masked_softmax(scores, np.zeros((1, 3)))
    np.testing.assert_allclose(probs, np.full_like(probs, 1 / 3))


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_matches_transformers_bert_self_attention(rng, implementation):
    config = BertConfig(hidden_size=HEADS * DIM, num_attention_heads=HEADS, intermediate_size=16,
                        attention_probs_dropout_prob=0.0)
    config._attn_implementation = implementation
    layer = BertSelfAttention(config).double().eval()
    hidden = torch.tensor(rng.standard_normal((BATCH, SEQ, HEADS * DIM)))
    mask4d = create_bidirectional_mask(config=config, inputs_embeds=hidden,
                                       attention_mask=torch.tensor(MASK))
    with torch.no_grad():
        expected, _ = layer(hidden, attention_mask=mask4d)
        flat = hidden.reshape(BATCH * SEQ, -1)
        q, k, v = (getattr(layer, name)(flat).numpy() for name in ("query", "key", "value"))
    ctx, _ = att.attention_forward(q, k, v, MASK, HEADS)
    np.testing.assert_allclose(ctx, expected.reshape(BATCH * SEQ, -1).numpy(), rtol=1e-10, atol=1e-12)


def test_pieces_compose_to_the_whole(rng):
    """The pieces the GPU recorder mirrors (with dropout slotted between them) compose to
    attention_forward / attention_backward when no dropout runs."""
    width = HEADS * DIM
    q, k, v, dctx = (rng.standard_normal((BATCH * SEQ, width)) for _ in range(4))
    scaling = 0.3
    probs = att.masked_softmax(att.attention_scores(q, k, BATCH, HEADS, scaling), MASK)
    ctx = att.attention_context(probs, v, HEADS)
    ref_ctx, ref_probs = att.attention_forward(q, k, v, MASK, HEADS, scaling)
    np.testing.assert_allclose(ctx, ref_ctx, rtol=1e-12)
    dscores = att.masked_softmax_backward(probs, att.grad_probs(dctx, v, BATCH, HEADS))
    dq = att.grad_queries(dscores, k, HEADS, scaling)
    dk = att.grad_keys(dscores, q, HEADS, scaling)
    dv = att.grad_values(probs, dctx, HEADS)
    for ours, ref in zip((dq, dk, dv), att.attention_backward(dctx, q, k, v, ref_probs, HEADS, scaling)):
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_bias_scale_cross_lengths_and_causal_match_torch_autograd(rng, causal):
    """The backend's attention with T5's keywords: scaling 1, an additive bias [H, Tq, Tk]
    shared by the batch, fewer queries than keys (cross attention, or the last Tq queries of a
    cached sequence when causal), a padding mask over the keys; forward and dq, dk, dv against
    torch autograd (scores + bias + causal finfo.min + padding finfo.min, as T5's eager
    attention adds them). The bias is gathered from a table [R, H] by a bucket per position, as
    T5's relative position bias is: the table's gradient against autograd's too."""
    from py_engine.backends.numpy_backend import NumpyBackend

    Tq, Tk, width = 4, SEQ, HEADS * DIM
    mask = MASK.copy()
    mask[2, :3] = 1
    q, dctx = (rng.standard_normal((BATCH * Tq, width)) for _ in range(2))
    k, v = (rng.standard_normal((BATCH * Tk, width)) for _ in range(2))
    R = 6
    table = rng.standard_normal((R, HEADS)) * 3
    buckets = rng.integers(0, R - 1, Tq * Tk)         # the last row unused: its gradient is 0
    bias = np.ascontiguousarray(table[buckets].T.reshape(HEADS, Tq, Tk))
    tq, tk, tv, ttable = (torch.tensor(x, requires_grad=True) for x in (q, k, v, table))
    split = lambda x, T: x.view(BATCH, T, HEADS, -1).transpose(1, 2)     # noqa: E731
    minimum = torch.finfo(torch.float64).min
    scores = split(tq, Tq) @ split(tk, Tk).transpose(-1, -2) + ttable[torch.tensor(buckets)].T.reshape(HEADS, Tq, Tk)
    if causal:
        ahead = torch.arange(Tk)[None, :] > torch.arange(Tk - Tq, Tk)[:, None]
        scores = scores + torch.zeros(Tq, Tk, dtype=torch.float64).masked_fill(ahead, minimum)
    scores = scores + (1.0 - torch.tensor(mask, dtype=torch.float64))[:, None, None, :] * minimum
    t_ctx = (torch.softmax(scores, dim=-1) @ split(tv, Tk)).transpose(1, 2).reshape(BATCH * Tq, -1)
    t_ctx.backward(torch.tensor(dctx))

    be = NumpyBackend(np.float64)
    ctx, saved = be.attention(q, k, v, mask, BATCH, Tq, HEADS, 0.0, scaling=1.0, bias=bias, causal=causal)
    np.testing.assert_allclose(ctx, t_ctx.detach().numpy(), rtol=1e-12, atol=1e-12)
    dtable = np.ones((R, HEADS))                       # the table's gradient is added into it
    for ours, theirs in zip(be.attention_backward(dctx, saved, bias_grad=(dtable, buckets.tolist())),
                            (tq, tk, tv)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dtable - 1, ttable.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(dtable[-1] == 1) and np.linalg.norm(dtable[:-1] - 1) > 1e-3
    if causal:
        assert np.all(saved[3][:, :, 0, 4:] == 0)      # query 0 (position 2) sees keys 0..2 only
