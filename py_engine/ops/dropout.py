"""Dropout with a counter-based mask: nothing is stored between forward and backward.

Element i of a dropout layer keeps its value when

    bits(seed, counter) >= threshold(p),   counter = (offset + base + i) mod 2^32

where, in wrapping uint32 arithmetic,

    lowbias32(x):  x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
    bits(seed, c) = lowbias32(lowbias32(c) ^ lowbias32(seed ^ 0x9e3779b9))
    threshold(p)  = min(round(p * 2^32), 2^32 - 1)

so P(keep) = 1 - threshold / 2^32 = 1 - p to within 2^-32. lowbias32 is Chris Wellons'
low-bias 32-bit integer hash (a bijection with good avalanche).

`seed` and `offset` change per training step: the GPU reads them from a small buffer the caller
writes before each replay. `base` is fixed per dropout layer: give each layer a disjoint counter
range (e.g. the running total of the sizes of the layers before it), so layers sharing a step's
seed draw independent masks. Kept values are scaled by 1 / (1 - p), as
torch.nn.functional.dropout does; the backward applies the same mask and scale to the incoming
gradient. shaders/dropout.wgsl computes the same bits.
"""

import numpy as np

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B
SEED_SALT = 0x9E3779B9


def lowbias32(x):
    """The hash on uint32 values (array or int), computed in uint64 and masked to 32 bits."""
    x = np.asarray(x, dtype=np.uint64) & MASK32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(MUL1)) & MASK32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(MUL2)) & MASK32
    x ^= x >> np.uint64(16)
    return x


def dropout_bits(seed, counters):
    """uint32 random bits for each counter under `seed`."""
    key = lowbias32((int(seed) ^ SEED_SALT) & MASK32)
    return (lowbias32(lowbias32(counters) ^ key)).astype(np.uint32)


def dropout_threshold(p):
    """Bits below this are dropped. p must lie in [0, 1)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    return min(round(p * 2.0**32), MASK32)


def dropout_mask(n, p, seed, offset=0, base=0):
    """Boolean keep-mask of n elements."""
    threshold = dropout_threshold(p)
    counters = (np.arange(n, dtype=np.uint64) + np.uint64((offset + base) & MASK32)) & MASK32
    return dropout_bits(seed, counters) >= threshold


def _scale(p, dtype):
    return np.asarray(1.0, dtype) / np.asarray(1.0 - p, dtype)


def dropout_forward(x, p, seed, offset=0, base=0):
    """Returns (y, keep): y = x * keep / (1 - p) over x flattened in C order."""
    keep = dropout_mask(x.size, p, seed, offset, base).reshape(x.shape)
    return np.where(keep, x * _scale(p, x.dtype), 0.0).astype(x.dtype), keep


def dropout_backward(dy, p, seed, offset=0, base=0):
    """Returns dx: the same mask and scale as the forward with the same seed, offset, base."""
    return dropout_forward(dy, p, seed, offset, base)[0]
