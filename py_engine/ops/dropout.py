"""Dropout with a counter-based mask: nothing needs storing between forward and backward (the
NumPy backend keeps each layer's dropout_multiplier anyway: a step's hashing costs more than
the memory).

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

The same bits give NEFTune's noise (transformers' neftune_noise_alpha: uniform noise added to
the input embeddings in training), element i of a noise layer being

    magnitude * (2 u - 1),   u = (bits(seed, counter) >> 8) * 2^-24

in [-magnitude, magnitude): 2 u - 1 is exact in float32, so each element is one rounding of
the product, as the shader's.
"""

import numpy as np

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D
MUL2 = 0x846CA68B
SEED_SALT = 0x9E3779B9


def _as_uint32(x):
    """A fresh uint32 array holding x mod 2^32 (x: an array or int of non-negative values)."""
    x = np.asarray(x)
    if x.dtype == np.uint32:
        return x.copy()
    return np.array(x.astype(np.uint64) & np.uint64(MASK32), dtype=np.uint32)   # 0-d stays an array


def _lowbias32_inplace(x):
    """lowbias32 over a uint32 array, in place: uint32 products wrap mod 2^32 as the shader's
    do, so no wider type or masking is needed."""
    t = np.empty_like(x)
    np.right_shift(x, 16, out=t)
    x ^= t
    x *= np.uint32(MUL1)
    np.right_shift(x, 15, out=t)
    x ^= t
    x *= np.uint32(MUL2)
    np.right_shift(x, 16, out=t)
    x ^= t
    return x


def lowbias32(x):
    """The hash on uint32 values (array or int); returns uint32."""
    return _lowbias32_inplace(_as_uint32(x))


def dropout_bits(seed, counters):
    """uint32 random bits for each counter under `seed`."""
    return _hash_counters(seed, _as_uint32(counters))


def _hash_counters(seed, counters):
    """dropout_bits of a uint32 counter array, hashed in place."""
    key = lowbias32((int(seed) ^ SEED_SALT) & MASK32)
    bits = _lowbias32_inplace(counters)
    bits ^= key
    return _lowbias32_inplace(bits)


def dropout_threshold(p):
    """Bits below this are dropped. p must lie in [0, 1)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    return min(round(p * 2.0**32), MASK32)


def _counters(n, offset, base):
    """The uint32 counters offset + base + i of a layer's n elements (wrapping at 2^32, as the
    shader's counter does)."""
    counters = np.arange(n, dtype=np.uint32)
    counters += np.uint32((offset + base) & MASK32)
    return counters


def dropout_mask(n, p, seed, offset=0, base=0):
    """Boolean keep-mask of n elements."""
    threshold = dropout_threshold(p)
    return _hash_counters(seed, _counters(n, offset, base)) >= threshold


def _scale(p, dtype):
    return np.asarray(1.0, dtype) / np.asarray(1.0 - p, dtype)


def dropout_multiplier(n, p, seed, offset=0, base=0, dtype=np.float32):
    """The mask as factors in `dtype`: 1 / (1 - p) where kept, 0 where dropped, so that
    x * multiplier is dropout_forward's y (up to the sign of dropped zeros). Computed once per
    layer, it serves the forward and the backward alike."""
    keep = dropout_mask(n, p, seed, offset, base)
    return keep * _scale(p, dtype)


def dropout_forward(x, p, seed, offset=0, base=0):
    """Returns (y, keep): y = x * keep / (1 - p) over x flattened in C order."""
    keep = dropout_mask(x.size, p, seed, offset, base).reshape(x.shape)
    return np.where(keep, x * _scale(p, x.dtype), 0.0).astype(x.dtype, copy=False), keep


def uniform_noise(n, magnitude, seed, offset=0, base=0, dtype=np.float32):
    """n elements of noise uniform in [-magnitude, magnitude) (see the module docstring) in
    `dtype`, drawn at counters offset + base + i."""
    bits = _hash_counters(seed, _counters(n, offset, base)) >> np.uint32(8)
    unit = (bits.astype(np.float32) * np.float32(2.0) - np.float32(2.0**24)) * np.float32(2.0**-24)
    return (np.float32(magnitude) * unit).astype(dtype)


def dropout_backward(dy, p, seed, offset=0, base=0):
    """Returns dx: the same mask and scale as the forward with the same seed, offset, base."""
    return dropout_forward(dy, p, seed, offset, base)[0]
