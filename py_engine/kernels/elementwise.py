"""Elementwise kernels on the GPU (shaders/elementwise.wgsl): out = a + b, out = alpha*a + b,
out = alpha*a.

    ew = await ElementwiseKernels.load(device)
    ew.add(program, a, b, out, n)
    ew.scaled_add(program, a, b, out, n, alpha)
    ew.scale(program, a, out, n, alpha)
"""

from ..gpu import grid_groups

SOURCE = "elementwise.wgsl"


class ElementwiseKernels:
    def __init__(self, device, add, scaled_add, workgroup, scale=None):
        self.device = device
        self._add = add
        self._scaled_add = scaled_add
        self._scale = scale
        self.workgroup = workgroup

    @classmethod
    async def load(cls, device, workgroup=256):
        constants = {"WORKGROUP": workgroup}
        return cls(device, await device.kernel(SOURCE, "add", constants),
                   await device.kernel(SOURCE, "scaled_add", constants), workgroup,
                   await device.kernel(SOURCE, "scale", constants))

    def _dispatch(self, program, kernel, a, b, out, n, alpha):
        buffers = [a, out] if b is None else [a, b, out]
        for buffer in buffers:
            if buffer.size < 4 * n:
                raise ValueError(f"{buffer!r} holds fewer than {n} floats")
        program.dispatch(kernel, buffers + [self.device.uniform("If", n, alpha)],
                         grid_groups(self.device, n, self.workgroup))

    def add(self, program, a, b, out, n):
        self._dispatch(program, self._add, a, b, out, n, 1.0)

    def scaled_add(self, program, a, b, out, n, alpha):
        self._dispatch(program, self._scaled_add, a, b, out, n, alpha)

    def scale(self, program, a, out, n, alpha):
        self._dispatch(program, self._scale, a, None, out, n, alpha)
