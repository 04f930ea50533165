"""The compute API: one device, its buffers, kernels and recorded programs.

Everything here is backend-neutral and follows WebGPU's object model. A backend (native.py:
wgpu-py; browser.py: navigator.gpu through Pyodide's FFI) supplies a dozen primitive calls;
limits, caches, validation and the recorded-program bookkeeping live here, once.

Shape of the API, identical on both backends:

    device = await open_device()
    x = device.buffer_from(array("f", values))
    y = device.create_buffer(x.size)
    kernel = await device.kernel("elementwise.wgsl", "scale", constants={"WORKGROUP": 64})
    params = device.uniform("f", 2.0)
    program = device.program().dispatch(kernel, [x, y, params], groups=n // 64)
    program.read(y)
    (out,) = await program.run()          # memoryview of bytes

Calls that may wait on the GPU (opening, compiling, running with reads, reading) are coroutines
on both backends; the rest return at once.
"""

import math
import struct
import warnings

from . import shaders
from .errors import BufferTooLargeError, DeviceLostError, GPUError, SoftwareAdapterWarning
from .variable import Variable, pack_uniform

STORAGE = "storage"
UNIFORM = "uniform"
USAGES = (STORAGE, UNIFORM)

_SOFTWARE_NAMES = ("swiftshader", "llvmpipe", "lavapipe", "softpipe", "warp")
LLVMPIPE_LOOP_LIMIT = 65535


class AdapterInfo:
    """What the adapter says about itself, and whether it is a CPU implementation."""

    def __init__(self, vendor, architecture, device, description, backend, is_fallback):
        self.vendor = vendor or ""
        self.architecture = architecture or ""
        self.device = device or ""
        self.description = description or ""
        self.backend = backend
        self.is_fallback = bool(is_fallback)
        self.is_software = self.is_fallback or any(name in self._names() for name in _SOFTWARE_NAMES)

    def _names(self):
        """What the adapter calls itself, lower case, in one string."""
        return " ".join((self.vendor, self.architecture, self.device, self.description)).lower()

    @property
    def loop_limit(self):
        """The loop iterations one shader invocation may run in all, where the adapter caps
        them, else None. llvmpipe (lavapipe) stops every loop of an invocation once 65,535
        iterations have run across all of them (Mesa's LP_MAX_TGSI_LOOP_ITERATIONS), and the
        results are then silently wrong; SwiftShader and GPUs have no such cap."""
        names = self._names()
        return LLVMPIPE_LOOP_LIMIT if ("llvmpipe" in names or "lavapipe" in names) else None

    def as_dict(self):
        return dict(vars(self))

    def __repr__(self):
        soft = ", software" if self.is_software else ""
        return f"AdapterInfo({self.vendor!r}, {self.architecture!r}, {self.backend}{soft})"


class Buffer:
    """A GPU buffer. `size` is in bytes (rounded up to a multiple of 4)."""

    def __init__(self, device, handle, size, usage, label):
        self.device = device
        self.handle = handle
        self.size = size
        self.usage = usage
        self.label = label

    def write(self, data, offset=0):
        """Upload any contiguous buffer object (bytes, array.array, numpy array) at `offset`."""
        self.device.write(self, data, offset)

    def destroy(self):
        if self.handle is not None:
            self.device._backend.destroy_buffer(self.handle)
            self.device._forget_buffer(self)
            self.handle = None

    def __repr__(self):
        return f"Buffer({self.label or '?'}, {self.size} bytes, {self.usage})"


class Kernel:
    """A compiled compute pipeline for one entry point of one WGSL file."""

    def __init__(self, device, handle, source_name, entry, constants):
        self.device = device
        self.handle = handle
        self.source_name = source_name
        self.entry = entry
        self.constants = dict(constants)

    def __repr__(self):
        return f"Kernel({self.source_name}:{self.entry}, {self.constants})"


