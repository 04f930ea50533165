"""GGUF files, llama.cpp's model format, written in pure Python (no NumPy: this runs in
Pyodide, so the page can offer a GGUF download), and the tensor types they store: F32, F16,
and the block quantizations Q8_0 and Q4_0, bit for bit as ggml's reference quantizers (and the
`gguf` package's) make them.

The file (version 3, little-endian): "GGUF", version u32, tensor count u64, metadata count u64;
the metadata as (key, value type u32, value); per tensor its name, dimension count, dimensions
(ggml's order: the row length first), type and offset; then the tensor data, each tensor
starting on a 32-byte boundary.

    writer = GGUFWriter()
    writer.add("general.architecture", STRING, "llama")
    writer.add("llama.block_count", UINT32, 22)
    writer.add("tokenizer.ggml.tokens", ARRAY, (STRING, tokens))
    writer.add_tensor("token_embd.weight", (vocab, hidden), Q8_0, lambda: floats)
    writer.write(file)      # a binary file object; each tensor's floats are made when written

Shapes are given as the model holds them ([out, in] for a linear's weight, row-major); a block
type needs rows whose length is a multiple of 32 (block_type_for falls back to F16 otherwise, as
llama.cpp's converter does). Tensors holding NaN or infinity are refused as they are written.
A block of values all under ~1e-38 (subnormal) has a half-precision scale of 0, so it stores
zeros; its quants are 0 here where ggml's come from converting infinity to an integer.
"""

import math
import struct
import sys
from array import array
from itertools import chain, repeat
from operator import add, mul

from ..formats.finite import NonFiniteWeightsError, describe, first_non_finite
from ..formats.safetensors import f32_to_f16_bits, half_bits

MAGIC = b"GGUF"
VERSION = 3
ALIGNMENT = 32

# Metadata value types (gguf_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, \
    FLOAT64 = range(13)
_SCALARS = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
            FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}

# Tensor types (ggml_type): id, values per block, bytes per block.
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
TYPES = {F32: ("F32", 1, 4), F16: ("F16", 1, 2), Q4_0: ("Q4_0", 32, 18), Q8_0: ("Q8_0", 32, 34)}
TYPE_IDS = {name: t for t, (name, _, _) in TYPES.items()}

_BIG_ENDIAN = sys.byteorder == "big"


class GGUFError(ValueError):
    """Metadata or a tensor that cannot be written as GGUF."""


def type_name(ggml_type):
    return TYPES[ggml_type][0]


def tensor_bytes(shape, ggml_type):
    """Bytes of a tensor of `shape` stored as `ggml_type`."""
    _, block, size = TYPES[ggml_type]
    count = math.prod(shape)
    if shape and shape[-1] % block:
        raise GGUFError(f"rows of {shape[-1]} values do not split into {type_name(ggml_type)} "
                        f"blocks of {block}")
    return count // block * size


def block_type_for(shape, wanted):
    """`wanted`, or F16 when the tensor's rows do not split into its blocks (llama.cpp's
    converter falls back the same way)."""
    block = TYPES[wanted][1]
    return wanted if block == 1 or (shape and shape[-1] % block == 0) else F16


# --- encoding ------------------------------------------------------------------------------------

def f32_array(values):
    """values (array('f'), a float32 buffer such as a NumPy array, or floats) as array('f')."""
    if isinstance(values, array) and values.typecode == "f":
        return values
    try:
        view = memoryview(values)
    except TypeError:
        return array("f", values)
    if view.format == "f" and view.itemsize == 4 and view.c_contiguous:
        out = array("f")
        out.frombytes(view.cast("B"))
        return out
    return array("f", (float(v) for v in values))


def _le(values):
    if _BIG_ENDIAN:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


F32_MAX = 3.4028234663852886e38


