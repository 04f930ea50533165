"""Dropout kernels (shaders/dropout.wgsl) on wgpu-native against the NumPy reference: the GPU
mask equals the NumPy mask bit for bit, kept values are x / (1 - p) to one rounding, and a
recorded program draws a new mask per replay once the step buffer is rewritten."""

import numpy as np
import pytest
from conftest import floats, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.dropout import DropoutKernels, pack_step, scale, threshold
from py_engine.ops import dropout as ops

BOUND = 2e-7   # ||out - ref|| / ||ref||: f32 scale and one rounding of x * scale


@pytest.fixture(scope="module")
def dropout(device):
    return run(DropoutKernels.load(device))


def nonzero_inputs(n):
    """Values with |x| >= 0.5, so a zero in the output can only be a dropped element."""
    rng = np.random.default_rng()
    return (rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)).astype(np.float32)


def record(device, dropout, x, dy, n, p, base, per_step):
    y, dx = poisoned(device, n), poisoned(device, n)
    program = device.program()
    dropout.forward(program, device.buffer_from(x), y, per_step, n, p, base)
    dropout.backward(program, device.buffer_from(dy), dx, per_step, n, p, base)
    program.read(y)
    program.read(dx)
    return program


def check(got_y, got_dx, x, dy, p, seed, offset, base):
    ref_y, keep = ops.dropout_forward(x.astype(np.float64), p, seed, offset, base)
    ref_dx = ops.dropout_backward(dy.astype(np.float64), p, seed, offset, base)
    np.testing.assert_array_equal(got_y != 0, keep)     # the GPU mask is the NumPy mask
    np.testing.assert_array_equal(got_dx != 0, keep)    # the backward recomputes the same one
    assert rel_error(got_y, ref_y) <= BOUND
    assert rel_error(got_dx, ref_dx) <= BOUND
    return keep


@pytest.mark.parametrize("n, p, base", [(1, 0.5, 0), (1000, 0.1, 0), (65_536, 0.5, 12345),
                                        (30_001, 0.9, 7)])
def test_dropout_mask_is_the_numpy_mask(device, dropout, n, p, base):
    rng = np.random.default_rng()
    seed, offset = int(rng.integers(2**32)), int(rng.integers(2**32))
    x, dy = nonzero_inputs(n), nonzero_inputs(n)
    per_step = dropout.step_buffer(seed, offset)
    (y, dx) = (floats(v) for v in run(record(device, dropout, x, dy, n, p, base, per_step).run()))
    keep = check(y, dx, x, dy, p, seed, offset, base)
    if n >= 30_000:
        sigma = np.sqrt(p * (1 - p) / n)
        assert abs(keep.mean() - (1 - p)) < 6 * sigma


def test_p_zero_is_the_identity(device, dropout):
    n = 5000
    x = np.random.default_rng().standard_normal(n).astype(np.float32)
    program = record(device, dropout, x, x, n, 0.0, 0, dropout.step_buffer(99))
    y, dx = (floats(v) for v in run(program.run()))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, x)


def test_replays_draw_new_masks_from_the_step_buffer(device, dropout):
    n, p = 4096, 0.5
    x, dy = nonzero_inputs(n), nonzero_inputs(n)
    per_step = dropout.step_buffer()
    program = record(device, dropout, x, dy, n, p, 3, per_step)
    masks = []
    for seed, offset in ((1, 0), (2, 0), (1, n)):
        per_step.write(pack_step(seed, offset))
        y, dx = (floats(v) for v in run(program.run()))
        masks.append(check(y, dx, x, dy, p, seed, offset, 3))
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert 0.4 < (masks[a] == masks[b]).mean() < 0.6


def test_counter_wraps_like_the_reference(device, dropout):
    n, p = 1000, 0.3
    x, dy = nonzero_inputs(n), nonzero_inputs(n)
    seed, offset, base = 5, 2**32 - 500, 100      # offset + base + i runs past 2^32
    program = record(device, dropout, x, dy, n, p, base, dropout.step_buffer(seed, offset))
    y, dx = (floats(v) for v in run(program.run()))
    check(y, dx, x, dy, p, seed, offset, base)


def test_host_constants():
    assert threshold(0.0) == 0 and threshold(0.5) == 2**31
    assert threshold(1 - 2**-40) == 2**32 - 1
    assert scale(0.1) == np.float32(1 / 0.9)
    with pytest.raises(ValueError):
        threshold(1.0)
    assert pack_step(2**32 + 3, -1) == np.array([3, 2**32 - 1, 0, 0], np.uint32).tobytes()


@pytest.mark.parametrize("n, magnitude, base", [(1, 0.3, 0), (70_001, 0.02, 12345)])
def test_uniform_noise_is_the_numpy_noise(device, dropout, n, magnitude, base):
    """NEFTune's noise (add_uniform_noise): x + magnitude (2u - 1) from the mask's bits equals
    ops.uniform_noise added to x (each element one rounding of the product and of the sum), is
    uniform in [-magnitude, magnitude) (mean, spread, bounds, across counters wrapping past
    2^32), and a replay with another seed draws other noise."""
    rng = np.random.default_rng()
    seed, offset = int(rng.integers(2**32)), 2**32 - n // 2
    x = rng.standard_normal(n).astype(np.float32)
    per_step = dropout.step_buffer(seed, offset)
    out = poisoned(device, n)
    program = device.program()
    dropout.noise(program, device.buffer_from(x), out, per_step, n, magnitude, base)
    program.read(out)
    got = floats(run(program.run())[0])
    noise = ops.uniform_noise(n, magnitude, seed, offset, base)
    assert rel_error(got, x + noise) <= BOUND
    assert np.abs(noise).max() <= magnitude
    if n > 1:
        unit = noise.astype(np.float64) / magnitude
        assert abs(unit.mean()) < 6 / np.sqrt(3 * n)            # uniform on [-1, 1): var 1/3
        assert abs(unit.var() - 1 / 3) < 0.01 and unit.min() < -0.999 and unit.max() > 0.999
        per_step.write(pack_step(seed + 1, offset))
        other = floats(run(program.run())[0]) - x
        assert np.corrcoef(other, noise)[0, 1] < 0.05
