"""Cross-entropy kernels (shaders/cross_entropy.wgsl) on wgpu-native against the NumPy
reference in float64: loss, counts and denominator in the metrics buffer, per-row
predictions, dlogits; class weights, label smoothing and ignored rows."""

import numpy as np
import pytest
from conftest import floats, rel_error, run

from py_engine.gpu.selfcheck import NAN_BYTES, poisoned
from py_engine.kernels.cross_entropy import (
    IGNORE_LABEL, METRIC_CLIP_SCALE, METRIC_CORRECT, METRIC_COUNTED, METRIC_GRAD_NORM,
    METRIC_LOSS, METRIC_SLOTS, METRIC_WEIGHT_SUM, CrossEntropyKernels, create_metrics,
    decode_metrics,
)
from py_engine.ops.cross_entropy import cross_entropy_backward, cross_entropy_forward

# f32 against float64: the loss is a tree sum of per-row logsumexp terms; dlogits are
# softmax probabilities times per-row coefficients.
BOUNDS = {"loss": 2e-6, "dlogits": 2e-6}


@pytest.fixture(scope="module", params=[256, 32])
def ce(request, device):
    return run(CrossEntropyKernels.load(device, workgroup=request.param))


def random_batch(rows, classes, ignored=0, weighted=False, spread=3.0):
    rng = np.random.default_rng()
    logits = (rng.standard_normal((rows, classes)) * spread).astype(np.float32)
    labels = rng.integers(0, classes, rows).astype(np.uint32)
    labels[rng.permutation(rows)[:ignored]] = IGNORE_LABEL
    weights = rng.uniform(0.2, 3.0, classes).astype(np.float32) if weighted else None
    return logits, labels, weights


def run_ce(device, ce, logits, labels, weights, smoothing, dloss):
    rows, classes = logits.shape
    metrics = poisoned(device, METRIC_SLOTS)
    predictions, dlogits = poisoned(device, rows), poisoned(device, rows * classes)
    logits_b, labels_b = device.buffer_from(logits), device.buffer_from(labels)
    weights_b = None if weights is None else device.buffer_from(weights)
    program = device.program()
    ce.forward(program, logits_b, labels_b, metrics, predictions, rows, classes, weights_b,
               smoothing)
    ce.backward(program, logits_b, labels_b, metrics, dlogits, rows, classes, weights_b,
                smoothing, dloss=dloss)
    for b in (metrics, predictions, dlogits):
        program.read(b)
    m, pred, dl = run(program.run())
    return floats(m), np.frombuffer(bytes(pred), np.uint32), floats(dl).reshape(rows, classes)


@pytest.mark.parametrize("rows, classes, weighted, smoothing, ignored", [
    (1, 2, False, 0.0, 0), (16, 2, False, 0.0, 0), (32, 5, True, 0.0, 3), (32, 7, False, 0.1, 0),
    (600, 6, True, 0.25, 50), (8, 300, True, 0.9, 1),
])
def test_cross_entropy_matches_numpy(device, ce, rows, classes, weighted, smoothing, ignored):
    logits, labels, weights = random_batch(rows, classes, ignored, weighted)
    dloss = float(np.float32(np.random.default_rng().uniform(0.5, 2.0)))
    m, pred, dlogits = run_ce(device, ce, logits, labels, weights, smoothing, dloss)

    x = logits.astype(np.float64)
    w = None if weights is None else weights.astype(np.float64)
    loss, correct, weight_sum = cross_entropy_forward(x, labels, w, smoothing)
    ref_dlogits = cross_entropy_backward(x, labels, weight_sum, w, smoothing, dloss=dloss)
    counted = labels != IGNORE_LABEL
    assert rel_error(m[METRIC_LOSS], loss) <= BOUNDS["loss"]
    assert m[METRIC_CORRECT] == correct.sum()
    assert m[METRIC_COUNTED] == counted.sum()
    assert m[METRIC_WEIGHT_SUM] == pytest.approx(weight_sum, rel=1e-6)
    assert np.isnan(m[METRIC_GRAD_NORM:]).all()        # the slots of other kernels untouched
    np.testing.assert_array_equal(pred, logits.argmax(axis=1))
    assert rel_error(dlogits, ref_dlogits) <= BOUNDS["dlogits"]


def test_confident_rows_keep_relative_precision(device, ce):
    """Labels on the argmax with large margins: losses ~1e-4..1e-8, where log(sum) and
    1 / sum - 1 in f32 would keep only a few digits."""
    rows, classes = 40, 4
    logits, _, weights = random_batch(rows, classes, weighted=True, spread=6.0)
    labels = logits.argmax(axis=1).astype(np.uint32)
    logits[np.arange(rows), labels] += 12.0
    m, _, dlogits = run_ce(device, ce, logits, labels, weights, 0.0, 1.0)
    x, w = logits.astype(np.float64), weights.astype(np.float64)
    loss, correct, weight_sum = cross_entropy_forward(x, labels, w)
    assert loss < 1e-4
    assert rel_error(m[METRIC_LOSS], loss) <= BOUNDS["loss"]
    assert rel_error(dlogits, cross_entropy_backward(x, labels, weight_sum, w)) <= BOUNDS["dlogits"]
    assert m[METRIC_CORRECT] == rows


def test_argmax_ties_pick_the_first_class(device, ce):
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    labels = np.array([2, 0], np.uint32)
    m, pred, _ = run_ce(device, ce, logits, labels, None, 0.0, 1.0)
    assert pred.tolist() == [1, 0] and m[METRIC_CORRECT] == 1


def test_all_rows_ignored_gives_zero_loss_and_gradient(device, ce):
    logits, labels, _ = random_batch(5, 3, ignored=5)
    m, _, dlogits = run_ce(device, ce, logits, labels, None, 0.1, 1.0)
    assert m[METRIC_LOSS] == 0 and m[METRIC_COUNTED] == 0 and m[METRIC_WEIGHT_SUM] == 0
    assert not dlogits.any()


def test_metrics_buffer_layout(device):
    metrics = create_metrics(device)
    values = decode_metrics(run(device.read(metrics)))
    assert values["clip_scale"] == 1.0 and values["loss"] == 0.0 and values["accuracy"] == 0.0
    assert METRIC_CLIP_SCALE == METRIC_GRAD_NORM + 1      # grad_norm_finish writes both
    raw = np.arange(METRIC_SLOTS, dtype=np.float32)
    raw[METRIC_COUNTED] = 4
    decoded = decode_metrics(raw.tobytes())
    assert decoded["correct"] == METRIC_CORRECT and decoded["accuracy"] == METRIC_CORRECT / 4


def test_bad_arguments_raise(device, ce):
    logits = device.buffer_from(NAN_BYTES * 6)
    labels = device.buffer_from(np.zeros(3, np.uint32))
    metrics, out = create_metrics(device), device.create_buffer(4 * 6)
    program = device.program()
    with pytest.raises(ValueError, match="label_smoothing"):
        ce.forward(program, logits, labels, metrics, out, 3, 2, label_smoothing=1.0)
    with pytest.raises(ValueError, match="logits"):
        ce.forward(program, logits, labels, metrics, out, 3, 3)
