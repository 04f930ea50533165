"""Safetensors files in pure Python: read zero-copy, write atomically, convert floats in bulk.

This is our own implementation because the `safetensors` library is compiled Rust and cannot run
in the browser (Pyodide without compiled packages). tests/test_safetensors.py checks it against
that library in both directions, byte for byte where the library is deterministic.

The format: an 8-byte little-endian length N, N bytes of UTF-8 JSON, then the data region.

    {"__metadata__": {"str": "str"},                        (optional)
     "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}

Offsets are relative to the data region, tensors are little-endian and C-ordered, and the
tensors must cover the data region exactly: no holes, no overlaps, nothing after the last one.

    f = load(path_or_bytes)        # a path natively (mmap), bytes from fetch() in the browser
    f = load_sharded(directory / "model.safetensors.index.json")   # shards read as one file
    f.keys(), f.metadata, f.info("w") -> ("F32", (384, 384))
    f.raw("w")                     # memoryview into the file, no copy
    f.floats("w")                  # array('f') from F32, F16, BF16, F64
    f.f16_bits("w")                # array('H') of IEEE half bits (WGSL unpack2x16float)
    save({"w": ("F32", (2, 3), data), "b": (array("f", ...), (3,))}, path, metadata={...})
    save_bytes(tensors, metadata)  # the same file as bytes, for the browser

Without NumPy, bulk conversions treat a chunk of the data as one big Python int with a value in
each 32-bit lane and apply shifts, masks and adds to all lanes at once (C loops over the int's
digits; every step is arranged so no lane ever carries or borrows into its neighbour). The few
values the lane arithmetic cannot express (half subnormals, overflow, NaN) are flagged by the
same arithmetic and converted one by one.
"""

import json
import math
import os
import re
import struct
import sys
from array import array
from functools import lru_cache
from pathlib import Path

from .atomic_file import write_atomically

# Every dtype the format defines, in the order of the library's Dtype enum (roughly by
# alignment): it writes tensors sorted by this order descending, then by name, and so do we.
# Values are bits per element.
DTYPES = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}
_ORDER = {name: i for i, name in enumerate(DTYPES)}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")

MAX_HEADER = 100_000_000            # the library refuses longer headers; so do we
_LIMIT = 1 << 64                    # shapes and offsets are u64 in the library
_CHUNK = 1 << 14                    # values per bulk step: amortizes the Python, stays in cache
_TYPECODES = {("f", 4): "F32", ("d", 8): "F64", ("b", 1): "I8", ("B", 1): "U8",
              ("h", 2): "I16", ("H", 2): "U16", ("i", 4): "I32", ("I", 4): "U32",
              ("l", 4): "I32", ("L", 4): "U32", ("l", 8): "I64", ("L", 8): "U64",
              ("q", 8): "I64", ("Q", 8): "U64"}
_BIG_ENDIAN = sys.byteorder == "big"


class SafeTensorsError(ValueError):
    """A malformed safetensors file, or tensors that cannot be written as one."""


# --- reading -----------------------------------------------------------------------------------

def load(source):
    """A SafeTensorsFile from a path (str or os.PathLike) or from the file's bytes."""
    if isinstance(source, (str, os.PathLike)):
        return SafeTensorsFile.open(source)
    return SafeTensorsFile(source)


