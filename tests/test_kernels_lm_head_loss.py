"""Chunked LM head loss (shaders/lm_head_loss.wgsl + the matmul family) on wgpu-native against
the NumPy reference in float64: loss, correct and counted tokens in the metrics buffer, dh and dW;
vocabulary not a multiple of the chunk, a single chunk, one logit per chunk, ignored and
all-ignored tokens, gradient accumulation (dh and dW each on their own), and an f16 head weight
read by the forward with an f32 dW."""

import numpy as np
import pytest
from conftest import floats, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.cross_entropy import (
    METRIC_CORRECT, METRIC_COUNTED, METRIC_GRAD_NORM, METRIC_LOSS, METRIC_SLOTS,
    METRIC_WEIGHT_SUM,
)
from py_engine.kernels.lm_head_loss import IGNORE_LABEL, STATS_PER_ROW, LMHeadLossKernels
from py_engine.kernels.matmul import pack_half
from py_engine.ops.lm_head_loss import lm_head_loss_backward, lm_head_loss_forward, softcap_logits

# f32 against float64 on the same f32 inputs. The loss is a tree sum of per-row online
# logsumexp terms over f32 matmul logits; dh and dW are f32 products of softmax-minus-onehot
# blocks with W and h. Measured on lavapipe over 60 random cases up to 64 x 1000 x 64 (chunks of
# 1 to 128, f16 heads included, their f32 dW too): loss 1.5e-7, dh 2.4e-7, dW 2.6e-7.
BOUNDS = {"loss": 2e-6, "dh": 5e-6, "dw": 5e-6}


@pytest.fixture(scope="module")
def lm(device):
    return run(LMHeadLossKernels.load(device))


def random_case(rng, rows, hidden, vocab, ignored, spread=3.0):
    h = rng.standard_normal((rows, hidden)).astype(np.float32)
    w = (rng.standard_normal((vocab, hidden)) * spread / np.sqrt(hidden)).astype(np.float32)
    labels = rng.integers(0, vocab, rows).astype(np.uint32)
    labels[rng.permutation(rows)[:ignored]] = IGNORE_LABEL
    return h, w, labels


def run_lm(device, lm, h, w, labels, chunk, dloss=1.0, train_head=True, w_half=False,
           dh_init=None, dw_init=None, softcap=None, smoothing=0.0):
    rows, hidden = h.shape
    vocab = w.shape[0]
    metrics = poisoned(device, METRIC_SLOTS)
    stats = poisoned(device, lm.stats_floats(rows))
    scratch = poisoned(device, lm.scratch_floats(rows, min(chunk, vocab)))
    dh = poisoned(device, rows * hidden) if dh_init is None else device.buffer_from(dh_init)
    dw = None
    if train_head:
        dw = poisoned(device, vocab * hidden) if dw_init is None else device.buffer_from(dw_init)
    h_b, labels_b = device.buffer_from(h), device.buffer_from(labels)
    w_b = device.buffer_from(pack_half(w.ravel().tolist()) if w_half else w)
    program = device.program()
    lm.forward(program, h_b, w_b, labels_b, scratch, stats, metrics, rows, hidden, vocab, chunk,
               w_half=w_half, softcap=softcap, smoothing=smoothing)
    lm.backward(program, h_b, w_b, labels_b, scratch, stats, metrics, dh, rows, hidden, vocab,
                chunk, dweight=dw, dloss=dloss, w_half=w_half,
                dh_beta=float(dh_init is not None), dw_beta=float(dw_init is not None),
                softcap=softcap, smoothing=smoothing)
    for b in (metrics, dh) + ((dw,) if dw is not None else ()):
        program.read(b)
    out = [floats(v) for v in run(program.run())]
    m, dh_out = out[0], out[1].reshape(rows, hidden)
    dw_out = out[2].reshape(vocab, hidden) if dw is not None else None
    return m, dh_out, dw_out


