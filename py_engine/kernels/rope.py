"""Rotary position embedding on the GPU (shaders/rope.wgsl); NumPy reference:
py_engine/ops/rope.py.

    rope = await RopeKernels.load(device)
    cos, sin = rope.tables(head_dim, positions=P, rope_parameters=config_rope_parameters)
    rope.forward(program, q, cos, sin, q_out, rows=B*T, heads=H, head_dim=D, seq=T)
    rope.forward(program, k, cos, sin, k_out, rows=B*T, heads=Hkv, head_dim=D, seq=T)
    rope.backward(program, dq_out, cos, sin, dq, rows=B*T, heads=H, head_dim=D, seq=T)

q, k and their gradients: [B*T, heads * head_dim] f32, as the projections produce them. With
partial rotary (Phi-2's partial_rotary_factor in rope_parameters: `rotary_dim=R` to forward and
backward, R from rotary_dim()) only the first R dimensions of each head rotate and the rest are
copied through. cos, sin: [P, R / 2] f32 tables (R = head_dim without the factor) for
positions 0 .. P-1, built once per model (in pure Python here, in double precision: this runs
in the browser too). Row r is at position offset + r % T;
offset + T <= P. The offset is an int fixed when the dispatch is recorded, or a
py_engine.gpu.Variable set between replays (decoding with a KV cache replays one program per
new token at a growing offset).
"""

import math
from array import array

from . import KernelFamily
from ..gpu import Variable, require_floats, value_of

SOURCE = "rope.wgsl"
WORKGROUP = 256
ENTRIES = ("rope_forward", "rope_backward")
DEFAULT_THETA = 10000.0


def rotary_dim(head_dim, rope_parameters=None):
    """The rotated dimensions of a head: int(head_dim * partial_rotary_factor), as transformers
    computes them (all of them without the factor); even and at least 2."""
    factor = float((rope_parameters or {}).get("partial_rotary_factor", 1.0))
    dim = int(head_dim * factor)
    if not 0.0 < factor <= 1.0 or dim < 2 or dim % 2:
        raise ValueError(f"partial_rotary_factor {factor} of head_dim {head_dim} gives {dim} "
                         "rotary dimensions; RoPE needs an even number >= 2")
    return dim