def _f32(x):
    """x rounded to float32 (as NumPy's float32 arithmetic rounds each result)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _half_of(x):
    """float32 x as IEEE half bits, rounded to nearest even."""
    return half_bits(struct.unpack("<I", struct.pack("<f", x))[0])


def _scales_and_quants(values, scale_of, offset, rounding, block=32):
    """Per block of `block` values: (half-precision scale bits, quantized ints), computed as
    ggml's reference does in float32: d = scale_of(block); q = rounding(float32(x * (1/d)) +
    offset) (0 where d is 0)."""
    scales, inverses = array("H"), []
    for start in range(0, len(values), block):
        d = scale_of(values[start:start + block])
        scales.append(_half_of(d))
        inverse = 1.0 / d if d else 0.0
        # A block of values under ~1e-38 has a scale whose inverse passes float32's range
        # (ggml's then multiplies by infinity, whose rounding to int8 C leaves undefined):
        # its half-precision scale is 0, so any quants give its zeros; these give 0.
        inverses.append(_f32(inverse) if abs(inverse) <= F32_MAX else 0.0)
    # x * inverse: each product rounded to float32 by array("f"), as NumPy's float32 multiply.
    scaled = array("f", map(mul, values, chain.from_iterable(map(repeat, inverses,
                                                                 repeat(block)))))
    if offset:
        scaled = array("f", map(add, scaled, repeat(offset)))
    return scales, rounding(scaled)


def _q8_0_scale(block):
    # + 0.0: a block of -0.0 has scale +0, as NumPy's abs().max() gives it (max() keeps -0.0)
    return _f32(max(max(block), -min(block)) / 127.0) + 0.0


def _round_half_away(scaled):
    """ggml's roundf: halves away from zero (exact in float64 for |x| <= 128)."""
    return array("b", map(int, map(add, scaled, map(math.copysign, repeat(0.5), scaled))))


def _q4_0_scale(block):
    # The value of largest magnitude, with its sign (the first one, as argmax), over -8.
    top = max(max(block), -min(block))
    first = min(i for i in (_index(block, top), _index(block, -top)) if i is not None)
    return _f32(block[first] / -8.0)


def _index(block, value):
    try:
        return block.index(value)
    except ValueError:
        return None


def _truncate_nibbles(scaled):
    """trunc(x) clipped to [0, 15] (x = scaled value + 8.5 is positive)."""
    return array("B", (min(15, int(v)) for v in scaled))


def _interleave(scales, quants, per_block, block_bytes):
    """Blocks of [scale (2 bytes, little-endian half), quants (per_block bytes)]."""
    n = len(scales)
    out = bytearray(n * block_bytes)
    raw = _le(scales)
    out[0::block_bytes] = raw[0::2]
    out[1::block_bytes] = raw[1::2]
    for j in range(per_block):
        out[2 + j::block_bytes] = quants[j::per_block]
    return bytes(out)


def encode(values, ggml_type):
    """The stored bytes of float32 `values` (row-major; rows a multiple of the block size)."""
    values = f32_array(values)
    if ggml_type == F32:
        return _le(values)
    if ggml_type == F16:
        return _le(f32_to_f16_bits(_le(values)))
    if len(values) % 32:
        raise GGUFError(f"{len(values)} values do not split into blocks of 32")
    if ggml_type == Q8_0:
        scales, q = _scales_and_quants(values, _q8_0_scale, 0.0, _round_half_away)
        return _interleave(scales, q.tobytes(), 32, 34)
    if ggml_type == Q4_0:
        scales, q = _scales_and_quants(values, _q4_0_scale, 8.5, _truncate_nibbles)
        # Byte j of a block: value j in the low nibble, value j + 16 in the high one.
        packed = bytearray(len(q) // 2)
        for j in range(16):
            packed[j::16] = bytes(lo | hi << 4 for lo, hi in zip(q[j::32], q[j + 16::32]))
        return _interleave(scales, packed, 16, 18)
    raise GGUFError(f"no encoder for tensor type {ggml_type}")


# --- the file ------------------------------------------------------------------------------------

def _string(text):
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype, value):
    if vtype == STRING:
        return _string(value)
    if vtype == ARRAY:
        elem, items = value
        items = list(items)
        head = struct.pack("<IQ", elem, len(items))
        if elem == STRING:
            return head + b"".join(map(_string, items))
        if elem == ARRAY:
            raise GGUFError("arrays of arrays are not written here")
        return head + array_bytes(elem, items)
    return struct.pack(_SCALARS[vtype], value)


