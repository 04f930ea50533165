"""LM head loss reference (py_engine.ops.lm_head_loss) against torch autograd in float64:
cross_entropy(h W^T, y, ignore_index) and its gradients for h and W, whole-vocabulary and
chunked (vocabulary not a multiple of the chunk, a single chunk, one column per chunk), ignored
tokens and a batch with every token ignored."""

import numpy as np
import pytest
import torch

from py_engine.ops.lm_head_loss import IGNORE, lm_head_loss_backward, lm_head_loss_forward

BOUND = 1e-12   # float64 against float64: only summation order differs


def random_case(rng, rows, hidden, vocab, ignored):
    h = rng.standard_normal((rows, hidden))
    w = rng.standard_normal((vocab, hidden)) / np.sqrt(hidden) * 3
    labels = rng.integers(0, vocab, rows).astype(np.int64)
    labels[rng.permutation(rows)[:ignored]] = IGNORE
    return h, w, labels


def torch_reference(h, w, labels, dloss):
    th = torch.tensor(h, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.tensor(np.where(labels == IGNORE, -100, labels))
    loss = torch.nn.functional.cross_entropy(th @ tw.T, ty, ignore_index=-100)
    (loss * dloss).backward()
    return loss.item(), th.grad.numpy(), tw.grad.numpy()


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def rel_to_scale(a, b, scale):
    """Relative error against the larger of |b| and the operands' scale: where a dominant label
    drives the loss and (softmax - onehot) toward zero, lse - logit and p - 1 cancel, and their
    rounding is a fraction of the logits, not of the small result."""
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), scale)


def scales(h, w, labels, dloss):
    """Operand scales of the loss and of dh, dW: what rounding in lse, logit and p is relative to."""
    logits = h @ w.T
    kept = labels != IGNORE
    counted = max(int(kept.sum()), 1)
    biggest = 1.0 + np.abs(logits[kept]).max(initial=0.0)
    loss_scale = biggest
    step = dloss / counted * biggest * np.sqrt(kept.sum())
    return loss_scale, step * np.linalg.norm(w), step * np.linalg.norm(h[kept])


@pytest.mark.parametrize("rows, hidden, vocab, ignored, chunk", [
    (1, 4, 3, 0, None),
    (12, 8, 50, 0, None),
    (12, 8, 50, 4, 16),       # 50 = 3 * 16 + 2
    (20, 6, 37, 7, 37),       # a single chunk
    (9, 5, 11, 2, 1),         # one logit per chunk
    (16, 16, 100, 15, 64),    # one counted token
])
def test_lm_head_loss_matches_torch(rng, rows, hidden, vocab, ignored, chunk):
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored)
    dloss = rng.uniform(0.5, 2.0)
    loss, lse, counted = lm_head_loss_forward(h, w, labels, chunk=chunk)
    dh, dw = lm_head_loss_backward(h, w, labels, lse, counted, dloss=dloss, chunk=chunk)
    ref_loss, ref_dh, ref_dw = torch_reference(h, w, labels, dloss)
    loss_scale, dh_scale, dw_scale = scales(h, w, labels, dloss)
    assert counted == rows - ignored
    assert abs(loss - ref_loss) <= BOUND * max(abs(ref_loss), loss_scale)
    assert rel_to_scale(dh, ref_dh, dh_scale) <= BOUND
    assert rel_to_scale(dw, ref_dw, dw_scale) <= BOUND
    # the per-row logsumexp the backward reuses
    ref_lse = torch.logsumexp(torch.tensor(h @ w.T), dim=1).numpy()
    assert rel(lse, ref_lse) <= BOUND


def test_chunked_equals_whole(rng):
    h, w, labels = random_case(rng, 10, 8, 45, 3)
    whole = lm_head_loss_forward(h, w, labels)
    loss_scale, dh_scale, dw_scale = scales(h, w, labels, 1.0)
    for chunk in (1, 7, 44, 45, 100):
        part = lm_head_loss_forward(h, w, labels, chunk=chunk)
        assert abs(part[0] - whole[0]) <= BOUND * max(abs(whole[0]), loss_scale)
        dh, dw = lm_head_loss_backward(h, w, labels, part[1], part[2], chunk=chunk)
        ref_dh, ref_dw = lm_head_loss_backward(h, w, labels, whole[1], whole[2])
        assert rel_to_scale(dh, ref_dh, dh_scale) <= BOUND
        assert rel_to_scale(dw, ref_dw, dw_scale) <= BOUND


def test_large_logits_do_not_overflow(rng):
    h, w, labels = random_case(rng, 6, 4, 30, 1)
    h *= 200.0     # logits in the hundreds: exp would overflow without the running max
    loss, lse, counted = lm_head_loss_forward(h, w, labels, chunk=8)
    dh, dw = lm_head_loss_backward(h, w, labels, lse, counted, chunk=8)
    ref_loss, ref_dh, ref_dw = torch_reference(h, w, labels, 1.0)
    assert np.isfinite(loss) and abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert rel(dh, ref_dh) <= 1e-10 and rel(dw, ref_dw) <= 1e-10


