"""Browser backend: navigator.gpu through Pyodide's FFI.

Per-dispatch work runs in the JS helper web/src/webgpu_helper.mjs (registered as the JS module
`py_engine_webgpu` by the page's boot script): Python records a program once and replays it with
one FFI call per run, and uploads are read in place from the wasm heap.
"""

from .errors import DeviceLostError, GPUError, NoWebGPUError
from .shaders import compile_error


def _snake(name):
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


class BrowserBackend:
    name = "browser"

    async def open(self, power_preference="high-performance"):
        try:
            import py_engine_webgpu
            from pyodide.ffi import to_js
        except ImportError as e:
            raise NoWebGPUError(
                "the browser backend needs Pyodide with the py_engine_webgpu JS module registered "
                "(web/src/boot.mjs does this)"
            ) from e
        self._js = py_engine_webgpu
        self._to_js = to_js
        opened = await self._js.open(power_preference)
        error = getattr(opened, "error", None)
        if error:
            raise NoWebGPUError(error)
        self._device = opened.device
        info = opened.info
        adapter_info = dict(
            vendor=info.vendor,
            architecture=info.architecture,
            device=info.device,
            description=info.description,
            backend="browser-webgpu",
            is_fallback=bool(info.isFallback),
        )
        limits = {_snake(k): v for k, v in opened.limits.to_py().items()}
        return adapter_info, limits, set(opened.features.to_py())

    # --- buffers ---

    def create_buffer(self, size, usage, label):
        return self._js.createBuffer(self._device, size, usage, label or "")

    def write_buffer(self, handle, offset, view):
        self._js.writeBuffer(self._device, handle, offset, view)

    def destroy_buffer(self, handle):
        handle.destroy()

    # --- pipelines ---

    async def create_pipeline(self, source, entry, source_name):
        made = await self._lost_under(self._js.createPipeline(self._device, source, entry,
                                                              source_name))
        error = getattr(made, "error", None)
        if error:
            # a compile the GPU process's crash cut short reports the lost device as its error
            # ("A valid external Instance reference no longer exists."): the device's loss, not
            # the source's (a real mistake in the source waits up to lostSoon's 2 s to be told)
            if await self._js.lostSoon(self._device):
                raise DeviceLostError(self.lost_reason())
            line = getattr(made, "line", None)
            column = getattr(made, "column", None)
            raise compile_error(source_name, source, error, line, column)
        return made.pipeline

    def create_bind_group(self, pipeline, handles):
        return self._js.createBindGroup(self._device, pipeline, self._to_js(handles))

    # --- programs ---

    def encode(self, ops, reads):
        return self._js.record(self._device, self._to_js(ops), self._to_js(reads))

    def submit(self, encoded):
        self._js.replay(encoded)
        self._raise_reported()

    async def run(self, encoded, sizes):
        await self._lost_under(self._js.run(encoded))
        self._raise_reported()
        results = []
        for index, size in enumerate(sizes):
            out = bytearray(size)
            self._js.take(encoded, index, memoryview(out))
            results.append(memoryview(out))
        return results

    def release(self, encoded):
        self._js.release(encoded)

    async def synchronize(self):
        await self._lost_under(self._js.synchronize(self._device))
        self._raise_reported()

    async def _lost_under(self, waiting):
        """Await `waiting` (a wait on the GPU) and return what it gives; a wait that fails
        because the device went away (a mapAsync aborted, a compile's getCompilationInfo
        "Instance dropped": the wait can fail a moment before device.lost settles) raises
        DeviceLostError, whatever the browser's own error said."""
        try:
            return await waiting
        except Exception as e:
            if await self._js.lostSoon(self._device):
                raise DeviceLostError(self.lost_reason()) from e
            raise

    def _raise_reported(self):
        error = self._js.takeError(self._device)
        if error is not None:
            raise GPUError(f"WebGPU validation error: {error}")

    # --- lifetime ---

    def lost_reason(self):
        return self._js.lostReason(self._device)

    def destroy(self):
        self._js.destroy(self._device)
