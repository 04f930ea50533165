"""GPU LoRA linear layer, composed from the matmul family (no shader of its own).
NumPy reference: py_engine/ops/lora_linear.py.

    y = x . W^T + b + scaling * (xd . A^T) . B^T          scaling = lora_alpha / r

W [out, in] (frozen; f32, or packed f16 with w_half=True, see kernels.matmul.pack_half),
b [out] or None, A = lora_A.weight [r, in], B = lora_B.weight [out, r] as PEFT stores them.
xd is x after LoRA dropout; pass x itself when lora_dropout is 0.

    lora = await LoraLinearKernels.load(device)            # or LoraLinearKernels(matmul)
    shape = dict(rows=M, in_features=K, out_features=N, r=R, scaling=alpha / R)
    lora.forward(program, x, xd, w, b, lora_a, lora_b, y, h, **shape)      # h [M, r] saved
    lora.backward(program, dy, xd, w, lora_a, lora_b, h, dh, d_lora_a, d_lora_b, dx, **shape)

Backward: d lora_B = scaling * dy^T . h, dh = scaling * dy . B (scratch [M, r]),
d lora_A = dh^T . xd, and the input gradient dx = dy . W + dh . A. With dxd given, the
adapter's part dh . A (the gradient with respect to xd) goes there instead, so the caller can
route it through dropout's backward and add it to dx. accumulate=True adds into the adapter's
weight gradients (gradient accumulation); dx=None skips the input gradient.
"""

from .matmul import MatmulKernels


class LoraLinearKernels:
    def __init__(self, matmul, quantized=None):
        self.matmul = matmul
        self.quantized = quantized      # QuantizedLinearKernels, for int8/int4 base weights

    @classmethod
    async def load(cls, device, matmul=None, variant=None, quantized=None):
        return cls(matmul or await MatmulKernels.load(device, variant), quantized)

    def _base(self, program, x, w, y, rows, in_features, out_features, bias, w_half, w_quant):
        """y = x W^T + bias with W stored f32, f16 or quantized (w_quant)."""
        if w_quant is not None:
            return self.quantized.linear(program, x, w_quant, y, rows, bias=bias)
        return self.matmul.linear(program, x, w, y, rows, in_features, out_features, bias=bias,
                                  w_half=w_half)

    def _base_grad_input(self, program, dy, w, dx, rows, in_features, out_features, w_half, w_quant):
        if w_quant is not None:
            return self.quantized.linear_grad_input(program, dy, w_quant, dx, rows)
        return self.matmul.linear_grad_input(program, dy, w, dx, rows, in_features, out_features,
                                             w_half=w_half)

    def forward(self, program, x, xd, w, bias, lora_a, lora_b, y, h, *, rows, in_features,
                out_features, r, scaling, w_half=False, w_quant=None):
        mm = self.matmul
        mm.linear(program, xd, lora_a, h, rows, in_features, r)
        self._base(program, x, w, y, rows, in_features, out_features, bias, w_half, w_quant)
        return mm.linear(program, h, lora_b, y, rows, r, out_features, alpha=scaling, beta=1.0)

    def backward(self, program, dy, xd, w, lora_a, lora_b, h, dh, d_lora_a, d_lora_b, dx, *,
                 rows, in_features, out_features, r, scaling, dxd=None, accumulate=False,
                 w_half=False, w_quant=None):
        mm = self.matmul
        beta = 1.0 if accumulate else 0.0
        mm.linear_grad_weight(program, dy, h, d_lora_b, rows, r, out_features, alpha=scaling,
                              beta=beta)
        mm.linear_grad_input(program, dy, lora_b, dh, rows, r, out_features, alpha=scaling)
        mm.linear_grad_weight(program, dh, xd, d_lora_a, rows, in_features, r, beta=beta)
        if dxd is not None:
            mm.linear_grad_input(program, dh, lora_a, dxd, rows, in_features, r)
        if dx is not None:
            self._base_grad_input(program, dy, w, dx, rows, in_features, out_features, w_half, w_quant)
            if dxd is None:
                mm.linear_grad_input(program, dh, lora_a, dx, rows, in_features, r, beta=1.0)
        return program
