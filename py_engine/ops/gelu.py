"""GELU in BERT's exact form (and GPT-2's tanh form, below: `approximate="tanh"`), gelu(x) = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))).

    d gelu / dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

NumPy has no erf, so the float64 reference applies math.erfc per element, as
Phi(x) = 0.5 * erfc(-x / sqrt(2)): exact to float64 rounding on the left tail too, where
1 + erf(x / sqrt(2)) cancels (torch computes it that way). That costs about a microsecond per
element, far too slow for training on the CPU, so float32 inputs take a vectorized erfc
accurate to float32's own precision instead (`_normal_cdf_float32`); every other dtype gets the
exact float64 path. The shader has no erf either: `erf_f32` and `normal_cdf_f32` below are its
approximations evaluated the same way in NumPy float32, so their error can be measured on the
host without a GPU.
"""

import math

import numpy as np

SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)

# The shader's erf (shaders/gelu.wgsl, same constants), fitted by weighted least squares on
# Chebyshev nodes in float64 and rounded to f32:
#   |z| <  ERF_SPLIT:          erf(z) = z * P(z^2)           (odd series; no cancellation near 0)
#   ERF_SPLIT <= |z| < ERF_TOP: erfc(|z|) = exp(Q(|z|))      (Q ~ log(erfc), relative-error fit)
#   |z| >= ERF_TOP:            erfc = 0, erf = +-1           (erfc(5) < 1.6e-12)
# The normal CDF of the GELU takes erfc directly on the left tail, so it keeps its relative
# precision where 1 + erf(z) would cancel.
ERF_SPLIT = 0.875
ERF_TOP = 5.0
ERF_P = (1.128379107e+00, -3.761254847e-01, 1.128244102e-01, -2.679095045e-02,
         5.031426437e-03, -6.199346972e-04)
ERF_Q = (4.146379652e-04, -1.130702257e+00, -6.308391094e-01, -1.112397015e-01,
         2.726120502e-02, -5.149805918e-03, 7.133617182e-04, -6.770999607e-05,
         3.913313321e-06, -1.034408754e-07)


def erf(x):
    """erf in float64, elementwise (math.erf)."""
    x = np.asarray(x, dtype=np.float64)
    return _erf(x).astype(np.float64)


def normal_cdf(x):
    """Phi(x) in float64, elementwise."""
    return 0.5 * _erfc(np.asarray(-x * SQRT1_2, dtype=np.float64)).astype(np.float64)


def _horner_f32(coeffs, z):
    acc = np.full_like(z, coeffs[-1], dtype=np.float32)
    for c in coeffs[-2::-1]:
        acc = (acc * z + np.float32(c)).astype(np.float32)
    return acc


def _erfc_tail_f32(t):
    u = np.clip(t, np.float32(ERF_SPLIT), np.float32(ERF_TOP)).astype(np.float32)
    return np.where(t >= np.float32(ERF_TOP), np.float32(0.0),
                    np.exp(_horner_f32(ERF_Q, u))).astype(np.float32)


def erf_f32(x):
    """The shader's erf approximation computed in NumPy float32 (rounding as a GPU without fma)."""
    x = np.asarray(x, dtype=np.float32)
    small = x * _horner_f32(ERF_P, x * x)
    tail = np.float32(1.0) - _erfc_tail_f32(np.abs(x))
    large = np.where(x < 0, -tail, tail).astype(np.float32)
    return np.where(np.abs(x) < np.float32(ERF_SPLIT), small, large).astype(np.float32)


def normal_cdf_f32(x):
    """The shader's Phi(x) in NumPy float32: from erfc on the tails, from erf in the middle."""
    z = (np.asarray(x, dtype=np.float32) * np.float32(SQRT1_2)).astype(np.float32)
    half_tail = (np.float32(0.5) * _erfc_tail_f32(np.abs(z))).astype(np.float32)
    tails = np.where(z < 0, half_tail, np.float32(1.0) - half_tail)
    middle = np.float32(0.5) * (np.float32(1.0) + z * _horner_f32(ERF_P, z * z))
    return np.where(np.abs(z) < np.float32(ERF_SPLIT), middle, tails).astype(np.float32)


