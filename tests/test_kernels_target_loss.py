"""Target loss kernels (shaders/target_loss.wgsl: a multi-label head's BCE with logits, a
regression head's MSE) on wgpu-native against the NumPy reference in float64: loss, counts and
denominator in the metrics buffer, dlogits, padded rows."""

import numpy as np
import pytest
from conftest import floats, rel_error, run
from test_ops_target_loss import random_targets

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.cross_entropy import (
    METRIC_CORRECT, METRIC_COUNTED, METRIC_GRAD_NORM, METRIC_LOSS, METRIC_SLOTS,
    METRIC_WEIGHT_SUM,
)
from py_engine.kernels.target_loss import TargetLossKernels
from py_engine.ops.target_loss import target_loss_backward, target_loss_forward

# f32 against float64: the loss is a tree sum of per-logit terms (each to a few ulps);
# dlogits are sigmoid(z) - y or 2 (z - y) times one scale.
BOUNDS = {"loss": 2e-6, "dlogits": 2e-6}


@pytest.fixture(scope="module", params=[256, 32])
def tl(request, device):
    return run(TargetLossKernels.load(device, workgroup=request.param))


def run_tl(device, tl, logits, words, kind, dloss):
    rows, classes = logits.shape
    metrics, dlogits = poisoned(device, METRIC_SLOTS), poisoned(device, rows * classes)
    logits_b, words_b = device.buffer_from(logits), device.buffer_from(words)
    program = device.program()
    tl.forward(program, logits_b, words_b, metrics, rows, classes, kind)
    tl.backward(program, logits_b, words_b, metrics, dlogits, rows, classes, kind, dloss=dloss)
    program.read(metrics)
    program.read(dlogits)
    m, dl = run(program.run())
    return floats(m), floats(dl).reshape(rows, classes)


@pytest.mark.parametrize("kind", ["bce", "mse"])
@pytest.mark.parametrize("rows, classes, ignored, spread", [
    (1, 1, 0, 3.0), (16, 1, 4, 3.0), (32, 5, 3, 3.0), (600, 6, 50, 3.0), (8, 300, 1, 3.0),
    (40, 4, 0, 12.0),       # confident logits: BCE terms down to ~1e-6
])
def test_target_loss_matches_numpy(device, tl, kind, rows, classes, ignored, spread):
    rng = np.random.default_rng()
    logits = (rng.standard_normal((rows, classes)) * spread).astype(np.float32)
    _, words, kept = random_targets(rng, rows, classes, kind, ignored)
    dloss = float(np.float32(rng.uniform(0.5, 2.0)))
    m, dlogits = run_tl(device, tl, logits, words, kind, dloss)

    x = logits.astype(np.float64)
    loss, correct, counted, denominator = target_loss_forward(x, words, kind)
    ref = target_loss_backward(x, words, denominator, kind, dloss=dloss)
    assert rel_error(m[METRIC_LOSS], loss) <= BOUNDS["loss"]
    assert m[METRIC_CORRECT] == correct.sum()
    assert m[METRIC_COUNTED] == counted.sum() == kept.sum()
    assert m[METRIC_WEIGHT_SUM] == denominator
    assert np.isnan(m[METRIC_GRAD_NORM:]).all()        # the slots of other kernels untouched
    assert rel_error(dlogits, ref) <= BOUNDS["dlogits"]
    assert not dlogits[~kept].any()


def test_nothing_counted_gives_zero(device, tl):
    logits = np.random.default_rng().standard_normal((5, 3)).astype(np.float32)
    words = np.full((5, 3), 0xFFFFFFFF, np.uint32)
    for kind in ("bce", "mse"):
        m, dlogits = run_tl(device, tl, logits, words, kind, 1.0)
        assert m[METRIC_LOSS] == 0 and m[METRIC_COUNTED] == 0 and m[METRIC_WEIGHT_SUM] == 0
        assert not dlogits.any()