def reference(h, w, labels, dloss, softcap=None, smoothing=0.0):
    h64, w64 = h.astype(np.float64), w.astype(np.float64)
    loss, lse, counted = lm_head_loss_forward(h64, w64, labels, softcap=softcap, smoothing=smoothing)
    dh, dw = lm_head_loss_backward(h64, w64, labels, lse, counted, dloss=dloss, softcap=softcap,
                                   smoothing=smoothing)
    logits = softcap_logits(h64 @ w64.T, softcap)
    kept = labels != IGNORE_LABEL
    correct = int((kept & (logits.argmax(axis=1) == labels.astype(np.int64))).sum())
    return loss, counted, correct, dh, dw


@pytest.mark.parametrize("rows, hidden, vocab, chunk, ignored", [
    (1, 4, 3, 2, 0),
    (24, 16, 100, 32, 5),      # 100 = 3 * 32 + 4
    (17, 12, 61, 61, 3),       # a single chunk
    (9, 8, 13, 1, 2),          # one logit per chunk
    (40, 32, 300, 64, 0),      # 300 = 4 * 64 + 44
    (33, 20, 77, 200, 32),     # chunk wider than the vocabulary; one counted token
])
def test_lm_head_loss_matches_numpy(device, lm, rng, rows, hidden, vocab, chunk, ignored):
    check_against_numpy(device, lm, rng, rows, hidden, vocab, chunk, ignored)


# Caps of 1.5 and 2 bend most logits of these draws (|z| / c reaches about 6) without making
# them equal in f32 (a cap of 0.7 saturates tanh to 1 in f32, and the argmax among tied
# logits, hence the correct count, then differed from float64's in 1 of 6 runs).
@pytest.mark.parametrize("rows, hidden, vocab, chunk, ignored, softcap", [
    (24, 16, 100, 32, 5, 2.0),
    (9, 8, 13, 1, 2, 1.5),
    (40, 32, 300, 64, 0, 1.5),
])
def test_final_logit_softcap(device, lm, rng, rows, hidden, vocab, chunk, ignored, softcap):
    """Gemma 2's final logit soft-capping: loss, correct count and gradients; and lm_softcap,
    which caps generation's logits in place."""
    check_against_numpy(device, lm, rng, rows, hidden, vocab, chunk, ignored, softcap)
    z = (rng.standard_normal(rows * vocab) * 5 * softcap).astype(np.float32)
    buffer = device.buffer_from(z)
    program = lm.softcap(device.program(), buffer, z.size, softcap)
    program.read(buffer)
    (got,) = [floats(v) for v in run(program.run())]
    want = softcap_logits(z.astype(np.float64), softcap)
    assert np.abs(got - want).max() <= 2e-7 * softcap, np.abs(got - want).max()
    with pytest.raises(ValueError, match="softcap"):
        lm.softcap(device.program(), buffer, z.size, 0.0)


@pytest.mark.parametrize("rows, hidden, vocab, chunk, ignored, softcap, smoothing", [
    (24, 16, 100, 32, 5, None, 0.1),
    (9, 8, 13, 1, 2, 1.5, 0.3),
    (33, 20, 77, 200, 32, None, 0.05),
])
def test_label_smoothing(device, lm, rng, rows, hidden, vocab, chunk, ignored, softcap, smoothing):
    """Label smoothing (the target (1 - e) z[y] + e mean z): the GPU's loss and gradients are
    the reference's; the reference's (chunked and fused, capped or not) are torch's
    cross_entropy with label_smoothing, autograd's gradients."""
    import torch

    from py_engine.ops.lm_head_loss import lm_head_loss_fused

    check_against_numpy(device, lm, rng, rows, hidden, vocab, chunk, ignored, softcap, smoothing)
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored)
    h64, w64 = h.astype(np.float64), w.astype(np.float64)
    th, tw = torch.tensor(h64, requires_grad=True), torch.tensor(w64, requires_grad=True)
    z = th @ tw.T
    z = z if softcap is None else softcap * torch.tanh(z / softcap)
    target = torch.tensor(np.where(labels == IGNORE_LABEL, -100, labels.astype(np.int64)))
    want = torch.nn.functional.cross_entropy(z, target, ignore_index=-100, label_smoothing=smoothing)
    want.backward()
    loss, lse, counted = lm_head_loss_forward(h64, w64, labels, chunk=chunk, softcap=softcap,
                                              smoothing=smoothing)
    dh, dw = lm_head_loss_backward(h64, w64, labels, lse, counted, chunk=chunk, softcap=softcap,
                                   smoothing=smoothing)
    fused = lm_head_loss_fused(h64, w64, labels, grad_weight=True, softcap=softcap,
                               smoothing=smoothing, block_logits=vocab * 4)
    for got_loss, got_dh, got_dw in ((loss, dh, dw), (fused[0], fused[2], fused[3])):
        assert abs(got_loss - want.item()) <= 1e-12 * abs(want.item())
        assert np.abs(got_dh - th.grad.numpy()).max() <= 1e-12 * np.abs(th.grad.numpy()).max()
        assert np.abs(got_dw - tw.grad.numpy()).max() <= 1e-12 * np.abs(tw.grad.numpy()).max()


