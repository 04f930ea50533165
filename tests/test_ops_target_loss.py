"""Target losses (py_engine.ops.target_loss: a multi-label head's BCE with logits, a regression
head's MSE) against torch autograd in float64, with rows left out (padded) as the labels
buffer marks them, and the f32 words the targets travel in."""

import numpy as np
import pytest
import torch

from py_engine.labels import IGNORE_LABEL, float_words
from py_engine.ops.target_loss import target_loss_backward, target_loss_forward

LOSSES = {"bce": torch.nn.BCEWithLogitsLoss(), "mse": torch.nn.MSELoss()}


def random_targets(rng, rows, classes, kind, ignored=0):
    """(targets as f32 values in float64, their words, the rows kept)."""
    if kind == "bce":       # hard labels, and soft ones as BCEWithLogitsLoss takes them
        targets = rng.integers(0, 2, (rows, classes)).astype(np.float64)
        targets[rng.random((rows, classes)) < 0.2] = rng.uniform(0, 1)
    else:
        targets = rng.standard_normal((rows, classes)) * 2
    targets = targets.astype(np.float32).astype(np.float64)
    kept = np.ones(rows, bool)
    kept[rng.permutation(rows)[:ignored]] = False
    words = np.array([float_words(row) if keep else [IGNORE_LABEL] * classes
                      for row, keep in zip(targets, kept)], np.uint32)
    return targets, words, kept


@pytest.mark.parametrize("kind", ["bce", "mse"])
@pytest.mark.parametrize("rows, classes, ignored", [(1, 1, 0), (16, 1, 3), (16, 5, 0),
                                                    (32, 7, 9), (8, 40, 1)])
def test_target_loss_matches_torch(kind, rows, classes, ignored):
    rng = np.random.default_rng()
    logits = rng.standard_normal((rows, classes)) * 4
    targets, words, kept = random_targets(rng, rows, classes, kind, ignored)
    dloss = rng.uniform(0.5, 2.0)

    loss, correct, counted, denominator = target_loss_forward(logits, words, kind)
    dlogits = target_loss_backward(logits, words, denominator, kind, dloss=dloss)

    tl = torch.tensor(logits[kept], requires_grad=True)
    t_loss = LOSSES[kind](tl, torch.tensor(targets[kept]))
    (t_loss * dloss).backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    np.testing.assert_allclose(dlogits[kept], tl.grad.numpy(), rtol=1e-10, atol=1e-15)
    assert not dlogits[~kept].any()
    assert denominator == kept.sum() * classes
    np.testing.assert_array_equal(counted, kept)
    if kind == "bce":
        whole = ((logits > 0) == (targets > 0.5)).all(axis=1)
        np.testing.assert_array_equal(correct, kept & whole)
    else:
        assert not correct.any()


def test_a_regression_head_of_one_row_is_transformers_squeezed_mse():
    """transformers' regression loss with one label: MSELoss()(logits.squeeze(), labels.squeeze())."""
    rng = np.random.default_rng()
    logits = rng.standard_normal((9, 1))
    targets = rng.standard_normal(9).astype(np.float32).astype(np.float64)
    tl = torch.tensor(logits, requires_grad=True)
    want = torch.nn.MSELoss()(tl.squeeze(), torch.tensor(targets).squeeze())
    want.backward()
    words = np.array(float_words(targets), np.uint32).reshape(9, 1)
    loss, _, _, denominator = target_loss_forward(logits, words, "mse")
    assert loss == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(target_loss_backward(logits, words, denominator, "mse"),
                               tl.grad.numpy(), rtol=1e-10)


def test_nothing_counted_gives_zero_loss_and_gradient():
    logits = np.random.default_rng().standard_normal((3, 4))
    words = np.full((3, 4), IGNORE_LABEL, np.uint32)
    for kind in ("bce", "mse"):
        loss, correct, counted, denominator = target_loss_forward(logits, words, kind)
        assert loss == 0 and denominator == 0 and not counted.any() and not correct.any()
        assert not target_loss_backward(logits, words, denominator, kind).any()


def test_confident_logits_keep_relative_precision():
    """BCE of logits far on their target's side: losses ~1e-9, which log(1 + exp(-|z|)) keeps."""
    logits = np.array([[20.0, -25.0, 30.0]])
    words = np.array([float_words([1.0, 0.0, 1.0])], np.uint32)
    loss, *_ = target_loss_forward(logits, words, "bce")
    want = torch.nn.BCEWithLogitsLoss()(torch.tensor(logits), torch.tensor([[1.0, 0.0, 1.0]],
                                                                           dtype=torch.float64))
    assert loss == pytest.approx(want.item(), rel=1e-12) and 0 < loss < 1e-8


def test_float_words_refuse_what_a_target_cannot_be():
    assert float_words([1.0, None, -2.5]) == [0x3F800000, IGNORE_LABEL, 0xC0200000]
    for bad in (float("nan"), float("inf"), 1e39):
        with pytest.raises(ValueError, match="finite 32-bit float"):
            float_words([bad])
    with pytest.raises(ValueError, match="unknown target loss"):
        target_loss_forward(np.zeros((1, 1)), np.zeros((1, 1), np.uint32), "hinge")
