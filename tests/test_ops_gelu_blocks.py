"""The float32 GELU evaluated block by block (py_engine.ops.gelu.BLOCK elements at a time, for
the cache) gives bit for bit what one pass over the whole tensor gives, for contiguous and
transposed inputs whose size is not a multiple of the block."""

import numpy as np

from py_engine.ops import gelu


def test_blocks_equal_one_pass(rng):
    x = (rng.standard_normal((3 * gelu.BLOCK // 700 + 1, 700)) * 4).astype(np.float32)
    assert x.size > gelu.BLOCK and x.size % gelu.BLOCK
    for v in (x, x.T):
        y, slope = gelu.gelu_with_slope(v)
        one_y, one_slope = gelu._gelu_with_slope(v)      # the whole tensor in one pass
        assert y.shape == slope.shape == v.shape and y.dtype == slope.dtype == np.float32
        np.testing.assert_array_equal(y, one_y)
        np.testing.assert_array_equal(slope, one_slope)
        np.testing.assert_array_equal(gelu.gelu_forward(v), one_y)