def check_against_numpy(device, lm, rng, rows, hidden, vocab, chunk, ignored, softcap=None,
                        smoothing=0.0):
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored)
    dloss = float(np.float32(rng.uniform(0.5, 2.0)))
    m, dh, dw = run_lm(device, lm, h, w, labels, chunk, dloss, softcap=softcap, smoothing=smoothing)
    loss, counted, correct, ref_dh, ref_dw = reference(h, w, labels, dloss, softcap, smoothing)
    # loss = logsumexp - label logit: when the label dominates, the two nearly cancel, so the
    # error is bounded relative to the logits' magnitude, not to the (possibly tiny) loss.
    scale = max(abs(loss), np.abs(h.astype(np.float64) @ w.astype(np.float64).T).max())
    assert abs(m[METRIC_LOSS] - loss) <= BOUNDS["loss"] * scale, (m[METRIC_LOSS], loss)
    assert m[METRIC_COUNTED] == counted == rows - ignored
    assert m[METRIC_WEIGHT_SUM] == counted
    assert m[METRIC_CORRECT] == correct
    assert np.isnan(m[METRIC_GRAD_NORM:]).all()        # the slots of other kernels untouched
    # p - 1 on a dominant label cancels in f32, so the gradients' error is bounded relative to
    # what it is computed from (g = dloss / counted times |W| or |h|) when they are tiny.
    g = dloss / max(counted, 1)
    kept = labels != IGNORE_LABEL
    for got, ref, operand, bound in ((dh, ref_dh, w, BOUNDS["dh"]), (dw, ref_dw, h[kept], BOUNDS["dw"])):
        floor = g * np.linalg.norm(operand.astype(np.float64)) * np.sqrt(max(counted, 1))
        err = np.linalg.norm(np.asarray(got, np.float64).ravel() - np.ravel(ref))
        assert err <= bound * max(np.linalg.norm(ref), floor), (err, np.linalg.norm(ref), floor)


def test_large_logits_and_confident_labels(device, lm, rng):
    """Logits in the tens, labels mostly on the argmax: the running max keeps exp in range and
    the accuracy count sees the first argmax across chunks."""
    rows, hidden, vocab, chunk = 20, 8, 50, 16
    h, w, labels = random_case(rng, rows, hidden, vocab, 2, spread=20.0)
    logits = h.astype(np.float64) @ w.astype(np.float64).T
    kept = labels != IGNORE_LABEL
    labels[kept] = logits.argmax(axis=1)[kept].astype(np.uint32)
    labels[np.flatnonzero(kept)[:3]] = (labels[np.flatnonzero(kept)[:3]] + 1) % vocab
    m, dh, dw = run_lm(device, lm, h, w, labels, chunk)
    loss, counted, correct, ref_dh, ref_dw = reference(h, w, labels, 1.0)
    assert m[METRIC_CORRECT] == correct == counted - 3
    # confident rows: loss terms ~exp(-margin), so the mean is bounded absolutely by the f32
    # logits' rounding, not relatively; p - 1 on the label cancels in f32. Measured over 30
    # draws: loss 1.1e-7, dh 1.2e-6, dW 1.4e-6.
    assert abs(m[METRIC_LOSS] - loss) <= 2e-6 * max(1.0, loss)
    assert rel_error(dh, ref_dh) <= 2e-5
    assert rel_error(dw, ref_dw) <= 2e-5


