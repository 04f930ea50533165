"""The fused one-pass LM head loss (py_engine.ops.lm_head_loss.lm_head_loss_fused) against torch
autograd in float64, over row blocks of every size (one row per block up to all rows at once),
with ignored tokens, the head's gradient, and a batch with every token ignored; and in float32
against the float64 result, which is how the NumPy backend runs it."""

import numpy as np
import pytest
from test_ops_lm_head_loss import BOUND, random_case, rel, rel_to_scale, scales, torch_reference

from py_engine.ops.lm_head_loss import IGNORE, lm_head_loss_fused

F32_BOUND = 1e-5


@pytest.mark.parametrize("rows, hidden, vocab, ignored, block_logits", [
    (1, 4, 3, 0, 1),          # one row, a block smaller than one row of logits
    (12, 8, 50, 0, 50),       # one row per block
    (12, 8, 50, 4, 170),      # three rows per block, a short last block
    (20, 6, 37, 7, 10**6),    # every counted row in one block
    (16, 16, 100, 15, 300),   # one counted token
])
def test_fused_matches_torch(rng, rows, hidden, vocab, ignored, block_logits):
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored)
    dloss = rng.uniform(0.5, 2.0)
    loss, counted, dh, dw = lm_head_loss_fused(h, w, labels, dloss=dloss, grad_weight=True,
                                               block_logits=block_logits)
    ref_loss, ref_dh, ref_dw = torch_reference(h, w, labels, dloss)
    # bounds relative to the operands' scale where a dominant label makes the results cancel
    loss_scale, dh_scale, dw_scale = scales(h, w, labels, dloss)
    assert counted == rows - ignored
    assert abs(loss - ref_loss) <= BOUND * max(abs(ref_loss), loss_scale)
    assert rel_to_scale(dh, ref_dh, dh_scale) <= BOUND
    assert rel_to_scale(dw, ref_dw, dw_scale) <= BOUND
    assert not dh[labels == IGNORE].any()     # ignored rows get no gradient


def test_fused_float32_close_to_float64(rng):
    h, w, labels = random_case(rng, 64, 32, 1000, 9)
    loss64, _, dh64, dw64 = lm_head_loss_fused(h, w, labels, grad_weight=True, block_logits=4000)
    loss32, counted, dh32, dw32 = lm_head_loss_fused(h.astype(np.float32), w.astype(np.float32), labels,
                                                     grad_weight=True, block_logits=4000)
    assert counted == 55 and dh32.dtype == np.float32 and dw32.dtype == np.float32
    assert abs(loss32 - loss64) <= F32_BOUND * abs(loss64)
    assert rel(dh32, dh64) <= F32_BOUND and rel(dw32, dw64) <= F32_BOUND


def test_fused_without_gradients_gives_the_loss(rng):
    h, w, labels = random_case(rng, 10, 8, 45, 3)
    loss, counted, dh, dw = lm_head_loss_fused(h, w, labels, grad_input=False, block_logits=90)
    ref_loss, _, _ = torch_reference(h, w, labels, 1.0)
    assert dh is None and dw is None and counted == 7
    assert abs(loss - ref_loss) <= BOUND * abs(ref_loss)


def test_fused_large_logits_do_not_overflow(rng):
    h, w, labels = random_case(rng, 6, 4, 30, 1)
    h *= 200.0     # logits in the hundreds: exp would overflow without the row max
    loss, _, dh, dw = lm_head_loss_fused(h, w, labels, grad_weight=True, block_logits=60)
    ref_loss, ref_dh, ref_dw = torch_reference(h, w, labels, 1.0)
    assert np.isfinite(loss) and abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert rel(dh, ref_dh) <= 1e-10 and rel(dw, ref_dw) <= 1e-10


def test_fused_all_ignored_gives_zero(rng):
    h, w, labels = random_case(rng, 5, 4, 9, 5)
    loss, counted, dh, dw = lm_head_loss_fused(h, w, labels, grad_weight=True)
    assert counted == 0 and loss == 0.0
    assert not dh.any() and not dw.any()


def test_fused_rejects_bad_labels(rng):
    h, w, labels = random_case(rng, 3, 4, 5, 0)
    labels[0] = 5
    with pytest.raises(ValueError, match="labels"):
        lm_head_loss_fused(h, w, labels)


@pytest.mark.parametrize("softcap, with_bias, block_logits", [
    (None, False, 10**6), (None, True, 120), (2.0, False, 50), (1.5, True, 10**6)])
def test_low_rank_term_matches_torch(rng, softcap, with_bias, block_logits):
    """A LoRA on the head (low_rank): logits h W^T + s u B^T (+ bias, capped), its loss and the
    gradients of h, W, u, B and the bias against torch autograd in float64."""
    import torch
    rows, hidden, vocab, r = 14, 8, 45, 3
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored=3)
    u = rng.standard_normal((rows, r))
    b = rng.standard_normal((vocab, r)) / np.sqrt(r)
    bias = rng.standard_normal(vocab) if with_bias else None
    s, dloss = float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.5, 2.0))
    db = rng.standard_normal((vocab, r))          # added into
    dbias = np.zeros(vocab) if with_bias else None
    db_got = db.copy()
    loss, counted, dh, dw, du = lm_head_loss_fused(
        h, w, labels, dloss=dloss, grad_weight=True, block_logits=block_logits, bias=bias,
        dbias=dbias, softcap=softcap, low_rank=(u, b, s), dlow_rank=db_got)

    t = {k: torch.tensor(v, requires_grad=True) for k, v in
         dict(h=h, w=w, u=u, b=b, **({"bias": bias} if with_bias else {})).items()}
    z = t["h"] @ t["w"].T + s * (t["u"] @ t["b"].T)
    if with_bias:
        z = z + t["bias"]
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    y = torch.tensor(np.where(labels == IGNORE, -100, labels.astype(np.int64)))
    ref = torch.nn.functional.cross_entropy(z, y, ignore_index=-100)
    (ref * dloss).backward()
    assert counted == rows - 3
    assert abs(loss - ref.item()) <= BOUND * abs(ref.item())
    for got, want in ((dh, t["h"].grad), (dw, t["w"].grad), (du, t["u"].grad),
                      (db_got - db, t["b"].grad)) + (((dbias, t["bias"].grad),) if with_bias else ()):
        assert rel(got, want.numpy()) <= BOUND, rel(got, want.numpy())
    assert not du[labels == IGNORE].any()
    # without backward: the loss alone, du None
    loss2, _, dh2, _, du2 = lm_head_loss_fused(h, w, labels, grad_input=False, bias=bias,
                                               softcap=softcap, low_rank=(u, b, s))
    assert dh2 is None and du2 is None and abs(loss2 - loss) <= 1e-12 * abs(loss)
    with pytest.raises(ValueError, match="low-rank term"):
        lm_head_loss_fused(h, w, labels, low_rank=(u, b[:-1], s))
