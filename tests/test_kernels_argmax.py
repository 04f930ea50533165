"""The next token's choice on the GPU (greedy generation's row argmax and sampling's
candidates) on wgpu-native (lavapipe) against the NumPy reference and the host's pure-Python
greedy.

Fresh random rows every run; the output is poisoned with a pattern no answer holds before the
dispatch. Indices and flags are integers: they must match exactly. The candidates' cut comes
from f32 sums on the GPU: it must be one the reference's f64 math allows within 1e-4, and the
candidates exactly the tokens of the bins up to it (rows on a grid of 1/16, so every bin is
exact in f32); the total matches within 1e-5 relative.
"""

import math

import numpy as np
import pytest
from conftest import run

from py_engine.generate.sampling import greedy
from py_engine.kernels.argmax import (NAN_FLAG, POS_INF_FLAG, ArgmaxKernels, decode_candidates,
                                      decode_choices)
from py_engine.ops.argmax import argmax_rows, candidate_bins, sampling_candidates

POISON = b"\xef\xbe\xad\xde"


@pytest.fixture(scope="module")
def argmax(device):
    return run(ArgmaxKernels.load(device))


def gpu_argmax(device, argmax, x):
    rows, cols = x.shape
    out = device.buffer_from(POISON * argmax.out_words(rows))
    program = device.program()
    argmax.rows(program, device.buffer_from(np.ascontiguousarray(x, np.float32)), out, rows=rows, cols=cols)
    program.read(out)
    (data,) = run(program.run())
    words = np.frombuffer(bytes(data), np.uint32).reshape(rows, 2)
    return words[:, 0], words[:, 1], data


@pytest.mark.parametrize("rows, cols", [(1, 1), (1, 7), (3, 255), (2, 256), (4, 257), (5, 1000),
                                        (1, 151936), (1, 262144), (70000, 3)])
def test_random_rows_match_the_reference(device, argmax, rng, rows, cols):
    """Normal draws, and draws from three values (ties everywhere): the first maximum."""
    for x in (rng.standard_normal((rows, cols), dtype=np.float32),
              rng.integers(0, 3, (rows, cols)).astype(np.float32)):
        index, flags, data = gpu_argmax(device, argmax, x)
        want, want_flags = argmax_rows(x)
        assert np.array_equal(index, want) and not flags.any() and not want_flags.any()
        assert greedy(x[0].tolist()) == index[0]
        assert decode_choices(data)[0] == (int(want[0]), None)


def test_ties_go_to_the_first_index_within_and_across_lanes(device, argmax, rng):
    """The maximum copied to positions one lane stride apart and in other lanes."""
    cols = 4096
    x = rng.uniform(-1, 1, (6, cols)).astype(np.float32)
    for r in range(6):
        spots = rng.choice(cols, 1 + r, replace=False)
        spots = np.concatenate([spots, (spots + 256) % cols])
        x[r, spots] = 2.0
    index, flags, _ = gpu_argmax(device, argmax, x)
    assert np.array_equal(index, argmax_rows(x)[0]) and not flags.any()
    assert [greedy(row.tolist()) for row in x] == index.tolist()


def test_nan_and_infinities(device, argmax, rng):
    """NaN and +inf are flagged wherever they are; -inf is an ordinary (masked) value, and a
    row of nothing but -inf chooses index 0."""
    cols = 3000
    x = rng.standard_normal((7, cols)).astype(np.float32)
    x[0, rng.integers(cols)] = math.nan
    x[1, rng.integers(cols)] = math.inf
    x[2, rng.integers(cols)] = math.nan
    x[2, rng.integers(cols)] = math.inf
    x[3, rng.choice(cols, 100, replace=False)] = -math.inf
    x[4] = -math.inf
    x[5, 0] = -math.nan              # a NaN with the sign bit set
    x[6, rng.integers(cols)] = np.array([0x7f800001], np.uint32).view(np.float32)[0]  # the smallest NaN
    index, flags, data = gpu_argmax(device, argmax, x)
    want, want_flags = argmax_rows(x)
    assert flags.tolist() == want_flags.tolist() == [NAN_FLAG, POS_INF_FLAG, NAN_FLAG | POS_INF_FLAG,
                                                     0, 0, NAN_FLAG, NAN_FLAG]
    assert index[1] == want[1] and index[3] == want[3] and index[4] == 0 == greedy(x[4].tolist())
    assert [p for _, p in decode_choices(data)] == ["NaN", "inf", "NaN", None, None, "NaN", "NaN"]


def test_shapes_are_checked(device, argmax):
    program = device.program()
    with pytest.raises(ValueError, match="at least one row"):
        argmax.rows(program, device.create_buffer(16), device.create_buffer(8), rows=1, cols=0)
    with pytest.raises(ValueError, match="logits holds 16 bytes"):
        argmax.rows(program, device.create_buffer(16), device.create_buffer(8), rows=1, cols=5)


