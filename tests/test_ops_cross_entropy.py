"""Cross-entropy reference (py_engine.ops.cross_entropy) against torch autograd in float64:
class weights, label smoothing and ignored rows, with torch's weighted-mean denominator."""

import numpy as np
import pytest
import torch

from py_engine.ops.cross_entropy import IGNORE, cross_entropy_backward, cross_entropy_forward


def torch_reference(logits, labels, weights, smoothing, dloss):
    tl = torch.tensor(logits, requires_grad=True)
    tw = None if weights is None else torch.tensor(weights)
    loss = torch.nn.functional.cross_entropy(
        tl, torch.tensor(labels), weight=tw, label_smoothing=smoothing, ignore_index=-100)
    (loss * dloss).backward()
    return loss.item(), tl.grad.numpy()


@pytest.mark.parametrize("rows, classes, weighted, smoothing, ignored", [
    (1, 2, False, 0.0, 0),
    (16, 2, False, 0.0, 0),
    (16, 5, True, 0.0, 0),
    (16, 5, False, 0.1, 0),
    (32, 7, True, 0.25, 0),
    (32, 7, True, 0.25, 9),
    (24, 3, False, 0.0, 5),
    (8, 40, True, 0.9, 3),
])
def test_cross_entropy_matches_torch(rows, classes, weighted, smoothing, ignored):
    rng = np.random.default_rng()
    logits = rng.standard_normal((rows, classes)) * 3
    labels = rng.integers(0, classes, rows)
    labels[rng.permutation(rows)[:ignored]] = -100
    weights = rng.uniform(0.2, 3.0, classes) if weighted else None
    dloss = rng.uniform(0.5, 2.0)

    loss, correct, weight_sum = cross_entropy_forward(logits, labels, weights, smoothing,
                                                      ignore_index=-100)
    dlogits = cross_entropy_backward(logits, labels, weight_sum, weights, smoothing,
                                     ignore_index=-100, dloss=dloss)
    t_loss, t_grad = torch_reference(logits, labels, weights, smoothing, dloss)
    assert loss == pytest.approx(t_loss, rel=1e-12)
    np.testing.assert_allclose(dlogits, t_grad, rtol=1e-10, atol=1e-14)
    counted = labels != -100
    np.testing.assert_array_equal(correct, counted & (logits.argmax(1) == labels))
    w = np.ones(classes) if weights is None else weights
    assert weight_sum == pytest.approx(w[labels[counted]].sum(), rel=1e-14)


def test_ignore_label_is_u32_all_ones():
    rng = np.random.default_rng()
    logits = rng.standard_normal((6, 4))
    labels = np.array([1, IGNORE, 3, 0, IGNORE, 2], dtype=np.uint32)
    loss, correct, weight_sum = cross_entropy_forward(logits, labels)
    keep = labels != IGNORE
    ref, _ = cross_entropy_forward(logits[keep], labels[keep])[:2]
    assert loss == pytest.approx(ref, rel=1e-14) and weight_sum == 4
    assert not correct[~keep].any()


def test_all_rows_ignored_gives_zero_not_nan():
    logits = np.random.default_rng().standard_normal((3, 4))
    labels = np.full(3, IGNORE, dtype=np.uint32)
    loss, correct, weight_sum = cross_entropy_forward(logits, labels, label_smoothing=0.1)
    assert loss == 0.0 and weight_sum == 0 and not correct.any()
    assert not cross_entropy_backward(logits, labels, weight_sum).any()


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="labels must lie"):
        cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]))
