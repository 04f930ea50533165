"""Rotary position embedding (RoPE) as transformers applies it to Llama-family q and k: the
"rotate_half" convention, which pairs element j of a head with element j + D/2 (not the
interleaved pairs (2j, 2j+1) of the original paper and Meta's checkpoints' layout).

For head dimension D, half = D/2, a token at position p and frequency index j < half:

    angle = p * inv_freq[j]
    out[j]        = x[j] * cos(angle) - x[j + half] * sin(angle)
    out[j + half] = x[j + half] * cos(angle) + x[j] * sin(angle)

(transformers' q * cos + rotate_half(q) * sin with cos, sin = cat(freqs, freqs).cos(), .sin().)
The rotation is orthogonal, so the backward is the inverse rotation: the same formula with
-sin.

Layout: q and k as the projections produce them, [B*T, H*D] row-major (token-major, heads
side by side within a row); q and k may have different head counts (grouped-query attention).
Positions are offset + 0..T-1 in every sequence; offset > 0 is KV-cache decoding, where the
new tokens follow `offset` cached ones.

Partial rotary (Phi-2's partial_rotary_factor): only the first R = rotary_dim(D, parameters)
dimensions of each head rotate, as above with half = R/2; the other D - R pass through
unchanged. The tables then hold R/2 frequencies, computed over R (transformers' dim =
int(head_dim * partial_rotary_factor)), and the ops read R from them.

Frequencies (rope_inv_freq) follow transformers' config.rope_parameters:
    "default":  inv_freq[j] = rope_theta ** (-2j / D)
    "linear":   default / factor (positions interpolated by `factor`)
    "llama3":   Llama 3.1's piecewise scaling (transformers' _compute_llama3_parameters):
                wavelengths below original_max_position_embeddings / high_freq_factor keep
                their frequency, those above original_max_position_embeddings /
                low_freq_factor are divided by factor, those between are interpolated.
    "longrope": Phi-3's LongRoPE (older spellings "su", "yarn" in Phi-3 configs): inv_freq
                divided per frequency by short_factor, or by long_factor when the sequence
                is longer than original_max_position_embeddings (transformers'
                _compute_longrope_parameters), and cos, sin times the attention factor
                (kernels.rope.rope_attention_scaling).
The first three leave the attention scaling at 1. Tables are computed in float64 here (transformers
computes them in float32: angle errors ~ p * 6e-8 rad).
"""

import math

import numpy as np

from ..kernels.rope import longrope_factors, rope_attention_scaling, rotary_dim

DEFAULT_THETA = 10000.0


def rope_inv_freq(head_dim, rope_parameters=None, seq_len=None):
    """inv_freq [rotary_dim // 2] (float64) from a transformers-style rope_parameters dict
    ({"rope_type": ..., "rope_theta": ..., "factor": ..., "partial_rotary_factor": ...}); None
    means default RoPE with theta 10000 over the whole head. The older rope_scaling key "type"
    is accepted for "rope_type". seq_len: the length of the sequences the tables serve
    (longrope's factors depend on it)."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim >= 2, got {head_dim}")
    p = dict(rope_parameters or {})
    rope_type = p.get("rope_type", p.get("type", "default"))
    head_dim = rotary_dim(head_dim, p)      # the frequencies span the rotated dimensions only
    theta = float(p.get("rope_theta", DEFAULT_THETA))
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / float(p["factor"])
    if rope_type == "llama3":
        factor = float(p["factor"])
        low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
        old_context = float(p["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_context / high) & ~(wavelen > old_context / low)
        return np.where(medium, smoothed, scaled)
    if rope_type == "longrope":
        return inv_freq / np.asarray(longrope_factors(p, head_dim, seq_len), np.float64)
    raise ValueError(f"rope_type {rope_type!r} is not supported (default, linear, llama3, longrope)")


def rope_tables(inv_freq, seq_len, offset=0, scaling=1.0):
    """(cos, sin), each [seq_len, half] float64, for positions offset .. offset + seq_len - 1,
    times `scaling` (rope_attention_scaling). (transformers' tables are these concatenated
    with themselves along the last axis.)"""
    angles = np.arange(offset, offset + seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return scaling * np.cos(angles), scaling * np.sin(angles)


def _rotate(x, cos, sin, heads):
    seq, half = cos.shape
    rows, width = x.shape[0], x.shape[-1]
    if width % heads or width // heads < 2 * half:
        raise ValueError(f"rows of {width} values are not {heads} heads of at least {2 * half}")
    if rows % seq:
        raise ValueError(f"{rows} rows are not whole sequences of {seq}")
    v = x.reshape(rows // seq, seq, heads, width // heads)
    x1, x2 = v[..., :half], v[..., half:2 * half]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = np.empty_like(v, dtype=np.result_type(x, cos))
    out[..., :half] = x1 * c - x2 * s
    out[..., half:2 * half] = x2 * c + x1 * s
    out[..., 2 * half:] = v[..., 2 * half:]         # partial rotary: the rest passes through
    return out.reshape(x.shape)


def rope_forward(x, cos, sin, heads):
    """x [B*T, heads * D] -> the rotated x; cos, sin [T, R/2] from rope_tables (R <= D: the
    first R dimensions of each head rotate). Row r of x is position r % T of its sequence."""
    return _rotate(x, cos, sin, heads)


def rope_backward(dy, cos, sin, heads):
    """dx for the forward above: the inverse rotation of dy."""
    return _rotate(dy, cos, -sin, heads)