def gpu_candidates(device, argmax, x, capacity, inv_temperature, top_k, tail):
    rows, cols = x.shape
    out = device.buffer_from(POISON * argmax.candidate_words(rows, capacity))
    program = device.program()
    argmax.candidates(program, device.buffer_from(np.ascontiguousarray(x, np.float32)), out,
                      rows=rows, cols=cols, capacity=capacity, inv_temperature=inv_temperature,
                      top_k=top_k, tail=tail)
    program.read(out)
    (data,) = run(program.run())
    return decode_candidates(data, cols, capacity)


def allowed_cuts(row, inv_temperature, top_k, tail, slack=1e-4):
    """The cuts the reference's math allows when its sums may be off by `slack` relative."""
    low = sampling_candidates(row[None], inv_temperature, top_k, tail * (1 + slack))[0][1]
    high = sampling_candidates(row[None], inv_temperature, top_k, tail * (1 - slack))[0][1]
    return range(low, high + 1)


@pytest.mark.parametrize("rows, cols, inv_temperature, top_k, tail", [
    (1, 1, 1.0, 0, 0.05), (1, 300, 1.0, 0, 0.05), (3, 1000, 2.0, 0, 0.05),
    (2, 5000, 0.5, 0, 1e-4), (2, 4096, 1.0, 50, 1e30), (1, 151936, 2.0, 0, 0.05),
    (1, 151936, 1.0, 40, 1e30), (1, 262144, 1.0, 0, 0.005),
    (1, 30000, 1.0, 50, 1e30), (1, 30000, 1.0, 50, 1.0)])
def test_sampling_candidates_match_the_reference(device, argmax, rng, rows, cols,
                                                 inv_temperature, top_k, tail):
    """Rows on a grid of 1/16 in a trained model's spread (std 3): every d and every bin is
    exact in f32, so the candidates of a cut are known exactly."""
    x = (np.round(rng.normal(0.0, 3.0, (rows, cols)) * 16) / 16).astype(np.float32)
    capacity = 4096
    got = gpu_candidates(device, argmax, x, capacity, inv_temperature, top_k, tail)
    want = sampling_candidates(x, inv_temperature, top_k, tail)
    for row, g, (_, _, largest, total) in zip(x, got, want):
        assert g.problem is None and g.size == cols and g.largest == largest
        assert g.cut in allowed_cuts(row, inv_temperature, top_k, tail), (g.cut, want)
        bins = candidate_bins(row, largest, inv_temperature)
        expected = np.flatnonzero(bins <= g.cut)
        assert g.count == len(expected) and g.complete == (len(expected) <= capacity)
        if g.complete:
            assert g.tokens == expected.tolist() and g.logits == row[expected].tolist()
        else:   # the first `capacity` to take a slot: some of the candidates, each once
            assert len(g.tokens) == capacity == len(set(g.tokens)) and set(g.tokens) <= set(expected)
        assert abs(g.total - total) <= 1e-5 * total
        assert top_k <= g.count
        if tail >= 1e30 and g.cut > 0:      # no limit on the mass: the fewest bins holding k
            assert (bins < g.cut).sum() < top_k
        # what the tokens past the cut can hold, at most: within the tail asked for
        rest = np.exp(-((largest - row[bins > g.cut]) * inv_temperature).astype(np.float64)).sum()
        assert rest <= tail * total * (1 + 1e-4)


def test_sampling_candidates_overflow_masks_and_problems(device, argmax, rng):
    """A flat row fills the capacity (the count says how many there were); -inf is never a
    candidate and adds nothing; a row of -inf has none; NaN and +inf are flagged."""
    cols = 2000
    x = rng.normal(0.0, 3.0, (5, cols)).astype(np.float32)
    x[0] = 0.25                                       # flat: every token is needed
    masked = rng.choice(cols, 700, replace=False)
    x[1, masked] = -math.inf
    x[2] = -math.inf
    x[3, rng.integers(cols)] = math.nan
    x[4, rng.integers(cols)] = math.inf
    got = gpu_candidates(device, argmax, x, 1024, 1.0, 0, 0.01)
    assert got[0].count == cols and len(got[0].tokens) == 1024 and not got[0].complete
    assert abs(got[0].total - cols) <= 1e-5 * cols
    assert not set(got[1].tokens) & set(masked.tolist()) and got[1].complete
    finite = np.delete(x[1], masked).astype(np.float64)
    assert abs(got[1].total - np.exp(finite - finite.max()).sum()) <= 1e-5 * got[1].total
    assert got[2].count == 0 and got[2].tokens == [] and got[2].total == 0.0
    assert [g.problem for g in got] == [None, None, None, "NaN", "inf"]


def test_candidate_shapes_are_checked(device, argmax):
    program = device.program()
    with pytest.raises(ValueError, match="room for one candidate"):
        argmax.candidates(program, device.create_buffer(16), device.create_buffer(64), rows=1,
                          cols=4, capacity=0, inv_temperature=1.0, top_k=0, tail=0.1)
    with pytest.raises(ValueError, match="output"):
        argmax.candidates(program, device.create_buffer(16), device.create_buffer(16), rows=1,
                          cols=4, capacity=4, inv_temperature=1.0, top_k=0, tail=0.1)
