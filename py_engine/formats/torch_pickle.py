"""PyTorch .bin checkpoints (what torch.save writes, as older Hugging Face checkpoints and
PEFT adapters hold their weights: pytorch_model.bin, adapter_model.bin) read in pure Python.

This is our own reader because torch cannot run in the browser, and so that no code in the file
ever runs: the pickle inside is read by an unpickler that resolves only the names a state dict
is made of (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and _rebuild_parameter,
torch's typed storages), as torch.load(weights_only=True) restricts them; any other name is
refused by name. tests/test_torch_pickle.py checks it against torch.load.

    tensors = load_torch(path_or_bytes)      # a SafeTensorsFile: keys(), info(), floats(), ...

The format (torch >= 1.6): a zip archive "<name>/data.pkl" (the pickled state dict, whose
tensors refer to storages by key through persistent ids), "<name>/data/<key>" (each storage's
bytes), "<name>/byteorder". A tensor is (storage, offset, size, stride) over its storage's
elements; views and shared storages are read as torch reads them. The tensors are gathered
into a safetensors file in memory (safetensors.save_bytes), so the rest of the engine reads one
format. Files of PyTorch before 1.6 (a bare pickle stream, not a zip) are refused by name.
"""

import io
import math
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections import OrderedDict

from . import safetensors

# torch's storage class -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4), "HalfStorage": ("F16", 2), "BFloat16Storage": ("BF16", 2),
    "DoubleStorage": ("F64", 8), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2), "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


class TorchFileError(ValueError):
    """A .bin file that is not a readable PyTorch state dict; the message says why."""


MAX_PICKLE = 100 << 20          # data.pkl of a state dict is small: names and shapes
MAX_REPEAT = 64                 # a broadcast tensor's elements per element of its storage
MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")      # the opcodes that name a memo slot to fill
# what zipfile raises on a damaged archive (a header's fields read as other numbers)
DAMAGED = (zipfile.BadZipFile, EOFError, ValueError, OSError, NotImplementedError,
           OverflowError, RuntimeError, struct.error, zlib.error)   # RuntimeError: "encrypted"


# What the pickle builds is tuples (no attributes a pickle could set after making them), checked
# where they are used.
class _Storage(tuple):          # (torch's storage class name,)
    __slots__ = ()


class _StorageRef(tuple):       # (storage class name, key, number of elements)
    __slots__ = ()


class _Tensor(tuple):           # (_StorageRef, offset, size, stride)
    __slots__ = ()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _Tensor((storage, storage_offset, tuple(size), tuple(stride)))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data                 # an nn.Parameter: its tensor


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch" and name in STORAGES:
            return _Storage((name,))
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchFileError(f"the file's pickle names {module}.{name}, which a state dict "
                                 "of tensors does not hold; it is not read (no code in the "
                                 "file is run)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage)):
            raise TorchFileError(f"unreadable storage reference {pid!r:.80}")
        return _StorageRef((pid[1][0], pid[2], pid[4]))


def load_torch(source):
    """A SafeTensorsFile of the state dict in a torch.save file (a path or the file's bytes)."""
    try:
        archive = zipfile.ZipFile(source if isinstance(source, str) or hasattr(source, "__fspath__")
                                  else io.BytesIO(bytes(source)))
    except zipfile.BadZipFile:
        raise TorchFileError("not a zip archive: a file saved by PyTorch before 1.6, or not a "
                             "PyTorch file at all (load it with torch and save it again with "
                             "save_pretrained to have model.safetensors)") from None
    except DAMAGED as e:
        raise TorchFileError(f"the archive is damaged: {e}") from None
    try:
        with archive:
            tensors = _state_dict(archive)
    except DAMAGED as e:
        if isinstance(e, TorchFileError):
            raise
        raise TorchFileError(f"the archive is damaged: {e}") from None
    return safetensors.load(safetensors.save_bytes(tensors))


def _state_dict(archive):
    """{name: (dtype, shape, bytes)} of the state dict in a torch.save archive."""
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise TorchFileError(f"a PyTorch archive holds one <name>/data.pkl; this one has "
                             f"{len(pickles)}")
    prefix = pickles[0][:-len("data.pkl")]
    if archive.getinfo(pickles[0]).file_size > MAX_PICKLE:
        raise TorchFileError(f"{pickles[0]} is over {MAX_PICKLE >> 20} MB: not a state dict")
    order = _read(archive, prefix + "byteorder", optional=True)
    if order not in (None, b"little"):
        raise TorchFileError(f"the tensors are stored {order.decode(errors='replace')!r}-"
                             "endian; only little-endian files are read")
    data = _read(archive, pickles[0])
    _check_memo(data, pickles[0])
    try:
        state = _Unpickler(io.BytesIO(data)).load()
    except TorchFileError:
        raise
    except Exception as e:       # a damaged pickle: what the pickle module says of it
        raise TorchFileError(f"{pickles[0]} is not a readable pickle: {e}") from None
    if not isinstance(state, dict):
        raise TorchFileError(f"the file holds a {type(state).__name__}, not a state dict")
    storages = {}
    tensors = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, _Tensor):
            raise TorchFileError(f"the state dict maps {name!r:.60} to something other "
                                 "than a tensor")
        kind, key, numel, offset, size, stride = _checked(tensor, name)
        dtype, item = STORAGES[kind]
        if key not in storages:
            storages[key] = _read_storage(archive, f"{prefix}data/{key}", numel * item)
        tensors[name] = (dtype, size, _gather(storages[key], item, numel, offset, size,
                                              stride, name))
    return tensors