def test_all_ignored_gives_zero_loss_and_gradients(device, lm, rng):
    h, w, labels = random_case(rng, 10, 8, 30, 10)
    m, dh, dw = run_lm(device, lm, h, w, labels, chunk=8)
    assert m[METRIC_LOSS] == 0 and m[METRIC_COUNTED] == 0 and m[METRIC_CORRECT] == 0
    assert not dh.any() and not dw.any()       # zeros, not NaN (poison) nor NaN from 0 / 0


def test_accumulates_and_frozen_head(device, lm, rng):
    """beta = 1 adds into dh and dW (micro-batches, a tied embedding's gradient); dweight=None
    leaves the head alone."""
    rows, hidden, vocab, chunk = 12, 8, 37, 10
    h, w, labels = random_case(rng, rows, hidden, vocab, 4)
    dh0 = rng.standard_normal((rows, hidden)).astype(np.float32)
    dw0 = rng.standard_normal((vocab, hidden)).astype(np.float32)
    _, dh, dw = run_lm(device, lm, h, w, labels, chunk, dh_init=dh0, dw_init=dw0)
    _, _, _, ref_dh, ref_dw = reference(h, w, labels, 1.0)
    assert rel_error(dh, dh0 + ref_dh) <= BOUNDS["dh"]
    assert rel_error(dw, dw0 + ref_dw) <= BOUNDS["dw"]
    m, dh, dw = run_lm(device, lm, h, w, labels, chunk, train_head=False)
    assert dw is None and rel_error(dh, ref_dh) <= BOUNDS["dh"]


@pytest.mark.parametrize("accumulate_dh", [False, True])
def test_weight_gradient_accumulates_on_its_own(device, lm, rng, accumulate_dh):
    """dw_beta and dh_beta are independent: a tied embedding's gradient already sits in dW while
    dh starts afresh (dh poisoned), and the other way round (dW poisoned). Every chunk, the
    narrower last one included, adds exactly its own rows of dW."""
    rows, hidden, vocab, chunk = 19, 12, 53, 16          # 53 = 3 * 16 + 5
    h, w, labels = random_case(rng, rows, hidden, vocab, 3)
    dloss = float(np.float32(rng.uniform(0.5, 2.0)))
    init = rng.standard_normal((rows, hidden)).astype(np.float32)
    dw0 = rng.standard_normal((vocab, hidden)).astype(np.float32)
    if accumulate_dh:
        _, dh, dw = run_lm(device, lm, h, w, labels, chunk, dloss, dh_init=init)
    else:
        _, dh, dw = run_lm(device, lm, h, w, labels, chunk, dloss, dw_init=dw0)
    _, _, _, ref_dh, ref_dw = reference(h, w, labels, dloss)
    assert rel_error(dh, ref_dh + (init if accumulate_dh else 0)) <= BOUNDS["dh"]
    expected_dw = ref_dw if accumulate_dh else dw0 + ref_dw
    assert rel_error(dw, expected_dw) <= BOUNDS["dw"]
    # row by row as well: an unwritten or doubly added chunk row fails even if the total is close
    row_err = np.linalg.norm(dw - expected_dw, axis=1)
    assert (row_err <= BOUNDS["dw"] * np.linalg.norm(expected_dw, axis=1).max()).all()


def test_ignored_rows_add_nothing_to_weight_gradient(device, lm, rng):
    """Ignored rows hold arbitrary (here huge) hidden states: their dz is zero, so they add
    nothing to dW; the counted rows alone give dW."""
    rows, hidden, vocab, chunk = 16, 8, 45, 16
    h, w, labels = random_case(rng, rows, hidden, vocab, 6)
    ignored = labels == IGNORE_LABEL
    h[ignored] *= 1e4
    _, _, dw = run_lm(device, lm, h, w, labels, chunk)
    _, _, _, _, ref_dw = reference(h, w, labels, 1.0)
    _, _, _, _, ref_kept = reference(h[~ignored], w, labels[~ignored], 1.0)
    np.testing.assert_allclose(ref_dw, ref_kept, rtol=1e-12, atol=1e-15)
    assert rel_error(dw, ref_dw) <= BOUNDS["dw"]