# Numerical Recipes' erfcc (Press et al., 2nd ed., 6.2): erfc(z) = t * exp(-z^2 + P(t)) with
# t = 1 / (1 + z / 2), a Chebyshev fit whose relative error is below 1.2e-7 for every z >= 0,
# so the left tail of Phi keeps float32's relative precision. The constant term carries
# log(1/2), the factor of Phi(x) = erfc(-x / sqrt(2)) / 2.
ERFC_T = (-1.26551223 - math.log(2.0), 1.00002368, 0.37409196, 0.09678418, -0.18628806,
          0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _normal_cdf_float32(x, minus_half_square):
    """Phi(x) for float32 x, given -x^2 / 2. Measured against the float64 reference on
    [-12, 12]: |error| <= 2.2e-7 (2 ulp near 1), relative error <= 1.3e-6 for x > -5 and
    <= 4e-6 for x > -9 (float32's rounding of the exponent's argument). Written as in-place
    vectorized passes: math.erfc per element is over 100x slower."""
    f32 = np.float32
    t = np.abs(x)
    t *= f32(0.5 * SQRT1_2)
    t += f32(1.0)
    np.reciprocal(t, out=t)                         # t = 1 / (1 + |x| / (2 sqrt 2))
    acc = t * f32(ERFC_T[-1])
    for c in ERFC_T[-2:0:-1]:
        acc += f32(c)
        acc *= t
    acc += f32(ERFC_T[0])
    acc += minus_half_square
    np.exp(acc, out=acc)
    acc *= t                                        # Phi(-|x|), without cancellation
    # Phi(x) = Phi(-|x|) + [x >= 0] * (1 - 2 Phi(-|x|)): arithmetic instead of np.where, which
    # branches per element and is several times slower on a random sign pattern.
    flip = acc * f32(-2.0)
    flip += f32(1.0)
    flip *= x >= 0
    acc += flip
    return acc


# Elements per pass of the float32 path: 256 KiB blocks, so that its thirty-odd elementwise
# passes run on data in the core's L2 cache instead of streaming the whole tensor each time
# (three times faster at BERT's MLP widths).
BLOCK = 1 << 16


def _by_blocks(fn, x, results):
    """fn(block) -> `results` arrays, evaluated over consecutive blocks of x's elements and
    assembled into arrays of x's shape."""
    flat = np.ascontiguousarray(x).reshape(-1)
    outs = [np.empty_like(flat) for _ in range(results)]
    for start in range(0, flat.size, BLOCK):
        for out, part in zip(outs, fn(flat[start:start + BLOCK])):
            out[start:start + BLOCK] = part
    return [out.reshape(x.shape) for out in outs]


def _gelu_with_slope(x):
    minus_half_square = x * x
    minus_half_square *= -0.5
    if x.dtype == np.float32:
        cdf = _normal_cdf_float32(x, minus_half_square)
    else:
        cdf = normal_cdf(x)
    slope = np.exp(minus_half_square, out=minus_half_square)
    slope *= INV_SQRT_2PI
    slope *= x
    slope += cdf                                    # Phi(x) + x * phi(x)
    cdf *= x
    return cdf, slope


def gelu_with_slope(x, approximate="none"):
    """Returns (gelu(x), gelu'(x)): the forward's value and the slope its backward multiplies
    by, sharing one erf (for backends that keep the slope between forward and backward)."""
    if approximate == "tanh":
        return gelu_tanh_with_slope(x)
    if x.dtype == np.float32 and x.size > BLOCK:
        return tuple(_by_blocks(_gelu_with_slope, x, 2))
    return _gelu_with_slope(x)


def _gelu_float32(x):
    return (x * _normal_cdf_float32(x, x * x * np.float32(-0.5)),)


def gelu_forward(x, approximate="none"):
    """Returns y = gelu(x); the backward needs only x."""
    if approximate == "tanh":
        return gelu_tanh_with_slope(x)[0]
    if x.dtype == np.float32:
        return _by_blocks(_gelu_float32, x, 1)[0] if x.size > BLOCK else _gelu_float32(x)[0]
    return x * normal_cdf(x)


def gelu_backward(dy, x, approximate="none"):
    """Returns dx = dy * gelu'(x)."""
    if approximate == "tanh":
        return dy * gelu_tanh_with_slope(x)[1]
    if x.dtype == np.float32:
        return dy * gelu_with_slope(x)[1]
    cdf = normal_cdf(x)
    pdf = INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return dy * (cdf + x * pdf)


# GPT-2's GELU (transformers' "gelu_new", torch's approximate="tanh"):
#     gelu(x) = 0.5 x (1 + tanh(u)),   u = sqrt(2 / pi) (x + 0.044715 x^3)
#     gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
TANH_C = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715


def gelu_tanh_with_slope(x):
    """(gelu(x), gelu'(x)) in the tanh form, in x's dtype."""
    x2 = x * x
    t = np.tanh(x * (1.0 + TANH_CUBIC * x2) * TANH_C)
    half = 0.5 * (1.0 + t)
    y = x * half
    slope = half + 0.5 * x * (1.0 - t * t) * TANH_C * (1.0 + 3.0 * TANH_CUBIC * x2)
    return y.astype(x.dtype, copy=False), slope.astype(x.dtype, copy=False)
