"""Symmetric per-group weight quantization for frozen base weights (QLoRA-style), and the
linear layer that reads them. NumPy reference of shaders/quantized_linear.wgsl.

    qw = quantize(w, bits=8, group_size=64)           # w [out, in], float
    w_hat = dequantize(qw)                            # [out, in] float32
    y = quantized_linear_forward(x, qw, bias)         # x . w_hat^T + bias
    dx = quantized_linear_grad_input(dy, qw)          # dy . w_hat (the base is frozen: no dW)

Quantization, per row of w and per group of `group_size` consecutive input features
(in_features % group_size == 0, group_size % 8 == 0):

    scale = fl32(max|w_group| * fl32(1 / QMAX))       QMAX = 127 (int8) or 7 (int4)
    q     = round_half_even(w / scale), clipped to [-QMAX, QMAX]

The scale is a correctly rounded f32 product (not a quotient) so that the GPU, whose f32
division is only accurate to 2.5 ulp, computes the same bits; it is within one ulp of
max|w|/QMAX. q rounds the exact quotient w / scale (ties to even), which the f64 division
here reproduces exactly for f32 operands, and which the GPU kernel computes with an exact
residual test. Hence |w - q * scale| <= scale / 2 for every element, in exact arithmetic.
A group of zeros has scale 0 and q 0. int4 uses the symmetric range [-7, 7]: -8 never
occurs (the decoders would read it correctly).

Packing (little-endian, row-major over [out, in], so every row and group starts a new word):
  int8: element e in u32 word e // 4, bits 8 * (e % 4) .. +7, two's complement.
  int4: element e in u32 word e // 8, bits 4 * (e % 8) .. +3, two's complement.
Scales: float32 [out, in // group_size], row-major.
"""

import numpy as np

MODES = ("int8", "int4")
BITS = {"int8": 8, "int4": 4}
QMAX = {8: 127, 4: 7}
PER_WORD = {8: 4, 4: 8}
DEFAULT_GROUP = 64
# fl32(1 / QMAX): the scale is max|w| times this (bit patterns 0x3c010204 and 0x3e124925).
INV_QMAX = {8: np.float32(1 / 127), 4: np.float32(1 / 7)}


class QuantizedWeight:
    """A quantized [out_features, in_features] weight: `packed` (uint32 words, layout above),
    `scales` (float32 [out, in // group_size]), `bits` (8 or 4), `group_size`."""

    __slots__ = ("packed", "scales", "shape", "bits", "group_size")

    def __init__(self, packed, scales, shape, bits, group_size):
        self.packed, self.scales = packed, scales
        self.shape, self.bits, self.group_size = tuple(shape), bits, group_size

    @property
    def qmax(self):
        return QMAX[self.bits]

    def __repr__(self):
        return f"QuantizedWeight({self.shape}, int{self.bits}, group_size={self.group_size})"


def check_layout(in_features, group_size, bits=8):
    """Raise ValueError unless rows of `in_features` split into whole groups of whole words."""
    if bits not in QMAX:
        raise ValueError(f"bits must be 8 or 4, got {bits!r}")
    if group_size < 8 or group_size % 8:
        raise ValueError(f"group_size must be a positive multiple of 8, got {group_size}")
    if in_features < 1 or in_features % group_size:
        raise ValueError(f"in_features {in_features} is not a multiple of group_size {group_size}")


def group_scales(w, bits, group_size):
    """float32 [out, in // group_size]: fl32(max|w| * fl32(1 / QMAX)) per group."""
    out_f, in_f = w.shape
    amax = np.abs(w.astype(np.float32)).reshape(out_f, in_f // group_size, group_size).max(-1)
    return (amax * INV_QMAX[bits]).astype(np.float32)


def quantize_values(w, bits=8, group_size=DEFAULT_GROUP):
    """(q int8 [out, in], scales float32 [out, groups]) before packing."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"quantize needs a 2-D weight [out, in], got shape {w.shape}")
    check_layout(w.shape[1], group_size, bits)
    w32 = w.astype(np.float32)
    if not np.all(np.isfinite(w32)):
        raise ValueError("cannot quantize a weight holding NaN or inf")
    scales = group_scales(w32, bits, group_size)
    per_element = np.repeat(scales, group_size, axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(per_element > 0, w32.astype(np.float64) / per_element, 0.0)
    q = np.clip(np.round(ratio), -QMAX[bits], QMAX[bits]).astype(np.int8)
    return q, scales


def pack(q, bits):
    """uint32 words holding the int8 values `q` (in [-2^(bits-1), 2^(bits-1))) as `bits`-bit
    two's complement fields, little-endian within each word."""
    per_word = PER_WORD[bits]
    flat = np.ascontiguousarray(q, dtype=np.int8).ravel()
    if flat.size % per_word:
        raise ValueError(f"{flat.size} values do not fill whole words of {per_word}")
    fields = (flat.astype(np.uint32) & ((1 << bits) - 1)).reshape(-1, per_word)
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    return np.bitwise_or.reduce(fields << shifts, axis=1).astype(np.uint32)


def unpack(packed, bits, count):
    """The first `count` signed values stored in `packed` (inverse of `pack`), as int8."""
    per_word = PER_WORD[bits]
    shifts = np.arange(per_word, dtype=np.uint32) * bits
    fields = (np.asarray(packed, dtype=np.uint32)[:, None] >> shifts) & ((1 << bits) - 1)
    values = fields.astype(np.int16)
    values -= (values >= (1 << (bits - 1))) * (1 << bits)
    return values.ravel()[:count].astype(np.int8)


def quantize(w, bits=8, group_size=DEFAULT_GROUP):
    """QuantizedWeight of a float [out, in] weight (int8 for bits=8, int4 for bits=4)."""
    q, scales = quantize_values(w, bits, group_size)
    return QuantizedWeight(pack(q, bits), scales, q.shape, bits, group_size)


def dequantize(qw):
    """float32 [out, in]: q * scale, each product rounded once to f32 (as the kernels do)."""
    out_f, in_f = qw.shape
    q = unpack(qw.packed, qw.bits, out_f * in_f).reshape(out_f, in_f).astype(np.float32)
    return q * np.repeat(qw.scales, qw.group_size, axis=1)


def quantized_linear_forward(x, qw, bias=None):
    """y[..., out] = x[..., in] . dequantize(qw)^T + bias, in x's precision (float64 stays)."""
    w = dequantize(qw).astype(np.result_type(x, np.float32))
    y = x @ w.T
    return y + bias if bias is not None else y


def quantized_linear_grad_input(dy, qw):
    """dx[..., in] = dy[..., out] . dequantize(qw)."""
    return dy @ dequantize(qw).astype(np.result_type(dy, np.float32))

