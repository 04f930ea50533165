"""Quantized linear kernels (shaders/quantized_linear.wgsl) on wgpu-native against the NumPy
reference (py_engine.ops.quantize): fresh random inputs every run, NaN-poisoned outputs,
||out - ref|| / ||ref|| against float64 on the same dequantized weight under BOUND; the device
quantizer bit for bit against NumPy.
"""

import numpy as np
import pytest
from conftest import read, rel_error, run

from py_engine.gpu.selfcheck import poisoned
from py_engine.kernels.quantized_linear import (QuantizedLinearKernels, QuantizedWeightBuffers,
                                                weight_bytes)
from py_engine.models.llama_config import LlamaConfig
from py_engine.ops.quantize import (QuantizedWeight, dequantize, pack, quantize,
                                    quantize_values, quantized_linear_forward,
                                    quantized_linear_grad_input)

# f32 sums of <= 256 products of f32 operands (the dequantized weight is the same f32 values
# on both sides) against float64: a few ulps (~1e-7) of accumulated rounding; 1e-5 catches any
# wrong or unwritten element of a few hundred.
BOUND = 1e-5
MODES = {"int8": 8, "int4": 4}

# Shapes (rows, in, out, group): one row; in = group; several groups; edges that are not
# multiples of any tile; a group of 8 (one int4 word).
# One row (a decoding step) runs quantized_gemv, or quantized_gemv_vec4 where a row of W is a
# whole number of four-word reads (every one-row shape here but in = 40; with groups of 8 an
# int8 read spans two groups, an int4 one four).
SHAPES = [(1, 64, 5, 64), (37, 192, 29, 64), (9, 40, 70, 8), (16, 256, 33, 32), (3, 64, 1, 32),
          (1, 192, 29, 64), (1, 40, 70, 8), (1, 256, 33, 32), (1, 96, 13, 8), (1, 128, 13, 8)]


@pytest.fixture(scope="module", params=["default", "small", "lanes"])
def ql(request, device):
    # The small workgroups make the shapes above span several of them in each direction, with
    # a part-filled one at each edge; "lanes": four threads per output of one row, two outputs
    # per workgroup (partial sums added in a tree).
    constants = {"default": None, "small": {"WG_X": 2, "WG_Y": 2},
                 "lanes": {"WG_X": 2, "WG_Y": 2, "LANES": 4, "WORKGROUP": 8}}
    return run(QuantizedLinearKernels.load(device, constants[request.param]))