class Program:
    """A fixed sequence of dispatches and buffer copies, encoded once and replayed per run.

    Buffers stay bound by identity: write new data into them between runs. `read` marks a range
    to bring back at the end of each run. Adding ops after a run re-encodes on the next run.
    """

    def __init__(self, device, label=None):
        self.device = device
        self.label = label
        self.ops = []
        self.reads = []
        self._encoded = None

    def dispatch(self, kernel, buffers, groups):
        """Dispatch `kernel` with `buffers` bound to @group(0) @binding(0..n-1)."""
        groups = _workgroup_counts(groups, self.device.limits["max_compute_workgroups_per_dimension"])
        if not isinstance(kernel, Kernel):
            raise TypeError(f"dispatch needs a Kernel, got {type(kernel).__name__}")
        for b in buffers:
            self.device._check_live(b)
        bind_group = self.device._bind_group(kernel, buffers)
        self.ops.append(("dispatch", kernel.handle, bind_group, groups))
        self._encoded = None
        return self

    def copy(self, src, dst, size=None, src_offset=0, dst_offset=0):
        """Copy `size` bytes (default: all of src from src_offset) from src into dst."""
        size = src.size - src_offset if size is None else size
        _check_range(src, src_offset, size)
        _check_range(dst, dst_offset, size)
        if size % 4 or src_offset % 4 or dst_offset % 4:
            raise ValueError("buffer copies need sizes and offsets that are multiples of 4 bytes")
        self.ops.append(("copy", src.handle, src_offset, dst.handle, dst_offset, size))
        self._encoded = None
        return self

    def read(self, buffer, offset=0, size=None):
        """Bring `size` bytes of `buffer` back at the end of every run; returns the slot index."""
        size = buffer.size - offset if size is None else size
        _check_range(buffer, offset, size)
        if size % 4 or offset % 4:
            raise ValueError("reads need sizes and offsets that are multiples of 4 bytes")
        self.reads.append((buffer.handle, offset, size))
        self._encoded = None
        return len(self.reads) - 1

    def replica(self, label=None):
        """A program replaying this one's dispatches and copies (as recorded so far) with no
        reads of its own: the same work with other results brought back, such as a decoder's
        chosen token from one and all its logits from the other."""
        other = Program(self.device, label or self.label)
        other.ops = list(self.ops)
        return other

    def encoded(self):
        if self._encoded is None:
            self._encoded = self.device._backend.encode(self.ops, self.reads)
        return self._encoded

    def submit(self):
        """Queue one run without waiting for it; reads of a submitted run are dropped."""
        self.device._check_lost()
        self.device._backend.submit(self.encoded())

    async def run(self):
        """Run once; returns one memoryview of bytes per `read`, in the order they were added."""
        self.device._check_lost()
        sizes = [size for _, _, size in self.reads]
        results = await self.device._backend.run(self.encoded(), sizes)
        self.device._check_lost()
        return results

    def release(self):
        """Free what the program holds on the GPU (its read staging); it may be rebuilt later."""
        if self._encoded is not None:
            self.device._backend.release(self._encoded)
            self._encoded = None