def rope_inv_freq(head_dim, rope_parameters=None, seq_len=None):
    """inv_freq [rotary_dim // 2] as floats, from a transformers-style rope_parameters dict
    (rope_type "default", "linear", "llama3" or "longrope", whose factors depend on `seq_len`,
    see longrope_factors; partial_rotary_factor); the same math as
    py_engine.ops.rope.rope_inv_freq."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim >= 2, got {head_dim}")
    p = dict(rope_parameters or {})
    rope_type = p.get("rope_type", p.get("type", "default"))
    head_dim = rotary_dim(head_dim, p)      # the frequencies span the rotated dimensions only
    theta = float(p.get("rope_theta", DEFAULT_THETA))
    inv_freq = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        factor = float(p["factor"])
        return [f / factor for f in inv_freq]
    if rope_type == "llama3":
        factor = float(p["factor"])
        low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
        old_context = float(p["original_max_position_embeddings"])
        scaled = []
        for f in inv_freq:
            wavelen = 2 * math.pi / f
            if wavelen < old_context / high:
                scaled.append(f)
            elif wavelen > old_context / low:
                scaled.append(f / factor)
            else:
                smooth = (old_context / wavelen - low) / (high - low)
                scaled.append((1 - smooth) * f / factor + smooth * f)
        return scaled
    if rope_type == "longrope":
        return [f / e for f, e in zip(inv_freq, longrope_factors(p, head_dim, seq_len))]
    raise ValueError(f"rope_type {rope_type!r} is not supported (default, linear, llama3, longrope)")


def longrope_factors(rope_parameters, head_dim, seq_len=None):
    """LongRoPE's (Phi-3) per-frequency divisors of inv_freq, as transformers'
    _compute_longrope_parameters picks them: long_factor when the sequence is longer than
    original_max_position_embeddings, short_factor otherwise (and when seq_len is None)."""
    p = rope_parameters
    long = uses_long_factor(p, seq_len)
    factors = [float(f) for f in p["long_factor" if long else "short_factor"]]
    if len(factors) != head_dim // 2:
        raise ValueError(f"longrope {'long' if long else 'short'}_factor has {len(factors)} values; "
                         f"head_dim {head_dim} needs {head_dim // 2}")
    return factors


def uses_long_factor(rope_parameters, seq_len):
    """Whether tables for sequences of `seq_len` tokens use longrope's long_factor (False for
    other rope types): the one thing about seq_len that changes a table."""
    p = rope_parameters or {}
    return (p.get("rope_type", p.get("type")) == "longrope" and seq_len is not None
            and seq_len > int(p["original_max_position_embeddings"]))


def rope_attention_scaling(rope_parameters=None):
    """The factor on cos and sin (transformers' attention_scaling): 1 except for longrope, whose
    attention_factor defaults to sqrt(1 + ln(factor) / ln(original_max_position_embeddings))
    when factor > 1 (the config's max_position_embeddings / original_max_position_embeddings
    when it names no factor; see LlamaConfig)."""
    p = dict(rope_parameters or {})
    if p.get("rope_type", p.get("type", "default")) != "longrope":
        return 1.0
    if p.get("attention_factor") is not None:
        return float(p["attention_factor"])
    factor = float(p["factor"])
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(float(p["original_max_position_embeddings"])))


def rope_tables(inv_freq, positions, scaling=1.0):
    """(cos, sin) as array("f"), each [positions, len(inv_freq)] row-major, for positions
    0 .. positions-1, times `scaling` (rope_attention_scaling); angles and their cos/sin in
    double precision, rounded once."""
    cos, sin = array("f"), array("f")
    for p in range(positions):
        for f in inv_freq:
            angle = p * f
            cos.append(scaling * math.cos(angle))
            sin.append(scaling * math.sin(angle))
    return cos, sin


class RopeKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def tables(self, head_dim, positions, rope_parameters=None, seq_len=None):
        """(cos, sin) buffers for positions 0 .. positions-1 (see rope_tables), for sequences
        of `seq_len` tokens (which longrope's factors depend on; default: positions)."""
        inv_freq = rope_inv_freq(head_dim, rope_parameters, positions if seq_len is None else seq_len)
        cos, sin = rope_tables(inv_freq, positions, rope_attention_scaling(rope_parameters))
        return (self.device.buffer_from(cos, label="rope cos"),
                self.device.buffer_from(sin, label="rope sin"))

    def _record(self, entry, program, src, cos, sin, dst, rows, heads, head_dim, seq, offset,
                rotary_dim):
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim >= 2, got {head_dim}")
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        if not 2 <= rotary_dim <= head_dim or rotary_dim % 2:
            raise ValueError(f"rotary_dim {rotary_dim} must be even, >= 2 and <= head_dim {head_dim}")
        if rows < 1 or heads < 1 or seq < 1 or value_of(offset) < 0:
            raise ValueError(f"rope needs rows, heads, seq >= 1, offset >= 0; got {rows}, "
                             f"{heads}, {seq}, {value_of(offset)}")
        if rows % seq:
            raise ValueError(f"{rows} rows are not whole sequences of {seq}")
        half = rotary_dim // 2
        table_rows = min(cos.size, sin.size) // (4 * half)
        fits = lambda p: 0 <= p and p + seq <= table_rows
        what = f"RoPE tables of {table_rows} positions ({seq} rows a sequence)"
        if isinstance(offset, Variable):
            offset.require(fits, what)
        elif not fits(offset):
            raise ValueError(f"positions up to {offset + seq - 1} need {offset + seq} table rows; "
                             f"the tables hold {table_rows}")
        width = heads * head_dim
        require_floats(src, rows * width, "input")
        require_floats(dst, rows * width, "output")
        # One thread per rotated pair and per passed-through element of each head.
        items = rows * heads * (head_dim - half)
        params = self.device.uniform("6I", items, heads, half, seq, offset, head_dim)
        return self._dispatch(program, entry, [src, dst, params, cos, sin], items)

    def forward(self, program, x, cos, sin, out, rows, heads, head_dim, seq, offset=0,
                rotary_dim=None):
        """out = x rotated by position (offset + row % seq); out must not be x. `offset`: an
        int, or a Variable changeable per replay; `rotary_dim`: the rotated dimensions of each
        head (None: all; the tables must hold rotary_dim / 2 frequencies)."""
        return self._record("rope_forward", program, x, cos, sin, out, rows, heads, head_dim,
                            seq, offset, rotary_dim)

    def backward(self, program, dout, cos, sin, dx, rows, heads, head_dim, seq, offset=0,
                 rotary_dim=None):
        """dx = dout rotated back (the inverse rotation)."""
        return self._record("rope_backward", program, dout, cos, sin, dx, rows, heads, head_dim,
                            seq, offset, rotary_dim)
