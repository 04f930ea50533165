"""Block copies (shaders/columns.wgsl) on wgpu-native against the NumPy reference
(py_engine/ops/columns.py): a fused projection split and put back, and rows read at an offset
changed between replays. Copies are exact: the bound is 0."""

import numpy as np
import pytest
from conftest import floats, run

from py_engine.gpu import Variable
from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.columns import ColumnKernels
from py_engine.ops import columns as ops


@pytest.fixture(scope="module")
def columns(device):
    return run(ColumnKernels.load(device))


@pytest.mark.parametrize("rows, widths", [(7, (32, 32, 32)), (130, (24, 8, 40)), (1, (3, 5))])
def test_split_and_put_back_match_numpy(device, columns, rows, widths):
    rng = np.random.default_rng()
    total = sum(widths)
    x = rng.standard_normal((rows, total)).astype(np.float32)
    src = device.buffer_from(x)
    parts = [poisoned(device, rows * w) for w in widths]
    back = poisoned(device, rows * total)
    program = device.program()
    for i, (part, w) in enumerate(zip(parts, widths)):
        columns.copy_block(program, src, part, rows, w, (total, sum(widths[:i]), 0), (w, 0, 0))
    for i, (part, w) in enumerate(zip(parts, widths)):
        columns.copy_block(program, part, back, rows, w, (w, 0, 0), (total, sum(widths[:i]), 0))
    for buffer in parts + [back]:
        program.read(buffer)
    values = [floats(v) for v in run(program.run())]
    for got, want in zip(values, ops.split_columns(x, widths)):
        assert np.array_equal(got, want.ravel())
    assert np.array_equal(values[-1], ops.concat_columns(ops.split_columns(x, widths)).ravel())


def test_rows_at_a_variable_offset(device, columns):
    """The rows a decoding step reads from a position table, the offset set per replay."""
    rng = np.random.default_rng()
    table = rng.standard_normal((64, 16)).astype(np.float32)
    src, out = device.buffer_from(table), poisoned(device, 3 * 16)
    position = Variable(0)
    program = device.program()
    columns.copy_block(program, src, out, 3, 16, (16, 0, position), (16, 0, 0))
    program.read(out)
    for at in (0, 17, 61):
        position.set(at)
        got = floats(run(program.run())[0])
        want = ops.copy_block(table.ravel(), np.full(48, np.nan, np.float32), 3, 16, (16, 0, at), (16, 0, 0))
        assert np.array_equal(got, want)
    with pytest.raises(ValueError):
        position.set(62)          # rows 62..64 are past the table


@pytest.mark.parametrize("rows, cols", [(4, 96), (1, 7), (33, 300)])
def test_transpose_and_add_transposed(device, columns, rows, cols):
    """transpose: src^T into a poisoned buffer (exact), and added into another (beta=1)."""
    rng = np.random.default_rng()
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    acc = rng.standard_normal((cols, rows)).astype(np.float32)
    src, out, into = device.buffer_from(x), poisoned(device, rows * cols), device.buffer_from(acc)
    program = device.program()
    columns.transpose(program, src, out, rows, cols)
    columns.transpose(program, src, into, rows, cols, beta=1.0)
    program.read(out)
    program.read(into)
    got, added = (floats(v) for v in run(program.run()))
    assert np.array_equal(got, x.T.ravel())
    assert np.array_equal(added, (acc + x.T).ravel())
    with pytest.raises(ValueError, match="beta"):
        columns.transpose(device.program(), src, out, rows, cols, beta=0.5)