class _TensorReader:
    """What the readers share: their tensors' names (keys(), in, len, iteration) and a with
    block that closes them. A reader keeps {name: ...} as _by_name."""

    def keys(self):
        """Tensor names, sorted (as the library's `keys()`)."""
        return sorted(self._by_name)

    def __contains__(self, name):
        return name in self._by_name

    def __len__(self):
        return len(self._by_name)

    def __iter__(self):
        return iter(self.keys())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SafeTensorsFile(_TensorReader):
    """The header of a safetensors file, validated, over a buffer holding the whole file."""

    def __init__(self, data):
        """`data`: bytes, bytearray, memoryview, mmap or any contiguous buffer of the file."""
        self._mapping = None            # the mmap this object opened, if any
        view = _byte_view(data)
        if len(view) < 8:
            raise SafeTensorsError(f"file is {len(view)} bytes, shorter than the 8-byte "
                                   f"header length")
        (n,) = struct.unpack_from("<Q", view)
        if n > MAX_HEADER:
            raise SafeTensorsError(f"header length {n} is over the {MAX_HEADER}-byte limit")
        if 8 + n > len(view):
            raise SafeTensorsError(f"header length {n} runs past the end of the file "
                                   f"({len(view)} bytes)")
        self.metadata, self._tensors = _parse_header(view[8:8 + n], len(view) - 8 - n)
        self._data = view[8 + n:]

    @classmethod
    def open(cls, path):
        """Map the file read-only where mmap exists, so a large checkpoint is not copied; read
        it otherwise (an empty file, a filesystem without mmap, a runtime without the module)."""
        with open(path, "rb") as f:
            try:
                import mmap
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ImportError, OSError, ValueError):
                return cls(f.read())
        file = cls(data)        # a malformed file's mapping goes away with the exception
        file._mapping = data
        return file

    @property
    def _by_name(self):
        return self._tensors

    def info(self, name):
        """(dtype, shape): dtype as the format spells it ("F32", "BF16", ...), shape a tuple."""
        dtype, shape, _, _ = self._entry(name)
        return dtype, shape

    def raw(self, name):
        """The tensor's bytes as a memoryview into the file: no copy (little-endian, C order)."""
        _, _, begin, end = self._entry(name)
        return self._data[begin:end]

    def first_non_finite(self, name):
        """(index, value) of the tensor's first NaN or infinite element, or None."""
        from .finite import first_non_finite, value_at
        dtype, _, begin, end = self._entry(name)
        index = first_non_finite(dtype, self._data[begin:end])
        return None if index is None else (index, value_at(dtype, self._data[begin:end], index))

    def floats(self, name):
        """The tensor as array('f'), from F32 (a copy), F16, BF16 (exact) or F64 (rounded)."""
        dtype, _, begin, end = self._entry(name)
        data = self._data[begin:end]
        if dtype == "F32":
            out = array("f")
            out.frombytes(data)
            if _BIG_ENDIAN:
                out.byteswap()
            return out
        if dtype == "F16":
            return f16_to_f32(data)
        if dtype == "BF16":
            return bf16_to_f32(data)
        if dtype == "F64":
            wide = array("d")
            wide.frombytes(data)
            if _BIG_ENDIAN:
                wide.byteswap()
            return array("f", wide)  # C cast per element: round to nearest, overflow to inf
        raise TypeError(f"tensor {name!r} is {dtype}; floats() reads {', '.join(FLOAT_DTYPES)}")

    def f16_bits(self, name):
        """The tensor as array('H') of IEEE half bits, rounded to nearest even as NumPy does.

        F16 is copied as is. F64 goes through float32 first: two roundings, which can differ
        from a direct float64 -> float16 conversion in the last bit."""
        dtype, _, begin, end = self._entry(name)
        if dtype == "F16":
            out = array("H")
            out.frombytes(self._data[begin:end])
            if _BIG_ENDIAN:
                out.byteswap()
            return out
        if dtype == "F32":
            return f32_to_f16_bits(self._data[begin:end])
        return f32_to_f16_bits(_le_bytes(self.floats(name)))

    def close(self):
        """Unmap the file now. Views from raw() keep the mapping alive until they are gone."""
        self._data.release()
        if self._mapping is not None:
            try:
                self._mapping.close()
            except BufferError:     # raw() views still exported: the mapping goes with them
                pass

    def _entry(self, name):
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this file") from None

    def __repr__(self):
        return f"SafeTensorsFile({len(self._tensors)} tensors, {len(self._data)} data bytes)"


INDEX_SUFFIX = ".index.json"