def random_quantized(rng, out_f, in_f, bits, group):
    """Every field value, -2^(bits-1) included, and scales of mixed magnitudes."""
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    q = rng.integers(lo, hi, (out_f, in_f)).astype(np.int8)
    scales = (rng.uniform(0.1, 2.0, (out_f, in_f // group)) / hi).astype(np.float32)
    return QuantizedWeight(pack(q, bits), scales, (out_f, in_f), bits, group)


def upload(device, qw, mode):
    return QuantizedWeightBuffers(device.buffer_from(qw.packed), device.buffer_from(qw.scales),
                                  qw.shape, mode, qw.group_size)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("rows, in_f, out_f, group", SHAPES)
def test_forward_and_grad_input_match_numpy(device, ql, rng, mode, rows, in_f, out_f, group):
    qw = random_quantized(rng, out_f, in_f, MODES[mode], group)
    w = upload(device, qw, mode)
    x = rng.standard_normal((rows, in_f), dtype=np.float32)
    dy = rng.standard_normal((rows, out_f), dtype=np.float32)
    bias = rng.standard_normal(out_f, dtype=np.float32)
    y, y_bias, dx = (poisoned(device, n) for n in (rows * out_f, rows * out_f, rows * in_f))
    bx, bdy = device.buffer_from(x), device.buffer_from(dy)
    program = device.program()
    ql.linear(program, bx, w, y, rows)
    ql.linear(program, bx, w, y_bias, rows, in_f, out_f, bias=device.buffer_from(bias))
    ql.linear_grad_input(program, bdy, w, dx, rows, in_f, out_f)
    out_y, out_y_bias, out_dx = read(program, y, y_bias, dx)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    assert rel_error(out_y, quantized_linear_forward(x64, qw)) <= BOUND
    assert rel_error(out_y_bias, quantized_linear_forward(x64, qw, bias)) <= BOUND
    assert rel_error(out_dx, quantized_linear_grad_input(dy64, qw)) <= BOUND


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("rows", [11, 1])
def test_alpha_beta_accumulate(device, ql, rng, mode, rows):
    """out = alpha * product + beta * out: dx accumulates, as the LoRA backward adds dh . A."""
    in_f, out_f, group = 128, 20, 64
    qw = random_quantized(rng, out_f, in_f, MODES[mode], group)
    w = upload(device, qw, mode)
    x = rng.standard_normal((rows, in_f), dtype=np.float32)
    dy = rng.standard_normal((rows, out_f), dtype=np.float32)
    y0 = rng.standard_normal((rows, out_f), dtype=np.float32)
    dx0 = rng.standard_normal((rows, in_f), dtype=np.float32)
    y, dx = device.buffer_from(y0), device.buffer_from(dx0)
    program = device.program()
    ql.linear(program, device.buffer_from(x), w, y, rows, alpha=-0.5, beta=2.0)
    ql.linear_grad_input(program, device.buffer_from(dy), w, dx, rows, alpha=1.5, beta=1.0)
    out_y, out_dx = read(program, y, dx)
    ref_y = -0.5 * quantized_linear_forward(x.astype(np.float64), qw) + 2.0 * y0
    ref_dx = 1.5 * quantized_linear_grad_input(dy.astype(np.float64), qw) + dx0
    assert rel_error(out_y, ref_y) <= BOUND
    assert rel_error(out_dx, ref_dx) <= BOUND


def test_one_row_reads_four_words_where_a_row_allows(device, ql):
    for mode, in_f, entry in [("int8", 96, "quantized_gemv_vec4"), ("int8", 40, "quantized_gemv"),
                              ("int4", 128, "quantized_gemv_vec4"), ("int4", 80, "quantized_gemv")]:
        w = ql.allocate(3, in_f, mode, group_size=8)
        assert ql.entry_for(1, w) == entry, (mode, in_f)
        assert ql.entry_for(2, w) == "quantized_linear_forward"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_one_row_past_the_workgroup_limit(device, rng, mode):
    """One output per workgroup: 70,001 outputs spill past 65,535 workgroups into y."""
    ql = run(QuantizedLinearKernels.load(device, {"LANES": 1, "WORKGROUP": 1}, modes=(mode,),
                                         source_formats=()))
    qw = random_quantized(rng, 70001, 8, MODES[mode], 8)
    x = rng.standard_normal((1, 8), dtype=np.float32)
    y = poisoned(device, 70001)
    program = device.program()
    ql.linear(program, device.buffer_from(x), upload(device, qw, mode), y, 1)
    (out,) = read(program, y)
    assert rel_error(out, quantized_linear_forward(x.astype(np.float64), qw)) <= BOUND


def weight_with_ties(rng, out_f, in_f, bits, group):
    """A weight whose groups hold exact ties (k + 1/2) * scale, their f32 neighbours one ulp
    either side, a group of zeros, and a group on a power-of-two scale full of exact halves."""
    qmax = (1 << (bits - 1)) - 1
    w = (rng.standard_normal((out_f, in_f)) * rng.uniform(0.01, 3.0, (out_f, 1))).astype(np.float32)
    _, scales = quantize_values(w, bits, group)
    groups = in_f // group
    for o in range(out_f):
        for g in range(groups):
            s = scales[o, g]
            cols = g * group + rng.choice(group, size=min(group, 12), replace=False)
            amax_col = g * group + np.argmax(np.abs(w[o, g * group:(g + 1) * group]))
            for c in cols:
                if c == amax_col:
                    continue
                m = rng.integers(-qmax + 1, qmax - 1) + 0.5
                v = np.float32(m * np.float64(s))          # the nearest f32 to the tie
                w[o, c] = [v, np.nextafter(v, np.float32(np.inf)),
                           np.nextafter(v, np.float32(-np.inf))][int(rng.integers(3))]
    w[0, :group] = 0.0
    if out_f > 1:
        # scale exactly 0.25 (fl32(fl32(qmax / 4) * fl32(1 / qmax)) == 0.25), exact ties
        w[1, :group] = (rng.integers(-2 * qmax + 1, 2 * qmax, group) / 2 * 0.25).astype(np.float32)
        w[1, 0] = np.float32(qmax * 0.25)
    _, check = quantize_values(w, bits, group)
    assert out_f < 2 or check[1, 0] == 0.25
    return w


def bf16_truncate(w):
    return (w.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("source_format", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("out_f, in_f, group", [(5, 192, 64), (3, 64, 64), (4, 48, 8)])
def test_quantize_kernel_matches_numpy_bit_for_bit(device, ql, rng, mode, source_format,
                                                   out_f, in_f, group):
    bits = MODES[mode]
    w = weight_with_ties(rng, out_f, in_f, bits, group)
    if source_format == "f16":
        w16 = (w * 0.5).astype(np.float16)     # keep well inside f16 range
        w, source = w16.astype(np.float32), w16.tobytes()
    elif source_format == "bf16":
        w = bf16_truncate(w)
        source = (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    else:
        source = w.tobytes()
    ref = quantize(w, bits, group)
    qbuf = ql.allocate(out_f, in_f, mode, group)
    device.write(qbuf.packed, b"\xff" * qbuf.packed.size)           # poison: all fields -1
    device.write(qbuf.scales, np.full(qbuf.scales.size // 4, np.nan, np.float32))
    program = device.program()
    ql.quantize(program, device.buffer_from(source), qbuf, source_format=source_format)
    program.read(qbuf.packed)
    program.read(qbuf.scales)
    packed, scales = (bytes(v) for v in run(program.run()))
    np.testing.assert_array_equal(np.frombuffer(packed, np.uint32), ref.packed)
    np.testing.assert_array_equal(np.frombuffer(scales, np.float32).reshape(ref.scales.shape),
                                  ref.scales)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_quantize_then_linear_on_device(device, ql, rng, mode):
    """The path a browser takes: upload f32, quantize there, train against it."""
    rows, in_f, out_f, group = 7, 128, 24, 32
    w = rng.standard_normal((out_f, in_f), dtype=np.float32)
    x = rng.standard_normal((rows, in_f), dtype=np.float32)
    qbuf = ql.allocate(out_f, in_f, mode, group)
    y = poisoned(device, rows * out_f)
    program = device.program()
    ql.quantize(program, device.buffer_from(w), qbuf)
    ql.linear(program, device.buffer_from(x), qbuf, y, rows)
    (out_y,) = read(program, y)
    ref = quantized_linear_forward(x.astype(np.float64), quantize(w, MODES[mode], group))
    assert rel_error(out_y, ref) <= BOUND
    assert rel_error(dequantize(quantize(w, MODES[mode], group)), w) < (0.01 if mode == "int8" else 0.15)


def test_shape_and_layout_errors(device, ql):
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        ql.allocate(4, 48, "int8", 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        ql.allocate(4, 48, "int4", 12)
    with pytest.raises(ValueError, match="mode must be one of"):
        ql.allocate(4, 64, "int2")
    w = ql.allocate(4, 64, "int4")
    x, y = device.create_buffer(4 * 2 * 64), device.create_buffer(4 * 2 * 4)
    with pytest.raises(ValueError, match="in_features 32"):
        ql.linear(device.program(), x, w, y, 2, in_features=32)
    with pytest.raises(ValueError, match="x holds"):
        ql.linear(device.program(), x, w, y, 3)
    with pytest.raises(ValueError, match="source holds"):
        ql.quantize(device.program(), device.create_buffer(4 * 64), w)
    # the tiles are fixed in the shader: an old tile override is refused, not silently ignored
    with pytest.raises(ValueError, match=r"unknown constants \['TILE_R'\]"):
        run(QuantizedLinearKernels.load(device, {"TILE_R": 2, "WG_X": 4}))


def test_weight_bytes_per_mode():
    n = 4096 * 64
    assert weight_bytes(n, "f32") == 4 * n
    assert weight_bytes(n, "f16") == 2 * n
    assert weight_bytes(n, "int8") == n + 4 * n // 64
    assert weight_bytes(n, "int4") == n // 2 + 4 * n // 64
    assert weight_bytes(n, "int4", 128) == n // 2 + 4 * n // 128
    with pytest.raises(ValueError, match="storage mode"):
        weight_bytes(n, "int3")


def test_tinyllama_base_weight_memory():
    """TinyLlama-1.1B's shape under the runtime's storage rule: the seven projections
    compressed (int8/int4 with an f32 scale per 64 inputs), embeddings, head and norms f32."""
    from py_engine.backends.gpu_backend import planned_base_bytes
    from py_engine.models.llama import LlamaModel

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4)
    shapes = config.parameter_shapes()
    n = sum(int(np.prod(s)) for s in shapes.values())
    assert n == 1_100_048_384
    projections = sum(int(np.prod(s)) for name, s in shapes.items()
                      if any(name.endswith(p + ".weight") for p in config.projections))
    rest = n - projections
    model = LlamaModel(config, None)
    per_element = {"f32": 4, "f16": 2, "int8": 1 + 4 / 64, "int4": 0.5 + 4 / 64}
    for mode, size in per_element.items():
        assert planned_base_bytes(model, shapes, mode) == 4 * rest + size * projections, mode
    assert planned_base_bytes(model, shapes, "int4", 128) == 4 * rest + (0.5 + 4 / 128) * projections
