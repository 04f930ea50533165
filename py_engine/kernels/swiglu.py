"""SwiGLU (the Llama MLP's silu(gate) * up) on the GPU (shaders/swiglu.wgsl); NumPy reference:
py_engine/ops/swiglu.py.

    swiglu = await SwiGLUKernels.load(device)
    swiglu.forward(program, gate, up, out, n)                  # out = silu(gate) * up
    swiglu.backward(program, dout, gate, up, dgate, dup, n)

All buffers are flat f32 arrays of n elements (gate and up as gate_proj and up_proj produce
them, [tokens, intermediate]); the backward needs the forward's inputs, not its output.
"""

from . import KernelFamily
from ..gpu import require_floats

SOURCE = "swiglu.wgsl"
WORKGROUP = 256
ENTRIES = ("swiglu_forward", "swiglu_backward")


class SwiGLUKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    @classmethod
    async def load(cls, device, workgroup=WORKGROUP):
        constants = {"WORKGROUP": workgroup}
        family = cls(device, {e: await device.kernel(SOURCE, e, constants) for e in ENTRIES})
        family.WORKGROUP = workgroup
        return family

    def _check(self, n, **buffers):
        if n < 1:
            raise ValueError(f"swiglu needs n >= 1, got {n}")
        for name, buffer in buffers.items():
            require_floats(buffer, n, name)

    def forward(self, program, gate, up, out, n):
        self._check(n, gate=gate, up=up, out=out)
        params = self.device.uniform("I", n)
        return self._dispatch(program, "swiglu_forward", [gate, up, out, params], n)

    def backward(self, program, dout, gate, up, dgate, dup, n):
        self._check(n, dout=dout, gate=gate, up=up, dgate=dgate, dup=dup)
        params = self.device.uniform("I", n)
        return self._dispatch(program, "swiglu_backward", [gate, up, dgate, params, dout, dup], n)