def _checked(tensor, name):
    """(storage kind, key, numel, offset, size, stride) of a tensor the pickle made, or an error
    naming it."""
    def whole(*values):
        return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)

    ref, offset, size, stride = tensor if len(tensor) == 4 else (None,) * 4
    if not (isinstance(ref, _StorageRef) and len(ref) == 3 and ref[0] in STORAGES
            and isinstance(ref[1], str) and whole(ref[2], offset, *size, *stride)
            and len(size) == len(stride)):
        raise TorchFileError(f"tensor {name!r} has an unreadable layout")
    return (*ref, offset, size, stride)


def _check_memo(data, name):
    """TorchFileError where the pickle stores a value in a memo slot past its own length. The
    C unpickler grows its memo to whatever index a PUT names, zeroing every slot up to it (one
    damaged byte, a BINPUT read as LONG_BINPUT, asked it for 21 GB), so the indices are read
    first from the opcodes, which pickletools parses without running anything. A pickle puts
    at most one memo slot per opcode: an index past its length is damage."""
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in MEMO_PUTS and isinstance(arg, int) and not 0 <= arg < len(data):
                raise TorchFileError(f"{name} is not a readable pickle: {op.name} names memo "
                                     f"slot {arg}, past the {len(data)} bytes of the pickle "
                                     "(a damaged file)")
    except TorchFileError:
        raise
    except Exception as e:       # what pickletools says of a damaged stream
        raise TorchFileError(f"{name} is not a readable pickle: {e}") from None


# the MS-DOS attribute of a directory in a central directory record's external attributes
DIRECTORY_ATTRIBUTE = 0x10


def _info(archive, name, optional=False):
    """The archive's entry `name` (None when optional and absent). One the central directory
    marks as a directory (its name ending in "/", or the MS-DOS directory attribute, as
    torch's reader tells them) holds no file: a damaged record, whose bytes torch reads as
    whatever is in memory, so it is refused."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        if optional:
            return None
        raise TorchFileError(f"the archive has no {name}") from None
    if info.is_dir() or info.external_attr & DIRECTORY_ATTRIBUTE:
        raise TorchFileError(f"the archive is damaged: its record of {name} marks it as a "
                             "directory")
    return info


def _read_storage(archive, entry, size):
    """A storage's bytes, which torch.save stores uncompressed (so no entry inflates to more
    than the file holds), of the size its tensors declare."""
    info = _info(archive, entry)
    if info.compress_type != zipfile.ZIP_STORED:
        raise TorchFileError(f"{entry} is compressed; torch.save stores storages as they are")
    if info.file_size != size:
        raise TorchFileError(f"storage {entry.rsplit('/', 1)[-1]} holds {info.file_size} bytes, "
                             f"not the {size} its tensors declare")
    return archive.read(info)


def _read(archive, name, optional=False):
    info = _info(archive, name, optional)
    return None if info is None else archive.read(info)


def _gather(data, item, numel, offset, size, stride, name):
    """The tensor's elements in C order, as bytes, from its storage's bytes (`numel` elements
    of `item` bytes)."""
    count = math.prod(size)
    if count == 0:
        return b""
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= numel:
        raise TorchFileError(f"tensor {name!r} reaches past the end of its storage")
    if count > MAX_REPEAT * numel:     # a broadcast view (stride 0) is as large as it says
        raise TorchFileError(f"tensor {name!r} repeats its storage's elements over "
                             f"{MAX_REPEAT} times ({count} elements from {numel})")
    contiguous = all(s == math.prod(size[k + 1:]) for k, (d, s) in enumerate(zip(size, stride))
                     if d > 1)
    view = memoryview(data).cast("B")
    if contiguous:              # a view: the file's bytes are copied once, into the safetensors
        return view[offset * item:(offset + count) * item]
    out = bytearray()

    def rows(dim, start):       # the innermost dimension one strided run at a time
        if dim == len(size) - 1:
            for k in range(size[dim]):
                at = (start + k * stride[dim]) * item
                out.extend(view[at:at + item])
            return
        for k in range(size[dim]):
            rows(dim + 1, start + k * stride[dim])

    rows(0, offset)
    return bytes(out)