@pytest.mark.parametrize("vocab, chunk", [(70, 16), (33, 33)])
def test_f16_head_weight(device, lm, rng, vocab, chunk):
    """An f16 head (odd chunk offsets land mid-word in the packed pairs) with an f32 dW: checked
    against the reference on the f16-rounded weight, so only f32 arithmetic error remains."""
    rows, hidden = 15, 9
    h, w, labels = random_case(rng, rows, hidden, vocab, 3)
    w16 = w.astype(np.float16).astype(np.float32)
    m, dh, dw = run_lm(device, lm, h, w, labels, chunk, w_half=True)
    loss, counted, correct, ref_dh, ref_dw = reference(h, w16, labels, 1.0)
    assert rel_error(m[METRIC_LOSS], loss) <= BOUNDS["loss"]
    assert m[METRIC_COUNTED] == counted and m[METRIC_CORRECT] == correct
    assert rel_error(dh, ref_dh) <= BOUNDS["dh"]
    assert rel_error(dw, ref_dw) <= BOUNDS["dw"]
    _, dh_frozen, dw = run_lm(device, lm, h, w, labels, chunk, train_head=False, w_half=True)
    assert dw is None and rel_error(dh_frozen, ref_dh) <= BOUNDS["dh"]


def test_rejects_bad_arguments(device, lm):
    rows, hidden, vocab = 4, 4, 10
    buf = lambda n: device.create_buffer(4 * n)  # noqa: E731
    args = (buf(rows * hidden), buf(vocab * hidden), buf(rows), buf(rows * 4),
            buf(rows * STATS_PER_ROW), buf(METRIC_SLOTS))
    with pytest.raises(ValueError, match="scratch"):
        lm.forward(device.program(), *args, rows, hidden, vocab, chunk=8)
    with pytest.raises(ValueError, match=">= 1"):
        lm.forward(device.program(), *args, rows, hidden, vocab, chunk=0)
    with pytest.raises(ValueError, match="dweight"):
        lm.backward(device.program(), *args, buf(rows * hidden), rows, hidden, vocab, chunk=4,
                    dweight=buf(vocab * hidden - 1))
    with pytest.raises(ValueError, match="its own buffer"):
        lm.backward(device.program(), *args, buf(rows * hidden), rows, hidden, vocab, chunk=4,
                    dweight=args[1])


@pytest.mark.parametrize("rows, hidden, vocab, chunk, accumulate", [
    (24, 16, 100, 32, False), (9, 8, 37, 37, True), (5, 4, 13, 1, True),
])
def test_head_bias(device, lm, rows, hidden, vocab, chunk, accumulate):
    """A head with a bias (Phi-2): the chunks' logits get their slice of it; dbias (poisoned, or
    accumulated into) gets the column sums of the gradient, as the NumPy reference computes."""
    rng = np.random.default_rng()
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored=2)
    bias = rng.standard_normal(vocab).astype(np.float32)
    db_init = rng.standard_normal(vocab).astype(np.float32) if accumulate else None
    metrics = poisoned(device, METRIC_SLOTS)
    stats = poisoned(device, lm.stats_floats(rows))
    scratch = poisoned(device, lm.scratch_floats(rows, min(chunk, vocab)))
    dh, dw = poisoned(device, rows * hidden), poisoned(device, vocab * hidden)
    db = poisoned(device, vocab) if db_init is None else device.buffer_from(db_init)
    h_b, w_b, labels_b, bias_b = (device.buffer_from(a) for a in (h, w, labels, bias))
    program = device.program()
    lm.forward(program, h_b, w_b, labels_b, scratch, stats, metrics, rows, hidden, vocab, chunk,
               bias=bias_b)
    lm.backward(program, h_b, w_b, labels_b, scratch, stats, metrics, dh, rows, hidden, vocab,
                chunk, dweight=dw, dloss=0.5, bias=bias_b, dbias=db, db_beta=float(accumulate))
    for b in (metrics, dh, dw, db):
        program.read(b)
    m, dh_out, dw_out, db_out = [floats(v) for v in run(program.run())]

    h64, w64, b64 = h.astype(np.float64), w.astype(np.float64), bias.astype(np.float64)
    loss, lse, counted = lm_head_loss_forward(h64, w64, labels, bias=b64)
    want_db = np.zeros(vocab) if db_init is None else db_init.astype(np.float64)
    want_dh, want_dw = lm_head_loss_backward(h64, w64, labels, lse, counted, dloss=0.5, bias=b64,
                                             dbias=want_db)
    assert rel_error(np.float64(m[METRIC_LOSS]), loss) <= BOUNDS["loss"]
    assert rel_error(dh_out, want_dh.ravel()) <= BOUNDS["dh"]
    assert rel_error(dw_out, want_dw.ravel()) <= BOUNDS["dw"]
    assert rel_error(db_out, want_db) <= BOUNDS["dw"]