def array_bytes(elem, items):
    """A numeric array's values packed little-endian (one struct call, not one per value)."""
    return struct.pack("<" + _SCALARS[elem][1] * len(items), *items)


class GGUFWriter:
    def __init__(self):
        self.metadata = {}          # key -> (type, value), in insertion order
        self.tensors = []           # (name, shape, ggml type, make floats)

    def add(self, key, vtype, value):
        """One metadata entry; ARRAY values are (element type, items)."""
        if key in self.metadata:
            raise GGUFError(f"metadata key {key!r} given twice")
        self.metadata[key] = (vtype, value)

    def add_tensor(self, name, shape, ggml_type, make):
        """A tensor of `shape` (the model's order, rows last), stored as `ggml_type`; make()
        returns its float32 values when it is written."""
        shape = tuple(int(d) for d in shape)
        tensor_bytes(shape, ggml_type)          # rows fit the blocks: refused now, not later
        if any(t[0] == name for t in self.tensors):
            raise GGUFError(f"tensor {name!r} given twice")
        self.tensors.append((name, shape, ggml_type, make))

    def _header(self):
        parts = [MAGIC, struct.pack("<IQQ", VERSION, len(self.tensors), len(self.metadata))]
        for key, (vtype, value) in self.metadata.items():
            parts += [_string(key), struct.pack("<I", vtype), _value(vtype, value)]
        offset = 0
        for name, shape, ggml_type, _ in self.tensors:
            dims = tuple(reversed(shape)) or (1,)
            parts += [_string(name), struct.pack(f"<I{len(dims)}Q", len(dims), *dims),
                      struct.pack("<IQ", ggml_type, offset)]
            offset += _padded(tensor_bytes(shape, ggml_type))
        header = b"".join(parts)
        return header + bytes(_padded(len(header)) - len(header))

    def write(self, file, progress=None, groups=None):
        """Write the file to a binary file object. progress(label) is called after each group
        of tensors (groups: [(label, [names])]; default one group)."""
        file.write(self._header())
        by_name = {t[0]: t for t in self.tensors}
        groups = groups or [("tensors", [t[0] for t in self.tensors])]
        if sorted(n for _, names in groups for n in names) != sorted(by_name):
            raise GGUFError("the progress groups do not cover the tensors exactly once")
        order = {n: k for k, (_, names) in enumerate(groups) for n in names}
        done = {k: 0 for k in range(len(groups))}
        for name, shape, ggml_type, make in self.tensors:      # the order of the offsets
            data = self._encoded(name, shape, ggml_type, make)
            file.write(data + bytes(_padded(len(data)) - len(data)))
            k = order[name]
            done[k] += 1
            if progress is not None and done[k] == len(groups[k][1]):
                progress(groups[k][0])

    @staticmethod
    def _encoded(name, shape, ggml_type, make):
        values = f32_array(make())
        if len(values) != math.prod(shape):
            raise GGUFError(f"tensor {name!r}: {len(values)} values for shape {list(shape)}")
        bad = first_non_finite("F32", _le(values))
        if bad is not None:
            raise NonFiniteWeightsError(f"refusing to write tensor {name!r}: it holds "
                                        f"{describe(values[bad])} (element {bad}), as after a "
                                        "diverged run; nothing was written")
        data = encode(values, ggml_type)
        assert len(data) == tensor_bytes(shape, ggml_type)
        return data


def _padded(n):
    return n + (-n % ALIGNMENT)
