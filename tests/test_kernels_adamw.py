"""AdamW kernel (shaders/adamw.wgsl) on wgpu-native against the NumPy reference over several
replays of one recorded program, and one whole optimizer step (cross-entropy, gradient norm,
clipping, AdamW) against torch, with loss, accuracy and norm read back in one read."""

import numpy as np
import pytest
import torch
from conftest import floats, rel_error, run

from py_engine.kernels.adamw import HYPER_BYTES, AdamWKernels, hyper_values, pack_hyper
from py_engine.kernels.cross_entropy import (
    METRIC_CLIP_SCALE, METRICS_BYTES, CrossEntropyKernels, create_metrics, decode_metrics,
)
from py_engine.kernels.grad_norm import GradNormKernels
from py_engine.ops.adamw import adamw_coefficients, adamw_step

# f32 state against a float64 reference run from the same start, after each of several steps.
BOUNDS = {"param": 1e-6, "m": 1e-6, "v": 1e-6}


@pytest.fixture(scope="module")
def adamw(device):
    return run(AdamWKernels.load(device))


SCHEDULE = [  # (lr, grad scale) per step
    (1e-3, 1.0), (3e-3, 0.25), (2e-3, 1.0), (5e-4, 0.7),
]


@pytest.mark.parametrize("n, weight_decay, betas, eps", [
    (1, 0.01, (0.9, 0.999), 1e-8), (4099, 0.01, (0.9, 0.999), 1e-8),
    (70_000, 0.0, (0.8, 0.99), 1e-6),
    (1000, 0.1, (0.3, 0.9), 1e-3),      # beta1 < 0.5: torch's lerp takes its other branch
])
def test_adamw_replays_match_numpy(device, adamw, n, weight_decay, betas, eps):
    rng = np.random.default_rng()
    param0 = (rng.standard_normal(n) * 0.01).astype(np.float32)
    param, grad = device.buffer_from(param0), device.create_buffer(4 * n)
    m, v = device.create_buffer(4 * n), device.create_buffer(4 * n)
    scale = create_metrics(device)
    hyper = adamw.hyper_buffer()
    program = device.program()
    adamw.step(program, param, grad, m, v, hyper, scale)
    for b in (param, m, v):
        program.read(b)

    ref = [param0.astype(np.float64), np.zeros(n), np.zeros(n)]
    for t, (lr, grad_scale) in enumerate(SCHEDULE, start=1):
        g = (rng.standard_normal(n) * 10 ** rng.uniform(-2, 1)).astype(np.float32)
        grad.write(g)
        scale.write(np.float32(grad_scale).tobytes(), offset=4 * METRIC_CLIP_SCALE)
        hyper.write(pack_hyper(lr, *betas, eps, weight_decay, step=t))
        got = [floats(x) for x in run(program.run())]
        previous, previous_m = ref[0], ref[1]
        ref = adamw_step(*ref[:1], g.astype(np.float64), *ref[1:], lr, *betas, eps, weight_decay,
                         t, grad_scale=float(np.float32(grad_scale)))
        for name, out, expected in zip(("param", "m", "v"), got, ref):
            err = rel_error(out, expected)
            if name == "param":
                # Relative to the operands' scale: a step that nearly cancels the parameter (one
                # element, n=1) would otherwise divide a rounding error by almost nothing.
                magnitude = np.linalg.norm(expected) + np.linalg.norm(expected - previous)
                err = np.linalg.norm(np.asarray(out, np.float64) - expected) / magnitude
            if name == "m":
                # m = beta1 m + (1 - beta1) g cancels when g's sign is opposite to m's (one element,
                # n=1, from the second step): its rounding is that of its terms, so it is measured
                # against their size.
                terms = betas[0] * np.abs(previous_m) + (1 - betas[0]) * np.abs(
                    g.astype(np.float64) * float(np.float32(grad_scale)))
                err = np.linalg.norm(np.asarray(out, np.float64) - expected) / np.linalg.norm(terms)
            assert err <= BOUNDS[name], (t, name, err)
        ref = [x.astype(np.float32).astype(np.float64) for x in got]   # continue from the GPU state


