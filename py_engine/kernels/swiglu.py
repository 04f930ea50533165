"""SwiGLU (the Llama MLP's silu(gate) * up) and GeGLU (Gemma's gelu_tanh(gate) * up) on the GPU
(shaders/swiglu.wgsl); NumPy reference: py_engine/ops/swiglu.py.

    swiglu = await SwiGLUKernels.load(device)
    swiglu.forward(program, gate, up, out, n)                  # out = silu(gate) * up
    swiglu.backward(program, dout, gate, up, dgate, dup, n)
    swiglu.forward(program, gate, up, out, n, activation="gelu_tanh")   # GeGLU (Gemma)
    swiglu.forward(program, gate, up, out, n, activation="gelu")        # exact GeGLU (ModernBERT)

All buffers are flat f32 arrays of n elements (gate and up as gate_proj and up_proj produce
them, [tokens, intermediate]); the backward needs the forward's inputs, not its output.
"""

from . import KernelFamily
from ..gpu import require_floats

SOURCE = "swiglu.wgsl"
WORKGROUP = 256
ENTRIES = ("swiglu_forward", "swiglu_backward")
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")     # params.activation: the index in this tuple


class SwiGLUKernels(KernelFamily):
    SOURCE, ENTRIES, WORKGROUP = SOURCE, ENTRIES, WORKGROUP

    def _params(self, n, activation, **buffers):
        if n < 1:
            raise ValueError(f"swiglu needs n >= 1, got {n}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        for name, buffer in buffers.items():
            require_floats(buffer, n, name)
        return self.device.uniform("II", n, ACTIVATIONS.index(activation))

    def forward(self, program, gate, up, out, n, activation="silu"):
        params = self._params(n, activation, gate=gate, up=up, out=out)
        return self._dispatch(program, "swiglu_forward", [gate, up, out, params], n)

    def backward(self, program, dout, gate, up, dgate, dup, n, activation="silu"):
        params = self._params(n, activation, dout=dout, gate=gate, up=up, dgate=dgate, dup=dup)
        return self._dispatch(program, "swiglu_backward", [gate, up, dgate, params, dout, dup], n)
