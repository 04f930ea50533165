"""The row argmax kernel (greedy generation's choice on the GPU) on wgpu-native (lavapipe)
against the NumPy reference and the host's pure-Python greedy.

Fresh random rows every run; the output is poisoned with a pattern no answer holds before the
dispatch. Indices and flags are integers: they must match exactly.
"""

import math

import numpy as np
import pytest
from conftest import run

from py_engine.generate.sampling import greedy
from py_engine.kernels.argmax import NAN_FLAG, POS_INF_FLAG, ArgmaxKernels, decode_choices
from py_engine.ops.argmax import argmax_rows

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
