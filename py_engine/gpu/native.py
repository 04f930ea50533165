"""Native backend: wgpu-py (wgpu-native over Vulkan, Metal or D3D12).

Used on a desktop, in the host test suite (Mesa lavapipe) and for timing on a real GPU.
"""

import os

from .errors import GPUError, NoWebGPUError
from .shaders import compile_error

# WebGPU limits the engine raises to the adapter's maximum when it opens a device.
RAISED_LIMITS = (
    "max_buffer_size",
    "max_storage_buffer_binding_size",
    "max_compute_workgroup_storage_size",
    "max_compute_invocations_per_workgroup",
    "max_compute_workgroup_size_x",
    "max_compute_workgroup_size_y",
    "max_compute_workgroup_size_z",
    "max_compute_workgroups_per_dimension",
    "max_storage_buffers_per_shader_stage",
    "max_uniform_buffer_binding_size",
)


def _snake(name):
    return name.replace("-", "_")


class NativeBackend:
    name = "native"

    def __init__(self):
        self._lost = None
        self._fence = self._fence_src = None

    async def open(self, power_preference="high-performance"):
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        try:
            import wgpu
        except ImportError as e:
            raise NoWebGPUError(
                "the native backend needs wgpu-py: pip install 'py-engine[native]'"
            ) from e
        self._wgpu = wgpu
        try:
            adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
        except Exception as e:  # wgpu-native raises when no Vulkan/Metal/D3D12 driver exists
            raise NoWebGPUError(
                f"no native WebGPU adapter: {e}. On Debian install a Vulkan driver "
                "(apt-get install mesa-vulkan-drivers for the CPU one)"
            ) from e
        if adapter is None:
            raise NoWebGPUError("no native WebGPU adapter found")
        available = {_snake(k): v for k, v in adapter.limits.items()}
        wanted = {}
        for key, value in adapter.limits.items():
            if _snake(key) in RAISED_LIMITS:
                wanted[key] = value
        self._device = adapter.request_device_sync(required_limits=wanted)
        limits = {_snake(k): v for k, v in self._device.limits.items()}
        for key in RAISED_LIMITS:
            limits.setdefault(key, available.get(key))
        info = adapter.info
        adapter_info = dict(
            vendor=info.get("vendor", ""),
            architecture=info.get("architecture", ""),
            device=info.get("device", ""),
            description=info.get("description", ""),
            backend=f"native-{info.get('backend_type', '?').lower()}",
            is_fallback=info.get("adapter_type", "").upper() == "CPU",
        )
        return adapter_info, limits, set(self._device.features)

    # --- buffers ---

    def create_buffer(self, size, usage, label):
        u = self._wgpu.BufferUsage
        flags = (u.STORAGE | u.COPY_SRC | u.COPY_DST) if usage == "storage" else (u.UNIFORM | u.COPY_DST)
        return self._device.create_buffer(size=size, usage=flags, label=label or "")

    def write_buffer(self, handle, offset, view):
        self._device.queue.write_buffer(handle, offset, view)

    def destroy_buffer(self, handle):
        handle.destroy()

    # --- pipelines ---

    async def create_pipeline(self, source, entry, source_name):
        try:
            module = self._device.create_shader_module(code=source, label=source_name)
            return self._device.create_compute_pipeline(
                layout="auto",
                compute={"module": module, "entry_point": entry},
                label=f"{source_name}:{entry}",
            )
        except self._wgpu.GPUValidationError as e:
            raise compile_error(source_name, source, str(e)) from None

    def create_bind_group(self, pipeline, handles):
        layout = pipeline.get_bind_group_layout(0)
        entries = [
            {"binding": i, "resource": {"buffer": h, "offset": 0, "size": h.size}}
            for i, h in enumerate(handles)
        ]
        try:
            return self._device.create_bind_group(layout=layout, entries=entries)
        except self._wgpu.GPUValidationError as e:
            raise GPUError(f"buffers do not match the kernel's bindings: {e}") from None

    # --- programs ---

    def encode(self, ops, reads):
        u = self._wgpu.BufferUsage
        staging = [
            self._device.create_buffer(size=size, usage=u.MAP_READ | u.COPY_DST) for _, _, size in reads
        ]
        return ops, reads, staging

    def _command_buffer(self, encoded):
        ops, reads, staging = encoded
        encoder = self._device.create_command_encoder()
        compute = None
        for op in ops:
            if op[0] == "dispatch":
                if compute is None:
                    compute = encoder.begin_compute_pass()
                _, pipeline, bind_group, (x, y, z) = op
                compute.set_pipeline(pipeline)
                compute.set_bind_group(0, bind_group)
                compute.dispatch_workgroups(x, y, z)
            else:
                if compute is not None:
                    compute.end()
                    compute = None
                _, src, src_offset, dst, dst_offset, size = op
                encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size)
        if compute is not None:
            compute.end()
        for (src, offset, size), target in zip(reads, staging):
            encoder.copy_buffer_to_buffer(src, offset, target, 0, size)
        return encoder.finish()

    def submit(self, encoded):
        self._device.queue.submit([self._command_buffer(encoded)])

    async def run(self, encoded, sizes):
        self.submit(encoded)
        results = []
        for target in encoded[2]:
            target.map_sync(self._wgpu.MapMode.READ)
            results.append(target.read_mapped(copy=True))
            target.unmap()
        return results

    def release(self, encoded):
        for target in encoded[2]:
            target.destroy()
        encoded[2].clear()

    async def synchronize(self):
        # queue.on_submitted_work_done_sync() fails in wgpu-py 0.32 (a callback signature
        # mismatch with wgpu-native), so wait the portable way: a map completes only after all
        # work submitted before it.
        if self._fence is None:
            u = self._wgpu.BufferUsage
            self._fence = self._device.create_buffer(size=4, usage=u.MAP_READ | u.COPY_DST)
        self._device.queue.write_buffer(self._fence_source(), 0, b"\0\0\0\0")
        encoder = self._device.create_command_encoder()
        encoder.copy_buffer_to_buffer(self._fence_source(), 0, self._fence, 0, 4)
        self._device.queue.submit([encoder.finish()])
        self._fence.map_sync(self._wgpu.MapMode.READ)
        self._fence.unmap()

    def _fence_source(self):
        if self._fence_src is None:
            u = self._wgpu.BufferUsage
            self._fence_src = self._device.create_buffer(size=4, usage=u.COPY_SRC | u.COPY_DST)
        return self._fence_src

    # --- lifetime ---

    def lost_reason(self):
        return self._lost

    def destroy(self):
        if self._lost is None:
            self._lost = "destroyed"
            self._device.destroy()