def test_all_ignored_gives_zero(rng):
    h, w, labels = random_case(rng, 5, 4, 9, 5)
    loss, lse, counted = lm_head_loss_forward(h, w, labels, chunk=4)
    dh, dw = lm_head_loss_backward(h, w, labels, lse, counted, chunk=4)
    assert counted == 0 and loss == 0.0
    assert not dh.any() and not dw.any()
    _, dw_none = lm_head_loss_backward(h, w, labels, lse, counted, grad_weight=False)
    assert dw_none is None


def test_rejects_bad_labels_and_chunk(rng):
    h, w, labels = random_case(rng, 3, 4, 5, 0)
    labels[0] = 5
    with pytest.raises(ValueError, match="labels"):
        lm_head_loss_forward(h, w, labels)
    labels[0] = 0
    with pytest.raises(ValueError, match="chunk"):
        lm_head_loss_forward(h, w, labels, chunk=0)


@pytest.mark.parametrize("chunk, block_logits", [(None, 1 << 22), (16, 37), (1, 11)])
def test_head_bias_matches_torch(chunk, block_logits):
    """A head with a bias (Phi-2's lm_head): cross_entropy(h W^T + b, y) and db against torch,
    chunked, and the fused pass in blocks of rows."""
    from py_engine.ops.lm_head_loss import lm_head_loss_fused

    rng = np.random.default_rng()
    h, w, labels = random_case(rng, 14, 8, 50, 3)
    b = rng.standard_normal(50)
    th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (h, w, b))
    ty = torch.tensor(np.where(labels == IGNORE, -100, labels))
    want = torch.nn.functional.cross_entropy(th @ tw.T + tb, ty, ignore_index=-100)
    (want * 0.7).backward()

    loss, lse, counted = lm_head_loss_forward(h, w, labels, chunk=chunk, bias=b)
    db = np.full(50, 0.25)                       # the gradient is added into what is there
    dh, dw = lm_head_loss_backward(h, w, labels, lse, counted, dloss=0.7, chunk=chunk, bias=b,
                                   dbias=db)
    assert abs(loss - want.item()) <= BOUND * abs(want.item())
    assert rel(dh, th.grad.numpy()) <= 1e-10 and rel(dw, tw.grad.numpy()) <= 1e-10
    assert rel(db - 0.25, tb.grad.numpy()) <= 1e-10

    db = np.zeros(50)
    loss, _, dh, dw = lm_head_loss_fused(h, w, labels, dloss=0.7, grad_weight=True,
                                         block_logits=block_logits, bias=b, dbias=db)
    assert abs(loss - want.item()) <= BOUND * abs(want.item())
    assert rel(dh, th.grad.numpy()) <= 1e-10 and rel(dw, tw.grad.numpy()) <= 1e-10
    assert rel(db, tb.grad.numpy()) <= 1e-10


@pytest.mark.parametrize("chunk, block_logits", [(None, 1 << 22), (16, 37), (1, 11)])
def test_final_logit_softcap_matches_torch(chunk, block_logits):
    """Gemma 2's final logit soft-capping: cross_entropy(c tanh((h W^T + b) / c), y) and its
    gradients against torch, chunked and fused, with a cap that bends most logits."""
    from py_engine.ops.lm_head_loss import lm_head_loss_fused, softcap_logits

    rng = np.random.default_rng()
    h, w, labels = random_case(rng, 14, 8, 50, 3)
    b, cap = rng.standard_normal(50), 1.5
    th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (h, w, b))
    ty = torch.tensor(np.where(labels == IGNORE, -100, labels))
    logits = cap * torch.tanh((th @ tw.T + tb) / cap)
    want = torch.nn.functional.cross_entropy(logits, ty, ignore_index=-100)
    (want * 0.7).backward()
    uncapped = torch.nn.functional.cross_entropy(th @ tw.T + tb, ty, ignore_index=-100)
    assert abs(uncapped.item() - want.item()) > 0.1       # the cap bends these logits

    loss, lse, counted = lm_head_loss_forward(h, w, labels, chunk=chunk, bias=b, softcap=cap)
    db = np.zeros(50)
    dh, dw = lm_head_loss_backward(h, w, labels, lse, counted, dloss=0.7, chunk=chunk, bias=b,
                                   dbias=db, softcap=cap)
    assert abs(loss - want.item()) <= BOUND * abs(want.item())
    assert rel(dh, th.grad.numpy()) <= 1e-10 and rel(dw, tw.grad.numpy()) <= 1e-10
    assert rel(db, tb.grad.numpy()) <= 1e-10

    db = np.zeros(50)
    loss, _, dh, dw = lm_head_loss_fused(h, w, labels, dloss=0.7, grad_weight=True,
                                         block_logits=block_logits, bias=b, dbias=db, softcap=cap)
    assert abs(loss - want.item()) <= BOUND * abs(want.item())
    assert rel(dh, th.grad.numpy()) <= 1e-10 and rel(dw, tw.grad.numpy()) <= 1e-10
    assert rel(db, tb.grad.numpy()) <= 1e-10
    z = h @ w.T + b
    assert rel(softcap_logits(z, cap), logits.detach().numpy()) <= 1e-12
    assert softcap_logits(z, None) is z
    with pytest.raises(ValueError, match="softcap"):
        lm_head_loss_forward(h, w, labels, softcap=0.0)