def test_adamw_updates_only_its_slice(device, adamw):
    n, offset, count = 1000, 300, 257
    rng = np.random.default_rng()
    param0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    g[:offset] = np.nan                  # must never be read
    g[offset + count:] = np.nan
    param, grad = device.buffer_from(param0), device.buffer_from(g)
    m, v = device.create_buffer(4 * n), device.create_buffer(4 * n)
    program = device.program()
    adamw.step(program, param, grad, m, v, adamw.hyper_buffer(lr=1e-2, step=1), None, count, offset)
    for b in (param, m, v):
        program.read(b)
    got_p, got_m, got_v = (floats(x) for x in run(program.run()))
    inside = slice(offset, offset + count)
    ref = adamw_step(param0[inside].astype(np.float64), g[inside].astype(np.float64), 0.0, 0.0,
                     1e-2, 0.9, 0.999, 1e-8, 0.01, 1)
    for out, expected, name in zip((got_p, got_m, got_v), ref, ("param", "m", "v")):
        assert rel_error(out[inside], expected) <= BOUNDS[name], name
    outside = np.ones(n, bool)
    outside[inside] = False
    np.testing.assert_array_equal(got_p[outside], param0[outside])
    assert not got_m[outside].any() and not got_v[outside].any()


def test_hyper_values_match_the_reference_coefficients():
    for args in ((1e-3, 0.9, 0.999, 1e-8, 0.01, 1), (5e-5, 0.8, 0.95, 1e-6, 0.1, 1234)):
        k = adamw_coefficients(*args)
        expected = (k["step_size"], k["bias_correction2_sqrt"], k["decay"], k["eps"],
                    1.0 - k["one_minus_beta1"], k["one_minus_beta1"], k["beta2"],
                    k["one_minus_beta2"], args[-1])
        assert hyper_values(*args) == expected
    assert len(pack_hyper(1e-3)) == HYPER_BYTES == 48
    with pytest.raises(ValueError):
        pack_hyper(1e-3, step=0)


def test_training_step_matches_torch_and_reads_metrics_once(device, adamw):
    """Logits as the parameters: cross-entropy forward and backward, the global gradient norm
    with clipping, AdamW; replayed for three steps with a learning-rate schedule. Loss,
    accuracy, norm and clip factor come back in one 32-byte read per step."""
    rows, classes, max_norm, smoothing = 24, 5, 0.05, 0.1
    rng = np.random.default_rng()
    logits0 = (rng.standard_normal((rows, classes)) * 2).astype(np.float32)
    labels = rng.integers(0, classes, rows).astype(np.uint32)
    labels[[3, 17]] = 0xFFFFFFFF
    weights = rng.uniform(0.5, 2.0, classes).astype(np.float32)
    lrs = [1e-2, 2e-2, 5e-3]

    ce = run(CrossEntropyKernels.load(device))
    norm = run(GradNormKernels.load(device))
    n = rows * classes
    param, labels_b = device.buffer_from(logits0), device.buffer_from(labels)
    weights_b = device.buffer_from(weights)
    dlogits, predictions = device.create_buffer(4 * n), device.create_buffer(4 * rows)
    m, v = device.create_buffer(4 * n), device.create_buffer(4 * n)
    metrics, hyper = create_metrics(device), adamw.hyper_buffer()
    program = device.program()
    ce.forward(program, param, labels_b, metrics, predictions, rows, classes, weights_b, smoothing)
    ce.backward(program, param, labels_b, metrics, dlogits, rows, classes, weights_b, smoothing)
    norm.record(program, [dlogits], metrics, max_norm)
    adamw.step(program, param, dlogits, m, v, hyper, metrics)
    program.read(metrics)
    program.read(param)

    tp = torch.nn.Parameter(torch.tensor(logits0, dtype=torch.float64))
    opt = torch.optim.AdamW([tp], lr=lrs[0], weight_decay=0.01)
    tl = torch.tensor(labels.astype(np.int64))
    tl[tl == 0xFFFFFFFF] = -100
    for t, lr in enumerate(lrs, start=1):
        hyper.write(pack_hyper(lr, weight_decay=0.01, step=t))
        raw, got_param = run(program.run())
        assert len(raw) == METRICS_BYTES
        got = decode_metrics(raw)

        opt.zero_grad()
        for group in opt.param_groups:
            group["lr"] = lr
        tw = torch.tensor(weights, dtype=torch.float64)
        loss = torch.nn.functional.cross_entropy(tp, tl, weight=tw, label_smoothing=smoothing)
        correct = ((tp.argmax(1) == tl) & (tl != -100)).sum().item()
        loss.backward()
        total_norm = torch.nn.utils.clip_grad_norm_([tp], max_norm).item()
        opt.step()

        assert got["loss"] == pytest.approx(loss.item(), rel=1e-5)
        assert got["correct"] == correct and got["counted"] == rows - 2
        assert got["grad_norm"] == pytest.approx(total_norm, rel=1e-5)
        assert got["clip_scale"] == pytest.approx(min(1, max_norm / (total_norm + 1e-6)), rel=1e-5)
        assert got["clip_scale"] < 1        # the clip is active in this test
        assert rel_error(floats(got_param), tp.detach().numpy()) <= 1e-5
