"""Dropout reference (py_engine.ops.dropout): the counter-based mask and its statistics, and
the forward/backward against torch autograd given the same mask."""

import numpy as np
import pytest
import torch

from py_engine.ops import dropout as ops


def lowbias32_scalar(x):
    """The hash written out on Python ints, as its definition reads."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def test_bits_follow_the_documented_definition():
    seed = 0xDEADBEEF
    counters = np.array([0, 1, 2, 12345, 0xFFFFFFFF], dtype=np.uint64)
    key = lowbias32_scalar(seed ^ 0x9E3779B9)
    expected = [lowbias32_scalar(lowbias32_scalar(int(c)) ^ key) for c in counters]
    assert ops.dropout_bits(seed, counters).tolist() == expected
    assert ops.lowbias32(np.uint64(1)).item() == lowbias32_scalar(1)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_statistical_bounds(p):
    n = 200_000
    keep = ops.dropout_mask(n, p, seed=12345)
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 6 * sigma


def test_masks_differ_across_seeds_offsets_and_bases():
    n, p = 4096, 0.5
    a = ops.dropout_mask(n, p, seed=1)
    for other in (ops.dropout_mask(n, p, seed=2), ops.dropout_mask(n, p, seed=1, offset=n),
                  ops.dropout_mask(n, p, seed=1, base=7)):
        agree = (a == other).mean()
        assert 0.45 < agree < 0.55   # independent masks agree half the time
    # offset and base only shift the counter: the same counters give the same bits
    np.testing.assert_array_equal(ops.dropout_mask(n, p, 9, offset=5, base=3),
                                  ops.dropout_mask(n, p, 9, offset=0, base=8))
    np.testing.assert_array_equal(ops.dropout_mask(n, p, 9, base=10)[:-10],
                                  ops.dropout_mask(n, p, 9)[10:])


def test_counter_wraps_at_2_to_32():
    tail = ops.dropout_mask(4, 0.5, seed=3, offset=0xFFFFFFFE)
    head = ops.dropout_mask(2, 0.5, seed=3)
    np.testing.assert_array_equal(tail[2:], head)


def test_p_zero_is_identity_and_p_out_of_range_raises():
    x = np.random.default_rng().standard_normal((3, 7))
    y, keep = ops.dropout_forward(x, 0.0, seed=5)
    assert keep.all()
    np.testing.assert_array_equal(y, x)
    with pytest.raises(ValueError):
        ops.dropout_threshold(1.0)
    with pytest.raises(ValueError):
        ops.dropout_threshold(-0.1)


def test_forward_backward_match_torch_with_the_same_mask():
    rng = np.random.default_rng()
    p = 0.3
    x = rng.standard_normal((5, 11))
    dy = rng.standard_normal(x.shape)
    y, keep = ops.dropout_forward(x, p, seed=77, offset=1000, base=3)
    dx = ops.dropout_backward(dy, p, seed=77, offset=1000, base=3)
    tx = torch.tensor(x, requires_grad=True)
    # torch's dropout is x * mask / (1 - p); with our mask, autograd gives the reference grads
    ty = tx * torch.tensor(keep, dtype=torch.float64) / (1 - p)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-15)
    # and torch's own dropout has the same form: zeros where dropped, x / (1 - p) elsewhere
    td = torch.nn.functional.dropout(torch.tensor(x), p=p, training=True).numpy()
    kept = td != 0
    np.testing.assert_allclose(td[kept], x[kept] / (1 - p), rtol=1e-15)
