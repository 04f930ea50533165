"""GELU (exact erf form, or GPT-2's tanh form with approximate="tanh") on the GPU
(shaders/gelu.wgsl); NumPy reference: py_engine/ops/gelu.py.

    gelu = await GeluKernels.load(device)
    gelu.forward(program, x, out, n)            # out = gelu(x)
    gelu.backward(program, dout, x, dx, n)      # dx = dout * gelu'(x)
    gelu.forward(program, x, out, n, approximate="tanh")

All buffers are flat f32 arrays of n elements; the backward needs the forward's input x.
"""

from . import KernelFamily
from ..gpu import require_floats

SOURCE = "gelu.wgsl"


class GeluKernels(KernelFamily):
    SOURCE = SOURCE
    ENTRIES = ("gelu_forward", "gelu_backward", "erf_approximation", "gelu_tanh_forward",
               "gelu_tanh_backward")

    def _elementwise(self, program, entry, buffers, n):
        for buffer, name in zip(buffers, ("x", "out", "dout")):
            require_floats(buffer, n, name)
        params = self.device.uniform("I", n)
        self._dispatch(program, entry, buffers[:2] + [params] + buffers[2:], n)

    def forward(self, program, x, out, n, approximate="none"):
        self._elementwise(program, _entry("gelu_forward", approximate), [x, out], n)

    def backward(self, program, dout, x, dx, n, approximate="none"):
        self._elementwise(program, _entry("gelu_backward", approximate), [x, dx, dout], n)

    def erf(self, program, x, out, n):
        """out = erf(x) with the approximation the GELU kernels use (to measure it)."""
        self._elementwise(program, "erf_approximation", [x, out], n)


def _entry(name, approximate):
    """gelu_forward / gelu_backward, or their tanh forms ("gelu_tanh_...")."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return name.replace("gelu_", "gelu_tanh_") if approximate == "tanh" else name