@pytest.mark.parametrize("rows, hidden, vocab, chunk, r, softcap, with_bias", [
    (24, 16, 100, 32, 4, None, False),     # 100 = 3 * 32 + 4
    (9, 8, 37, 37, 1, 1.5, True),          # a single chunk, rank 1
    (5, 4, 13, 1, 3, None, True),          # one logit per chunk
])
def test_low_rank_term(device, lm, rows, hidden, vocab, chunk, r, softcap, with_bias):
    """A LoRA on the head: each chunk's logits get scaling * u B_chunk^T; du (poisoned) and dB
    (accumulated into) against the NumPy fused pass in float64."""
    from py_engine.ops.lm_head_loss import lm_head_loss_fused
    rng = np.random.default_rng()
    h, w, labels = random_case(rng, rows, hidden, vocab, ignored=2)
    u = rng.standard_normal((rows, r)).astype(np.float32)
    b = (rng.standard_normal((vocab, r)) / np.sqrt(r)).astype(np.float32)
    db_init = rng.standard_normal((vocab, r)).astype(np.float32)
    bias = rng.standard_normal(vocab).astype(np.float32) if with_bias else None
    scaling = float(np.float32(rng.uniform(0.5, 3.0)))
    metrics = poisoned(device, METRIC_SLOTS)
    stats = poisoned(device, lm.stats_floats(rows))
    scratch = poisoned(device, lm.scratch_floats(rows, min(chunk, vocab)))
    dh, du = poisoned(device, rows * hidden), poisoned(device, rows * r)
    db = device.buffer_from(db_init)
    h_b, w_b, labels_b, u_b, b_b = (device.buffer_from(a) for a in (h, w, labels, u, b))
    bias_b = device.buffer_from(bias) if with_bias else None
    low = (u_b, b_b, r, scaling)
    program = device.program()
    lm.forward(program, h_b, w_b, labels_b, scratch, stats, metrics, rows, hidden, vocab, chunk,
               bias=bias_b, softcap=softcap, low_rank=low)
    lm.backward(program, h_b, w_b, labels_b, scratch, stats, metrics, dh, rows, hidden, vocab,
                chunk, dloss=0.75, bias=bias_b, softcap=softcap, low_rank=low, du=du, dlow_b=db)
    for buffer in (metrics, dh, du, db):
        program.read(buffer)
    m, dh_out, du_out, db_out = [floats(v) for v in run(program.run())]

    f64 = lambda a: None if a is None else a.astype(np.float64)
    want_db = f64(db_init)
    loss, counted, want_dh, _, want_du = lm_head_loss_fused(
        f64(h), f64(w), labels, dloss=0.75, bias=f64(bias), softcap=softcap,
        low_rank=(f64(u), f64(b), scaling), dlow_rank=want_db)
    assert m[METRIC_COUNTED] == counted == rows - 2
    assert rel_error(np.float64(m[METRIC_LOSS]), loss) <= BOUNDS["loss"]
    assert rel_error(dh_out, want_dh.ravel()) <= BOUNDS["dh"]
    assert rel_error(du_out, want_du.ravel()) <= BOUNDS["dh"]
    assert rel_error(db_out, want_db.ravel()) <= BOUNDS["dw"]
    with pytest.raises(ValueError, match="pass low_rank"):
        lm.backward(device.program(), h_b, w_b, labels_b, scratch, stats, metrics, dh, rows,
                    hidden, vocab, chunk, du=du)
