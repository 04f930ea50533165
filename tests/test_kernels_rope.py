"""RoPE kernels (shaders/rope.wgsl) on wgpu-native against the NumPy reference in float64: fresh
random inputs, NaN-poisoned outputs, ||out - ref|| / ||ref|| under BOUND; and the pure-Python
tables the recorder builds against the NumPy ones."""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.gpu import Variable
from py_engine.kernels.rope import RopeKernels, rope_attention_scaling, rope_inv_freq, rope_tables
from py_engine.ops import rope as ops

# f32 against float64: tables rounded once to f32, then a product and an fma per element
# (measured ~1e-7 on lavapipe).
BOUND = 1e-6

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@pytest.fixture(scope="module")
def rope(device):
    return run(RopeKernels.load(device))


LONGROPE = {"rope_type": "longrope", "original_max_position_embeddings": 40, "factor": 3.0,
            "short_factor": [1.0 + 0.01 * j for j in range(8)],
            "long_factor": [1.0 + 0.9 * j for j in range(8)]}


@pytest.mark.parametrize("head_dim, params, seq_len", [
    (2, None, None), (64, {"rope_theta": 500000.0}, None),
    (32, {"rope_type": "linear", "factor": 4.0}, None), (64, LLAMA3, None),
    (16, LONGROPE, 40), (16, LONGROPE, 41), (16, dict(LONGROPE, attention_factor=0.9), 50),
])
def test_python_tables_match_numpy(head_dim, params, seq_len):
    """The same frequencies (LongRoPE's short or long factors by seq_len) and the same tables,
    times LongRoPE's attention factor."""
    positions = 50
    inv = rope_inv_freq(head_dim, params, seq_len)
    np.testing.assert_allclose(inv, ops.rope_inv_freq(head_dim, params, seq_len), rtol=1e-14)
    scaling = rope_attention_scaling(params)
    cos, sin = rope_tables(inv, positions, scaling)
    ref_cos, ref_sin = ops.rope_tables(ops.rope_inv_freq(head_dim, params, seq_len), positions,
                                       scaling=scaling)
    # one f32 rounding of each value
    np.testing.assert_allclose(np.asarray(cos), ref_cos.ravel(), rtol=0, atol=6e-8)
    np.testing.assert_allclose(np.asarray(sin), ref_sin.ravel(), rtol=0, atol=6e-8)


@pytest.mark.parametrize("batch, seq, heads, kv_heads, head_dim, offset, params", [
    (1, 1, 1, 1, 2, 0, None), (2, 5, 4, 2, 16, 0, None), (3, 7, 2, 1, 32, 11, LLAMA3),
    (2, 9, 6, 2, 64, 0, {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}),
])
def test_rope_matches_numpy(device, rope, batch, seq, heads, kv_heads, head_dim, offset, params):
    """q and k (grouped-query: fewer k heads) rotated forward, their gradients rotated back,
    with one table for all positions up to offset + seq."""
    rng = np.random.default_rng()
    rows = batch * seq
    q, k = (rng.standard_normal((rows, h * head_dim)).astype(np.float32) for h in (heads, kv_heads))
    dq, dk = (rng.standard_normal(a.shape).astype(np.float32) for a in (q, k))
    cos_b, sin_b = rope.tables(head_dim, offset + seq + 3, params)
    b = device.buffer_from
    outs = [poisoned(device, a.size) for a in (q, k, dq, dk)]
    program = device.program()
    shape = dict(rows=rows, head_dim=head_dim, seq=seq, offset=offset)
    rope.forward(program, b(q), cos_b, sin_b, outs[0], heads=heads, **shape)
    rope.forward(program, b(k), cos_b, sin_b, outs[1], heads=kv_heads, **shape)
    rope.backward(program, b(dq), cos_b, sin_b, outs[2], heads=heads, **shape)
    rope.backward(program, b(dk), cos_b, sin_b, outs[3], heads=kv_heads, **shape)
    got = read(program, *outs)

    cos, sin = ops.rope_tables(ops.rope_inv_freq(head_dim, params), seq, offset)
    f64 = np.float64
    want = [ops.rope_forward(q.astype(f64), cos, sin, heads),
            ops.rope_forward(k.astype(f64), cos, sin, kv_heads),
            ops.rope_backward(dq.astype(f64), cos, sin, heads),
            ops.rope_backward(dk.astype(f64), cos, sin, kv_heads)]
    for name, g, w in zip(("q", "k", "dq", "dk"), got, want):
        assert rel_error(g, w) <= BOUND, (name, rel_error(g, w))


PARTIAL = {"partial_rotary_factor": 0.4}        # phi-2's: 4 of 10 dimensions, 12 of 32


