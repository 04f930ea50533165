"""One small GPU compute API in WebGPU's object model, with a native and a browser backend.

    from py_engine.gpu import open_device
    device = await open_device()            # backend chosen by platform, or backend="native"
"""

import sys

from .device import (
    STORAGE,
    UNIFORM,
    AdapterInfo,
    Buffer,
    Device,
    Kernel,
    Program,
    buffer_limit,
    grid_groups,
    groups_for,
    require_floats,
    row_groups,
)
from .errors import (
    BufferTooLargeError,
    DeviceLostError,
    GPUError,
    NoWebGPUError,
    ShaderCompileError,
    ShaderIncludeError,
    SoftwareAdapterWarning,
)
from .variable import Variable, value_of

BACKENDS = ("native", "browser")


def default_backend():
    """"browser" under Pyodide, "native" everywhere else."""
    return "browser" if sys.platform == "emscripten" else "native"


async def open_device(backend=None, power_preference="high-performance"):
    """Open a GPU device on `backend` ("native", "browser"; default: by platform)."""
    from .device import open_backend_device

    backend = backend or default_backend()
    if backend == "native":
        from .native import NativeBackend as Backend
    elif backend == "browser":
        from .browser import BrowserBackend as Backend
    else:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    impl = Backend()
    info, limits, features = await impl.open(power_preference)
    return open_backend_device(impl, info, limits, features)


def run_sync(coroutine):
    """Run a coroutine of this API to completion without an event loop.

    Natively nothing in the API truly suspends (wgpu-py waits synchronously), so its coroutines
    can be driven directly; this works where asyncio.run() cannot, inside an already running
    loop (Jupyter, Playwright's sync API). In the browser, use `await`.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine waited on an event loop: run it with `await` instead")


__all__ = [
    "AdapterInfo", "Buffer", "BufferTooLargeError", "Device", "DeviceLostError", "GPUError",
    "Kernel", "NoWebGPUError", "Program", "STORAGE", "ShaderCompileError", "ShaderIncludeError",
    "SoftwareAdapterWarning", "UNIFORM", "Variable", "buffer_limit", "default_backend", "grid_groups",
    "groups_for",
    "open_device", "require_floats", "row_groups", "run_sync", "value_of",
]