def load_sharded(index_path, open_shard=None, suffix=".safetensors"):
    """The shards a Hugging Face index file ("model.safetensors.index.json", as transformers'
    save_pretrained writes beside model-00001-of-00002.safetensors ...) names, read as one file:
    a SafeTensorsShards. Each shard is a `suffix` file beside the index, read by `open_shard`
    (a path -> a reader; SafeTensorsFile.open by default); every tensor is in one shard only,
    the one its "weight_map" entry names."""
    open_shard = open_shard or SafeTensorsFile.open
    from .json_file import json_kind, read_json_object

    index_path = Path(index_path)
    index = read_json_object(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise SafeTensorsError(f"{index_path}: \"weight_map\" must be an object naming the shard "
                               f"of each tensor, got {json_kind(weight_map)}")
    for name, shard in weight_map.items():
        # Shards are plain file names beside the index: a path elsewhere is not read.
        if not isinstance(shard, str) or not shard.endswith(suffix) or \
                shard != Path(shard).name or shard in (".", ".."):
            raise SafeTensorsError(f"{index_path}: tensor {name!r} is in {shard!r}, which is not "
                                   f"the name of a {suffix} file beside the index")
    shards = {}
    try:
        for shard in sorted(set(weight_map.values())):
            path = index_path.parent / shard
            if not path.is_file():
                raise SafeTensorsError(f"{index_path} names {shard}, which is missing from "
                                       f"{index_path.parent}")
            try:
                shards[shard] = open_shard(path)
            except ValueError as e:         # the reader's error with a malformed file
                raise SafeTensorsError(f"{path}: {e}") from None
        return SafeTensorsShards(shards, weight_map, index_path)
    except BaseException:
        for file in shards.values():
            file.close()
        raise


class SafeTensorsShards(_TensorReader):
    """Several safetensors files read as one (SafeTensorsFile's reading methods): the shards
    of a checkpoint too large for one file."""

    def __init__(self, shards, weight_map, source):
        self.metadata = None
        self._shards = shards
        self._shard_of = {}
        for shard, file in shards.items():
            for name in file.keys():
                if name in self._shard_of:
                    raise SafeTensorsError(f"{source}: tensor {name!r} is in both "
                                           f"{self._shard_of[name]} and {shard}")
                self._shard_of[name] = shard
        for name, shard in weight_map.items():
            if self._shard_of.get(name) != shard:
                where = self._shard_of.get(name)
                raise SafeTensorsError(
                    f"{source} says tensor {name!r} is in {shard}, but " +
                    (f"it is in {where}" if where else "no shard holds it"))

    @property
    def _by_name(self):
        return self._shard_of

    def _file(self, name):
        try:
            return self._shards[self._shard_of[name]]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in these shards") from None

    def info(self, name):
        return self._file(name).info(name)

    def raw(self, name):
        return self._file(name).raw(name)

    def first_non_finite(self, name):
        return self._file(name).first_non_finite(name)

    def floats(self, name):
        return self._file(name).floats(name)

    def f16_bits(self, name):
        return self._file(name).f16_bits(name)

    def close(self):
        for file in self._shards.values():
            file.close()

    def __repr__(self):
        return f"SafeTensorsShards({len(self._shards)} files, {len(self._shard_of)} tensors)"


def _parse_header(raw, data_len):
    """(metadata or None, {name: (dtype, shape, begin, end)}), every rule of the format checked.

    The JSON is read as the library's serde_json reads it, where that differs from Python's
    json module: an escape of a lone surrogate ("\\ud800") is no character, a number past
    f64's range (1e400) is an error, -0 is a float (so no size or offset), and a repeated key
    is an error only for a tensor's name, a tensor's field or __metadata__ (elsewhere the last
    one counts, as in the metadata map, whose every value must still be a string)."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafeTensorsError(f"header is not valid UTF-8: {e}") from None
    try:
        header = json.loads(text, object_pairs_hook=_JSONObject.of, parse_constant=_reject_constant,
                            parse_int=_json_int, parse_float=_json_float)
    except SafeTensorsError:
        raise
    except (ValueError, RecursionError) as e:
        raise SafeTensorsError(f"header is not valid JSON: {e}") from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(header)
    if not isinstance(header, dict):
        raise SafeTensorsError(f"header is a JSON {type(header).__name__}, not an object")
    _refuse_repeated_keys(header, "header has duplicate key {!r}")

    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
            isinstance(metadata, dict)
            and all(isinstance(v, str) for _, v in _JSONObject.pairs_of(metadata))):
        raise SafeTensorsError(f"__metadata__ must map strings to strings, got {metadata!r:.200}")
    metadata = None if metadata is None else dict(metadata)

    tensors = {name: _tensor_entry(name, entry) for name, entry in header.items()}
    _check_layout(tensors, data_len)
    return metadata, tensors


class _JSONObject(dict):
    """A JSON object whose keys repeat: the last value of each, as a dict, and all its pairs
    (objects without repeats stay plain dicts)."""

    @classmethod
    def of(cls, pairs):
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        obj = cls(obj)
        obj.pairs = pairs
        return obj

    @staticmethod
    def pairs_of(obj):
        return obj.pairs if isinstance(obj, _JSONObject) else obj.items()


def _refuse_repeated_keys(obj, message, keys=None):
    if isinstance(obj, _JSONObject):
        seen = set()
        for key, _ in obj.pairs:
            if key in seen and (keys is None or key in keys):
                raise SafeTensorsError(message.format(key))
            seen.add(key)


# A \\u escape of a surrogate, after an even number of backslashes: the text may hold a lone one
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(value):
    """Python's json decodes an escaped surrogate pair to its character and keeps a lone
    surrogate as it is; serde_json refuses the lone one, and so do we."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += [k for k, _ in _JSONObject.pairs_of(value)]
            stack += [v for _, v in _JSONObject.pairs_of(value)]
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise SafeTensorsError(f"header is not valid JSON: {value!r:.60} holds a lone "
                                   f"surrogate escape, which is no character")


def _json_int(text):
    if text == "-0":
        return -0.0                 # serde_json's -0 is a float
    if len(text) > 20:
        _json_float(text)           # past f64's range: an error there
    return int(text)


def _json_float(text):
    value = float(text)
    if math.isinf(value):
        raise SafeTensorsError(f"header is not valid JSON: the number {text:.40} is out of range")
    return value


def _reject_constant(name):
    raise SafeTensorsError(f"header is not valid JSON: {name} is not a JSON value")


def _tensor_entry(name, entry):
    """(dtype, shape, begin, end) of one header entry."""
    if not isinstance(entry, dict):
        raise SafeTensorsError(f"tensor {name!r}: entry must be an object, got {entry!r:.100}")
    _refuse_repeated_keys(entry, f"tensor {name!r}: entry has duplicate field {{!r}}",
                          ("dtype", "shape", "data_offsets"))
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise SafeTensorsError(f"tensor {name!r}: entry has no {key!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SafeTensorsError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(_is_u64(d) for d in shape)):
        raise SafeTensorsError(f"tensor {name!r}: shape must be a list of non-negative integers, "
                               f"got {shape!r:.100}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_u64, offsets))):
        raise SafeTensorsError(f"tensor {name!r}: data_offsets must be [begin, end], "
                               f"got {offsets!r:.100}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_u64(value):
    return type(value) is int and 0 <= value < _LIMIT     # bool is an int subclass: excluded


def _check_layout(tensors, data_len):
    """Tensors in offset order must tile the data region exactly, each holding its shape."""
    expected, previous = 0, None
    for name, (dtype, shape, begin, end) in sorted(tensors.items(), key=lambda kv: kv[1][2:]):
        where = f"tensor {name!r}: data_offsets [{begin}, {end}]"
        if end < begin:
            raise SafeTensorsError(f"{where} end before they begin")
        if begin < expected:
            raise SafeTensorsError(f"{where} overlap tensor {previous!r}, which ends at {expected}")
        if begin > expected:
            after = f"after tensor {previous!r}" if previous is not None else "at the start"
            raise SafeTensorsError(f"{where} leave a hole of {begin - expected} bytes "
                                   f"{after} (the data region must be covered without gaps)")
        bits = _bits(dtype, shape)
        if bits is None:
            raise SafeTensorsError(f"tensor {name!r}: counting the bits of {dtype} shape "
                                   f"{list(shape)} overflows 64 bits")
        if bits % 8:
            raise SafeTensorsError(f"tensor {name!r}: {dtype} shape {list(shape)} does not fill "
                                   f"whole bytes")
        if end - begin != bits // 8:
            raise SafeTensorsError(f"{where} hold {end - begin} bytes, but {dtype} shape "
                                   f"{list(shape)} needs {bits // 8}")
        if end > data_len:
            raise SafeTensorsError(f"{where} run past the end of the file (the data region has "
                                   f"{data_len} bytes)")
        expected, previous = end, name
    if expected != data_len:
        raise SafeTensorsError(f"file has {data_len - expected} bytes after the last tensor "
                               f"(the data region must end with the last tensor)")


def _bits(dtype, shape):
    """The bits a tensor holds, or None where the library's u64 count overflows: it multiplies
    the dimensions left to right, then by the dtype's width, checking each step, so
    [2**64 - 1, 2, 0] overflows before its 0 is reached."""
    count = 1
    for size in (*shape, DTYPES[dtype]):
        count *= size
        if count >= _LIMIT:
            return None
    return count


# --- writing -----------------------------------------------------------------------------------

def save_bytes(tensors, metadata=None):
    """The safetensors file for `tensors` as bytes (see save())."""
    header, pieces = _serialize(tensors, metadata)
    return b"".join([header, *pieces])


def save(tensors, path, metadata=None):
    """Write `tensors` to `path` atomically: a temporary file in the same folder, fsync, then
    os.replace, so a save that fails partway never leaves a truncated file where a good one was.

    `tensors` maps name -> (dtype, shape, data) with data any contiguous little-endian buffer,
    or name -> (array, shape) with the dtype taken from the array's typecode. `metadata`: str->str.
    The bytes are those the `safetensors` library writes (its metadata keys come out in hash
    order; ours are sorted, so equal inputs give equal files).
    """
    header, pieces = _serialize(tensors, metadata)
    write_atomically(path, [header, *pieces])


def _serialize(tensors, metadata):
    """(8-byte length + padded JSON header, [each tensor's bytes in file order])."""
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise SafeTensorsError(f"tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise SafeTensorsError("'__metadata__' is reserved and cannot name a tensor")
        entries.append((name, *_tensor_value(name, value)))
    # The library's layout: dtype alignment descending, then name (code point order, which is
    # also the UTF-8 byte order the library compares).
    entries.sort(key=lambda e: (-_ORDER[e[1]], e[0]))

    header = {}
    if metadata is not None:
        if not (isinstance(metadata, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise SafeTensorsError(f"metadata must map str to str, got {metadata!r:.200}")
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    # serde_json's compact form: no spaces, non-ASCII as UTF-8, the same escapes as json.dumps.
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise SafeTensorsError(f"a tensor name or metadata string is not valid Unicode: "
                               f"{e}") from None
    text += b" " * (-len(text) % 8)     # the data region starts 8-byte aligned
    if len(text) > MAX_HEADER:
        raise SafeTensorsError(f"header would be {len(text)} bytes, over the {MAX_HEADER}-byte "
                               f"limit")
    return struct.pack("<Q", len(text)) + text, [data for _, _, _, data in entries]


def _tensor_value(name, value):
    """(dtype, shape, little-endian bytes as a memoryview) from a tensors value."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], array):
        values, shape = value
        dtype = _TYPECODES.get((values.typecode, values.itemsize))
        if dtype is None:
            raise SafeTensorsError(f"tensor {name!r}: no dtype for array typecode "
                                   f"{values.typecode!r}")
        data = _le_bytes(values)
    elif isinstance(value, (tuple, list)) and len(value) == 3:
        dtype, shape, data = value
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise SafeTensorsError(f"tensor {name!r}: unknown dtype {dtype!r}")
        try:
            data = _byte_view(data)
        except TypeError as e:
            raise SafeTensorsError(f"tensor {name!r}: data must be a C-contiguous buffer "
                                   f"({e})") from None
    else:
        raise SafeTensorsError(f"tensor {name!r}: expected (dtype, shape, data) or (array, shape)")
    shape = tuple(shape)
    if not all(_is_u64(d) for d in shape):
        raise SafeTensorsError(f"tensor {name!r}: shape must hold non-negative integers, "
                               f"got {shape}")
    bits = math.prod(shape) * DTYPES[dtype]
    if bits % 8:
        raise SafeTensorsError(f"tensor {name!r}: {dtype} shape {list(shape)} does not fill "
                               f"whole bytes")
    if len(data) != bits // 8:
        raise SafeTensorsError(f"tensor {name!r}: {dtype} shape {list(shape)} needs "
                               f"{bits // 8} bytes, data has {len(data)}")
    return dtype, shape, data


def _byte_view(data):
    """A flat memoryview of bytes over any C-contiguous buffer, without a copy."""
    view = memoryview(data)
    if not view.c_contiguous:
        raise TypeError("the buffer is not C-contiguous")
    return view.cast("B") if view.nbytes else memoryview(b"")


def _le_bytes(values):
    """An array's bytes in little-endian order, without a copy where the host already is."""
    if _BIG_ENDIAN and values.itemsize > 1:
        values = array(values.typecode, values)
        values.byteswap()
    return memoryview(values).cast("B")


# --- float conversions -------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _lanes(pattern):
    """An int holding the 32-bit `pattern` in each of the _CHUNK lanes of a bulk step."""
    return int.from_bytes(pattern.to_bytes(4, "little") * _CHUNK, "little")


def _whole_values(data, size):
    src = _byte_view(data)
    if len(src) % size:
        raise ValueError(f"{len(src)} bytes are not a whole number of {size}-byte values")
    return src


def _flagged(flags):
    """Indices of the 0x80 bytes in `flags`, one byte per lane, zero where not flagged. They are
    few, so bytes.find (a memchr) finds them far faster than a loop over every lane."""
    found = []
    i = flags.find(0x80)
    while i >= 0:
        found.append(i)
        i = flags.find(0x80, i + 1)
    return found


def f32_to_f16_bits(data):
    """Little-endian float32 bytes to array('H') of IEEE half bits, rounded to nearest even.

    Matches NumPy's float32 -> float16 bit for bit: subnormal halves, overflow to +-inf, NaN
    keeping its sign and the top of its payload (never turning into inf)."""
    src = _whole_values(data, 4)
    n = len(src) // 4
    out = bytearray(2 * n)
    high = 0x80000000
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        chunk = src[4 * start:4 * (start + count)]
        x = int.from_bytes(chunk, "little")
        a = x & _lanes(0x7FFFFFFF)                                      # |x|
        # Normal halves: round away the 13 low mantissa bits to nearest even (a carry into the
        # exponent is right, up to inf), then rebias the exponent 127 -> 15. Adding 2**18 - 112
        # * 2**10 and keeping 15 bits is that subtraction without borrowing from the next lane.
        r = a + _lanes(0xFFF) + ((a >> 13) & _lanes(1))
        h = (r >> 13) + _lanes(0x24000)
        # Bit 31 of a + (2**31 - t) is set where a >= t: one comparison for every lane.
        normal = (a + _lanes(high - 0x38800000)) & _lanes(high)      # |x| >= 2**-14
        tiny = (a + _lanes(high - 0x33000000)) & _lanes(high)        # |x| >= 2**-25
        huge = (a + _lanes(high - 0x47800000)) & _lanes(high)        # |x| >= 65536
        h &= (normal >> 31) * 0x7FFF                    # below 2**-14: 0 for now
        h |= (x >> 16) & _lanes(0x8000)                 # the sign
        # Bit 31 flags what is left to do one by one: |x| in [2**-25, 2**-14) (a subnormal, or
        # rounding up to the smallest normal) and |x| >= 65536 (inf, NaN, overflow).
        lanes = (h | (tiny ^ normal) | huge).to_bytes(4 * _CHUNK, "little")
        out[2 * start:2 * (start + count):2] = lanes[0:4 * count:4]
        out[2 * start + 1:2 * (start + count):2] = lanes[1:4 * count:4]
        for i in _flagged(lanes[3:4 * count:4]):
            bits = int.from_bytes(chunk[4 * i:4 * i + 4], "little")
            struct.pack_into("<H", out, 2 * (start + i), half_bits(bits))
    result = array("H")
    result.frombytes(out)
    if _BIG_ENDIAN:
        result.byteswap()
    return result


def half_bits(f32):
    """One float32 bit pattern to IEEE half bits: round to nearest even, NumPy's NaN rule."""
    sign = (f32 >> 16) & 0x8000
    a = f32 & 0x7FFFFFFF
    if a > 0x7F800000:                      # NaN: keep the payload's top bits, stay a NaN
        return sign | 0x7C00 | ((a >> 13) & 0x3FF or 1)
    if a >= 0x477FF000:                     # 65520 and up round to inf
        return sign | 0x7C00
    if a >= 0x38800000:                     # a normal half
        a += 0xFFF + ((a >> 13) & 1)
        return sign | ((a >> 13) - (112 << 10))
    exponent = a >> 23
    if exponent < 102:                      # below 2**-25: rounds to zero
        return sign
    # A subnormal half counts units of 2**-24: the mantissa (with its implicit 1) shifted right
    # by 126 - exponent, rounded to nearest even. Rounding up to 0x400 gives the smallest normal.
    mantissa = (a & 0x7FFFFF) | 0x800000
    shift = 126 - exponent
    q, rest, half = mantissa >> shift, mantissa & ((1 << shift) - 1), 1 << (shift - 1)
    if rest > half or (rest == half and q & 1):
        q += 1
    return sign | q


def f16_to_f32(data):
    """Little-endian IEEE half bytes to array('f'), exactly (NaN payloads kept, as NumPy)."""
    src = _whole_values(data, 2)
    n = len(src) // 2
    out = bytearray(4 * n)
    wide = bytearray(4 * _CHUNK)
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        chunk = src[2 * start:2 * (start + count)].tobytes()
        wide[0:4 * count:4] = chunk[0::2]               # each half in the low bits of a lane
        wide[1:4 * count:4] = chunk[1::2]
        x = int.from_bytes(wide[:4 * count], "little")
        a = x & _lanes(0x7FFF)
        # Normal halves: move exponent and mantissa up 13 bits, rebias the exponent 15 -> 127.
        f = (a << 13) + _lanes(112 << 23)
        # Bit 15 of a + (2**15 - t) is set where a >= t: one comparison for every lane.
        special = (a + _lanes(0x8000 - 0x7C00)) & _lanes(0x8000)        # inf and NaN
        normal = (a + _lanes(0x8000 - 0x400)) & _lanes(0x8000)          # not 0 or subnormal
        nonzero = (a + _lanes(0x7FFF)) & _lanes(0x8000)
        f += (special >> 15) * (112 << 23)                              # exponent 31 -> 255
        f &= (normal >> 15) * 0xFFFFFFFF                   # zero and subnormals -> 0 for now
        f |= (x & _lanes(0x8000)) << 16                                 # the sign
        out[4 * start:4 * (start + count)] = f.to_bytes(4 * _CHUNK, "little")[:4 * count]
        if nonzero ^ normal:                                            # subnormals: one by one
            flags = ((nonzero ^ normal) << 16).to_bytes(4 * _CHUNK, "little")
            for i in _flagged(flags[3:4 * count:4]):
                (value,) = struct.unpack_from("<e", chunk, 2 * i)
                struct.pack_into("<f", out, 4 * (start + i), value)
    result = array("f")
    result.frombytes(out)
    if _BIG_ENDIAN:
        result.byteswap()
    return result


def bf16_to_f32(data):
    """Little-endian bfloat16 bytes to array('f'), exactly: bfloat16 is the top half of a
    float32, so each value's two bytes become the high bytes of a zeroed float32."""
    src = bytes(_whole_values(data, 2))
    out = bytearray(2 * len(src))
    out[2::4] = src[0::2]
    out[3::4] = src[1::2]
    result = array("f")
    result.frombytes(out)
    if _BIG_ENDIAN:
        result.byteswap()
    return result