@pytest.mark.parametrize("seq, heads, head_dim, offset, params", [
    (5, 4, 10, 0, PARTIAL), (7, 3, 32, 9, PARTIAL), (3, 2, 16, 4, {"partial_rotary_factor": 0.5}),
    (6, 2, 8, 2, {"partial_rotary_factor": 0.25, "rope_type": "linear", "factor": 2.0}),
])
def test_partial_rotary_matches_numpy(device, rope, seq, heads, head_dim, offset, params):
    """Only the first rotary_dim dimensions of each head rotate (forward and backward); the
    rest come through unchanged, over poisoned outputs."""
    from py_engine.kernels.rope import rotary_dim

    rng = np.random.default_rng()
    rotary = rotary_dim(head_dim, params)
    assert rotary < head_dim
    rows = 2 * seq
    x, dy = (rng.standard_normal((rows, heads * head_dim)).astype(np.float32) for _ in range(2))
    cos_b, sin_b = rope.tables(head_dim, offset + seq, params)
    outs = [poisoned(device, x.size) for _ in range(2)]
    program = device.program()
    shape = dict(rows=rows, heads=heads, head_dim=head_dim, seq=seq, offset=offset, rotary_dim=rotary)
    rope.forward(program, device.buffer_from(x), cos_b, sin_b, outs[0], **shape)
    rope.backward(program, device.buffer_from(dy), cos_b, sin_b, outs[1], **shape)
    got = read(program, *outs)

    cos, sin = ops.rope_tables(ops.rope_inv_freq(head_dim, params), seq, offset)
    assert cos.shape == (seq, rotary // 2)
    want = [ops.rope_forward(x.astype(np.float64), cos, sin, heads),
            ops.rope_backward(dy.astype(np.float64), cos, sin, heads)]
    for name, g, w, src in zip(("x", "dy"), got, want, (x, dy)):
        assert rel_error(g, w) <= BOUND, (name, rel_error(g, w))
        passed = g.reshape(rows, heads, head_dim)[..., rotary:]
        assert np.array_equal(passed, src.reshape(rows, heads, head_dim)[..., rotary:]), name


def test_partial_rotary_tables_follow_transformers():
    """The frequencies span the rotated dimensions (transformers' dim = int(head_dim * factor))."""
    import torch
    from transformers import PhiConfig
    from transformers.models.phi.modeling_phi import PhiRotaryEmbedding

    config = PhiConfig(hidden_size=80, num_attention_heads=4, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4})
    want = PhiRotaryEmbedding(config).inv_freq.double().numpy()
    assert want.shape == (4,)
    np.testing.assert_allclose(ops.rope_inv_freq(20, PARTIAL), want, rtol=1e-6)
    np.testing.assert_allclose(rope_inv_freq(20, PARTIAL), want, rtol=1e-6)
    with pytest.raises(ValueError, match="gives 3 rotary dimensions"):
        rope_inv_freq(8, {"partial_rotary_factor": 0.375})


def test_rope_grid_stride_covers_more_than_one_launch(device):
    rope = run(RopeKernels.load(device, workgroup=64))
    rows, heads, head_dim, seq = 64, 8, 32, 16
    rng = np.random.default_rng()
    x = rng.standard_normal((rows, heads * head_dim)).astype(np.float32)
    cos_b, sin_b = rope.tables(head_dim, seq)
    out = poisoned(device, x.size)
    half = head_dim // 2
    params = device.uniform("6I", rows * heads * half, heads, half, seq, 0, head_dim)
    program = device.program()
    program.dispatch(rope._kernels["rope_forward"], [device.buffer_from(x), out, params, cos_b,
                                                     sin_b], 3)
    (got,) = read(program, out)
    cos, sin = ops.rope_tables(ops.rope_inv_freq(head_dim), seq)
    assert rel_error(got, ops.rope_forward(x.astype(np.float64), cos, sin, heads)) <= BOUND


def test_rope_rejects_bad_shapes(device, rope):
    cos_b, sin_b = rope.tables(8, 4)
    x = device.create_buffer(4 * 8 * 16)
    program = device.program()
    with pytest.raises(ValueError, match="table rows"):
        rope.forward(program, x, cos_b, sin_b, x, rows=8, heads=2, head_dim=8, seq=4, offset=1)
    with pytest.raises(ValueError, match="whole sequences"):
        rope.forward(program, x, cos_b, sin_b, x, rows=6, heads=2, head_dim=8, seq=4)
    with pytest.raises(ValueError, match="even head_dim"):
        rope.forward(program, x, cos_b, sin_b, x, rows=8, heads=2, head_dim=7, seq=4)
    with pytest.raises(ValueError, match="rotary_dim 10 must be even, >= 2 and <= head_dim 8"):
        rope.forward(program, x, cos_b, sin_b, x, rows=8, heads=2, head_dim=8, seq=4, rotary_dim=10)
    with pytest.raises(ValueError, match="input holds"):
        rope.forward(program, x, cos_b, sin_b, x, rows=8, heads=4, head_dim=8, seq=4)


def test_positions_change_between_replays(device, rope):
    """Decoding with a KV cache: one recorded program, replayed at growing offsets."""
    rng = np.random.default_rng()
    heads, head_dim, seq, table = 3, 8, 1, 12
    x = rng.standard_normal((2 * seq, heads * head_dim)).astype(np.float32)
    cos_b, sin_b = rope.tables(head_dim, table)
    out = poisoned(device, x.size)
    positions = Variable(0)
    program = device.program()
    rope.forward(program, device.buffer_from(x), cos_b, sin_b, out, rows=2 * seq, heads=heads,
                 head_dim=head_dim, seq=seq, offset=positions)
    program.read(out)
    for past in (0, 5, 11):
        positions.set(past)
        (got,) = run(program.run())
        cos, sin = ops.rope_tables(ops.rope_inv_freq(head_dim), seq, past)
        want = ops.rope_forward(x.astype(np.float64), cos, sin, heads)
        assert rel_error(np.frombuffer(bytes(got), np.float32), want) <= BOUND, past
    with pytest.raises(ValueError, match="RoPE tables of 12 positions"):
        positions.set(12)                       # position 12 is past the 12-row tables
    assert positions.value == 11