class Device:
    """An open GPU device. Create with `await open_device()`."""

    def __init__(self, backend, info, limits, features):
        self._backend = backend
        self.info = info
        self.limits = limits
        self.features = frozenset(features)
        self._kernels = {}
        self._bind_groups = {}
        self._buffers = {}
        self._next_id = 0

    @property
    def backend(self):
        return self._backend.name

    # --- buffers -------------------------------------------------------------------------

    def create_buffer(self, size, usage=STORAGE, label=None):
        """A zero-filled buffer of at least `size` bytes. usage: "storage" or "uniform"."""
        self._check_lost()
        if usage not in USAGES:
            raise ValueError(f"usage must be one of {USAGES}, got {usage!r}")
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"buffer size must be a positive int, got {size!r}")
        size = -(-size // 16) * 16 if usage == UNIFORM else -(-size // 4) * 4
        self._check_size(size, usage, label)
        handle = self._backend.create_buffer(size, usage, label)
        buffer = Buffer(self, handle, size, usage, label)
        self._next_id += 1
        buffer.id = self._next_id
        self._buffers[buffer.id] = buffer
        return buffer

    def buffer_from(self, data, usage=STORAGE, label=None):
        """A new buffer holding a copy of `data` (any contiguous buffer object)."""
        view = _bytes_view(data)
        buffer = self.create_buffer(max(len(view), 4), usage, label)
        if len(view):
            self.write(buffer, view)
        return buffer

    def uniform(self, fmt, *values, label=None):
        """A uniform buffer holding `struct.pack("<" + fmt, *values)` (e.g. fmt "IIf"). A value
        may be a Variable (py_engine.gpu.variable): its field is rewritten whenever it is set,
        so one recorded program can replay with a new value."""
        if not any(isinstance(v, Variable) for v in values):
            return self.buffer_from(struct.pack("<" + fmt, *values), UNIFORM, label)
        data, bound = pack_uniform(fmt, values)
        buffer = self.buffer_from(data, UNIFORM, label)
        for variable, offset in bound:
            variable.bind(buffer, offset)
        return buffer

    def write(self, buffer, data, offset=0):
        """Upload `data` into `buffer` at `offset`; sizes that are not multiples of 4 are padded."""
        self._check_lost()
        self._check_live(buffer)
        view = _bytes_view(data)
        if offset % 4:
            raise ValueError(f"write offset must be a multiple of 4 bytes, got {offset}")
        _check_range(buffer, offset, len(view))
        if len(view) % 4:
            view = memoryview(bytes(view) + bytes(4 - len(view) % 4))
            _check_range(buffer, offset, len(view))
        if len(view):
            self._backend.write_buffer(buffer.handle, offset, view)

    async def read(self, buffer, offset=0, size=None):
        """The bytes of `buffer` (or of a range of it) as a memoryview."""
        program = self.program()
        program.read(buffer, offset, size)
        try:
            (out,) = await program.run()
        finally:
            program.release()
        return out

    def allocated_bytes(self):
        """Bytes of every buffer alive on this device (created and not destroyed)."""
        return sum(b.size for b in self._buffers.values())

    def _check_size(self, size, usage, label):
        what = f"buffer {label!r}" if label else "buffer"
        limit = buffer_limit(self.limits, usage)
        if size > limit:
            raise BufferTooLargeError(
                f"{what} of {size:,} bytes exceeds this device's limit of {limit:,} bytes "
                f"for {usage} buffers ({self.info.vendor} {self.info.architecture or self.info.device})"
            )

    def _check_live(self, buffer):
        if not isinstance(buffer, Buffer):
            raise TypeError(f"expected a Buffer, got {type(buffer).__name__}")
        if buffer.device is not self:
            raise GPUError(f"{buffer!r} belongs to another device")
        if buffer.handle is None:
            raise GPUError(f"{buffer!r} was destroyed")

    def _forget_buffer(self, buffer):
        self._buffers.pop(buffer.id, None)
        self._bind_groups = {
            key: group for key, group in self._bind_groups.items() if buffer.id not in key[1]
        }

    # --- kernels ----------------------------------------------------------------------

    async def kernel(self, source, entry="main", constants=None):
        """Compile (once; later calls hit the cache) entry point `entry` of shaders/<source>.

        The file's //#include directives are expanded (py_engine/gpu/shaders.py); `constants`
        sets the `override` declarations of the file and of what it includes. A bad file raises
        ShaderCompileError with the file (the included one, when the mistake is there), its
        WGSL line and the compiler's message.
        """
        self._check_lost()
        constants = dict(constants or {})
        key = (source, entry, tuple(sorted(constants.items())))
        kernel = self._kernels.get(key)
        if kernel is None:
            text = shaders.specialize(shaders.load_source(source), constants, source)
            handle = await self._backend.create_pipeline(text, entry, source)
            kernel = self._kernels[key] = self._new_kernel(handle, source, entry, constants)
        return kernel

    async def kernel_from_source(self, text, entry="main", name="<inline wgsl>"):
        """Compile WGSL given as text (for tools and tests; kernels proper live in shaders/)."""
        self._check_lost()
        handle = await self._backend.create_pipeline(text, entry, name)
        return self._new_kernel(handle, name, entry, {})

    def _new_kernel(self, handle, source, entry, constants):
        kernel = Kernel(self, handle, source, entry, constants)
        self._next_id += 1
        kernel.id = self._next_id
        return kernel

    def _bind_group(self, kernel, buffers):
        key = (kernel.id, tuple(b.id for b in buffers))
        group = self._bind_groups.get(key)
        if group is None:
            group = self._backend.create_bind_group(kernel.handle, [b.handle for b in buffers])
            self._bind_groups[key] = group
        return group

    # --- running ----------------------------------------------------------------------

    def program(self, label=None):
        """A new, empty recorded program."""
        return Program(self, label)

    async def run(self, kernel, buffers, groups):
        """Dispatch one kernel now and wait for it to finish."""
        await self.program().dispatch(kernel, buffers, groups).run()
        await self.synchronize()

    async def synchronize(self):
        """Wait until every submitted command has finished on the GPU."""
        self._check_lost()
        await self._backend.synchronize()
        self._check_lost()

    # --- lifetime ---------------------------------------------------------------------

    @property
    def lost(self):
        """None while the device works, else the reason it was lost."""
        return self._backend.lost_reason()

    def _check_lost(self):
        reason = self._backend.lost_reason()
        if reason is not None:
            raise DeviceLostError(reason)

    def destroy(self):
        """Release the device; every later call raises DeviceLostError."""
        self._backend.destroy()


def _bytes_view(data):
    """A flat, contiguous byte view of any buffer-protocol object."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"expected a buffer object (bytes, array, ndarray), got {type(data).__name__}")
    if not view.contiguous:
        raise ValueError("data must be contiguous (C order)")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _check_range(buffer, offset, size):
    if offset < 0 or size < 0 or offset + size > buffer.size:
        raise ValueError(
            f"range [{offset}, {offset + size}) does not fit in {buffer!r} of {buffer.size} bytes"
        )


def _workgroup_counts(groups, limit):
    if isinstance(groups, int):
        groups = (groups,)
    groups = tuple(int(g) for g in groups) + (1,) * (3 - len(groups))
    if len(groups) != 3 or any(g < 0 for g in groups):
        raise ValueError(f"workgroup counts must be up to three non-negative ints, got {groups}")
    if any(g > limit for g in groups):
        raise ValueError(f"workgroup counts {groups} exceed this device's limit of {limit} per dimension")
    return groups


def groups_for(count, per_group):
    """How many workgroups of `per_group` threads cover `count` items."""
    return max(1, math.ceil(count / per_group))


def grid_groups(device, count, workgroup):
    """Workgroups for a grid-stride loop over `count` items: enough to cover them, within the
    device's per-dimension limit (the loop covers the rest)."""
    return min(groups_for(count, workgroup), device.limits["max_compute_workgroups_per_dimension"])


def row_groups(device, rows):
    """One workgroup per row; rows past the per-dimension limit spill into y."""
    limit = device.limits["max_compute_workgroups_per_dimension"]
    return (min(rows, limit), math.ceil(rows / limit))


def buffer_limit(limits, usage=STORAGE):
    """The largest buffer a kernel may bind as `usage` ("storage" or "uniform"), from a device's
    limits (a dict as Device.limits; a limit it lacks is none; None for no limits at all)."""
    if not limits:
        return None
    binding = "max_storage_buffer_binding_size" if usage == STORAGE else "max_uniform_buffer_binding_size"
    return min(limits.get(binding, math.inf), limits.get("max_buffer_size", math.inf))


def require_floats(buffer, count, name):
    """Raise ValueError naming `name` unless `buffer` holds `count` f32 values."""
    if buffer.size < 4 * count:
        raise ValueError(f"{name} holds {buffer.size} bytes; {4 * count} needed")


def open_backend_device(backend, info_dict, limits, features):
    """Wrap what a backend opened into a Device, warning about software adapters."""
    info = AdapterInfo(**info_dict)
    device = Device(backend, info, limits, features)
    if info.is_software:
        capped = (f"; its shaders stop looping after {info.loop_limit:,} iterations per invocation, "
                  "and work that would need more is refused") if info.loop_limit else ""
        warnings.warn(
            f"WebGPU adapter {info.vendor} {info.architecture or info.device} is a CPU "
            f"implementation: results are correct, speed is not representative{capped}",
            SoftwareAdapterWarning,
            stacklevel=3,
        )
    return device
