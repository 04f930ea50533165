"""Dropout on the GPU (shaders/dropout.wgsl); NumPy reference: py_engine/ops/dropout.py.

    drop = await DropoutKernels.load(device)
    step = drop.step_buffer()                          # one per training step program
    drop.forward(program, x, out, step, n, p=0.1, base=0)
    drop.backward(program, dout, dx, step, n, p=0.1, base=0)
    drop.noise(program, x, out, step, n, magnitude=0.01, base=0)     # NEFTune: x + noise
    ...
    step.write(pack_step(seed, offset))                # before each replay: a fresh mask

The mask is a pure function of (seed, offset + base + i) (the definition is in ops/dropout.py),
so the backward recomputes it: record it with the same step buffer, p and base as the forward.
Give each dropout layer its own `base` (e.g. the running total of the element counts of the
layers before it) so layers sharing a step buffer draw independent masks.

Step buffer layout (16 bytes, uniform): u32 seed, u32 offset, 8 bytes padding.
"""

import struct
from ..gpu import grid_groups

SOURCE = "dropout.wgsl"
MASK32 = 0xFFFFFFFF
STEP_BYTES = 16


def pack_step(seed, offset=0):
    """The bytes of a step buffer: seed and element offset, each taken mod 2^32."""
    return struct.pack("<IIII", seed & MASK32, offset & MASK32, 0, 0)


def threshold(p):
    """Random bits below this are dropped; P(keep) = 1 - p."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    return min(round(p * 2.0**32), MASK32)


def scale(p):
    """1 / (1 - p) rounded to f32, the factor kept values are multiplied by."""
    return struct.unpack("<f", struct.pack("<f", 1.0 / (1.0 - p)))[0]


class DropoutKernels:
    def __init__(self, device, forward, backward, noise, workgroup):
        self.device = device
        self._forward = forward
        self._backward = backward
        self._noise = noise
        self.workgroup = workgroup

    @classmethod
    async def load(cls, device, workgroup=256):
        constants = {"WORKGROUP": workgroup}
        forward = await device.kernel(SOURCE, "dropout_forward", constants)
        backward = await device.kernel(SOURCE, "dropout_backward", constants)
        noise = await device.kernel(SOURCE, "add_uniform_noise", constants)
        return cls(device, forward, backward, noise, workgroup)

    def step_buffer(self, seed=0, offset=0):
        """A uniform buffer holding (seed, offset); write pack_step(...) into it per step."""
        return self.device.buffer_from(pack_step(seed, offset), "uniform", "dropout step")

    def _dispatch(self, program, kernel, src, dst, per_step, n, p, base, factor=None):
        for buffer, name in ((src, "input"), (dst, "output")):
            if buffer.size < 4 * n:
                raise ValueError(f"dropout {name} holds {buffer.size} bytes; {4 * n} needed")
        params = self.device.uniform("IIIf", n, base & MASK32, threshold(p),
                                     scale(p) if factor is None else factor)
        program.dispatch(kernel, [src, dst, params, per_step],
                         grid_groups(self.device, n, self.workgroup))

    def forward(self, program, x, out, per_step, n, p, base=0):
        self._dispatch(program, self._forward, x, out, per_step, n, p, base)

    def backward(self, program, dout, dx, per_step, n, p, base=0):
        self._dispatch(program, self._backward, dout, dx, per_step, n, p, base)

    def noise(self, program, x, out, per_step, n, magnitude, base=0):
        """out = x + noise uniform in [-magnitude, magnitude) (ops/dropout.py uniform_noise)."""
        self._dispatch(program, self._noise, x, out, per_step, n, 0.0, base, factor=magnitude)
